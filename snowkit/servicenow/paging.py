"""Page planning for Table API list queries: keyset by default, offset on request.

Why not follow ``Link: rel="next"`` or ``sysparm_offset`` like pysnc/pysnow? Offset paging over a
table that others write to skips rows (a delete before the cursor shifts everything left) or
repeats them (an insert before the cursor shifts everything right), and without a unique
``ORDERBY`` the server may even return the same row on two pages (PySNC#96).

Keyset paging orders by ``sys_id`` (unique, immutable) and asks each next page for
``sys_id > <last sys_id seen>``. Every record that exists for the whole scan is returned exactly
once, whatever is inserted or deleted meanwhile; records inserted during the scan appear iff
their sys_id sorts after the cursor.

When does a scan end? Not at a short page alone: a real instance applies ``sysparm_limit``
*before* ACL filtering, so a page can come back short (rows hidden from this user) with more
rows after it; ending there made the loader miss records and create duplicates. So each list
request asks for the count (snowkit does not send ``sysparm_no_count``, which would drop
``X-Total-Count``: the server's ``count(*)`` is cheaper than a round trip per scan) and a
page ends the scan only when that count says nothing else matches (keyset: the count of rows
after the cursor is no more than this page returned; offset: no more than all pages
returned). An empty page ends it unless the count says rows match beyond it: ACLs hid the
whole window (a keyset cursor cannot move past rows it never saw), so the next request steps
over it (``sysparm_offset``, with the same cursor in keyset mode), bounded by the
count. Without the header (a proxy stripped it) a short page proves nothing, so the scan goes
on to an empty page: one more request. On the embedded instance, whose
count matches what it returns, the last page still ends the scan by itself.

A server that ignores the cursor or the offset would make the scan loop forever: a page that
does not move the cursor, or repeats the previous page, stops it with an error at the second
request.

Offset paging is kept for callers who need another sort order (``order_by`` other than
``sys_id``); its result is only stable on a quiet table, and it still appends ``ORDERBYsys_id``
as a tie-breaker so equal sort keys page deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from snowkit.ops.errors import OperationalError
from snowkit.servicenow.query import plain_value

KEY_FIELD = "sys_id"


class PagingMode(StrEnum):
    """``keyset`` (default: stable while others write) or ``offset`` (any order, quiet tables)."""

    KEYSET = "keyset"
    OFFSET = "offset"


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What to ask for next: the encoded query, the page size and (offset mode) the offset."""

    query: str
    limit: int
    offset: int = 0


def split_groups(encoded: str) -> tuple[list[str], list[str]]:
    """Split a raw encoded query into its ``^NQ`` condition groups and its ORDERBY clauses."""
    groups: list[str] = []
    order: list[str] = []
    for group in encoded.split("^NQ") if encoded else []:
        conds = []
        for part in group.split("^"):
            if part.startswith("ORDERBY"):
                order.append(part)
            elif part and part != "EQ":
                conds.append(part)
        # re-join keeping ^OR joins (split removed the '^' only)
        text = "^".join(conds)
        if text:
            groups.append(text)
    return groups, order


def order_of(encoded: str) -> list[tuple[str, bool]]:
    """The ``(field, descending)`` ORDERBY clauses of a raw encoded query, in order."""
    _, clauses = split_groups(encoded)
    out = []
    for clause in clauses:
        if clause.startswith("ORDERBYDESC"):
            out.append((clause[len("ORDERBYDESC") :], True))
        else:
            out.append((clause[len("ORDERBY") :], False))
    return out


def choose_mode(ordering: list[tuple[str, bool]], order_field: str, descending: bool) -> PagingMode:
    """Keyset whenever the requested order is ascending sys_id (the only order it supports)."""
    keyset = order_field == KEY_FIELD and not descending and ordering in ([], [(KEY_FIELD, False)])
    return PagingMode.KEYSET if keyset else PagingMode.OFFSET


def keyset_query(encoded: str, after: str | None) -> str:
    """``encoded`` restricted to ``sys_id > after`` in every ``^NQ`` group, ordered by sys_id.

    Existing ORDERBY clauses are dropped: keyset paging is only correct in sys_id order.
    """
    groups, _ = split_groups(encoded)
    cursor = f"{KEY_FIELD}>{after}" if after else ""
    if not groups:
        groups = [cursor] if cursor else []
    elif cursor:
        groups = [f"{g}^{cursor}" for g in groups]
    body = "^NQ".join(groups)
    return f"{body}^ORDERBY{KEY_FIELD}" if body else f"ORDERBY{KEY_FIELD}"


def offset_query(encoded: str, order_by: str, descending: bool = False) -> str:
    """``encoded`` ordered by ``order_by`` then sys_id (a unique tie-breaker)."""
    groups, order = split_groups(encoded)
    clauses = order or [f"ORDERBYDESC{order_by}" if descending else f"ORDERBY{order_by}"]
    if f"ORDERBY{KEY_FIELD}" not in clauses:
        clauses.append(f"ORDERBY{KEY_FIELD}")
    return "^".join(["^NQ".join(groups), *clauses]) if groups else "^".join(clauses)


class Pager:
    """Decides each next page from the previous one (pure; the client does the I/O).

    ``limit`` caps the total number of records; ``page_size`` is clamped to ``[1, 10000]``
    (10000 is the Table API's own default and maximum worth asking for).
    """

    def __init__(
        self,
        encoded: str,
        page_size: int,
        *,
        mode: PagingMode = PagingMode.KEYSET,
        order_by: str = KEY_FIELD,
        descending: bool = False,
        limit: int | None = None,
        table: str | None = None,
    ) -> None:
        self.encoded = encoded
        self.table = table
        self.page_size = max(1, min(int(page_size), 10_000))
        self.mode = mode
        self.order_by = order_by
        self.descending = descending
        self.limit = limit
        self.returned = 0
        self._after: str | None = None
        self._offset = 0
        self._seen = 0  #: rows the server returned so far (before client-side filters)
        self._skip = 0  #: keyset: rows after the cursor stepped over (hidden by ACLs)
        self._previous_keys: frozenset[str] = frozenset()
        self._done = limit is not None and limit <= 0

    @property
    def done(self) -> bool:
        return self._done

    def next_request(self) -> PageRequest | None:
        """The next page to ask for, or None when the scan is complete."""
        if self._done:
            return None
        size = self.page_size
        if self.limit is not None:
            size = min(size, self.limit - self.returned)
        if self.mode is PagingMode.KEYSET:  # offset > 0 only to step over a hidden window
            return PageRequest(keyset_query(self.encoded, self._after), size, self._skip)
        return PageRequest(
            offset_query(self.encoded, self.order_by, self.descending), size, self._offset
        )

    def advance(
        self, request: PageRequest, rows: list[dict[str, Any]], total: int | None = None
    ) -> None:
        """Record a page's rows (as returned by the server, before any client-side filter) and
        ``total``, the page's ``X-Total-Count`` (None when absent): see the module docstring.

        Offset mode moves the offset by the page size asked for, not by the rows returned:
        the instance cut the page before its ACLs hid rows, so the next window starts there.
        """
        if not rows:
            # an empty page ends the scan unless the count says rows match beyond this window
            # (ACLs hid a whole page): step over it, bounded by the count
            window_end = request.offset + request.limit
            if total is None or total <= window_end:
                self._done = True
            elif self.mode is PagingMode.KEYSET:
                self._skip = window_end
            else:
                self._offset = window_end
            return
        self._skip = 0
        keys = [plain_value(row.get(KEY_FIELD)) for row in rows]
        if self.mode is PagingMode.KEYSET and not keys[-1]:
            raise ValueError("keyset paging needs sys_id in every row (add it to fields)")
        self._check_progress(keys)
        self._seen += len(rows)
        self._after = keys[-1] or self._after
        self._offset = request.offset + max(request.limit, len(rows))
        if self.mode is PagingMode.KEYSET:  # the count is of rows after the new cursor
            total = None if total is None else max(0, total - request.offset)
        if total is None:
            return  # a short page proves nothing: go on to an empty page
        matched_beyond = total > (len(rows) if self.mode is PagingMode.KEYSET else self._seen)
        if not matched_beyond:
            self._done = True

    def _check_progress(self, keys: list[str]) -> None:
        """Stop a scan the server does not move forward (it ignores the cursor or offset)."""
        stuck = (
            self.mode is PagingMode.KEYSET and self._after is not None and keys[-1] <= self._after
        )
        if all(keys) and self._previous_keys.issuperset(keys):
            stuck = True
        self._previous_keys = frozenset(k for k in keys if k)
        if not stuck:
            return
        ignored = "sys_id cursor" if self.mode is PagingMode.KEYSET else "sysparm_offset"
        raise OperationalError(
            f"paging {self.table or 'the table'} made no progress: the instance answered the "
            f"next page with rows already returned (it ignored the {ignored}); stopped instead "
            "of looping",
            operation="query",
            details={"table": self.table, "paging": self.mode.value, "rows_seen": self._seen},
            guidance=(
                "Something between snowkit and the instance (a proxy or a scripted REST "
                "override) rewrites list queries. Check the instance URL; meanwhile query "
                "with paging='offset' (or 'keyset' if offset was in use), or a page_size "
                "larger than the result."
            ),
        )

    def count_returned(self, n: int) -> None:
        """Count records handed to the caller (after client-side filters) against ``limit``."""
        self.returned += n
        if self.limit is not None and self.returned >= self.limit:
            self._done = True
