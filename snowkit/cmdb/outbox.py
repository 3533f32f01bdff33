"""The durable outbox: CMDB writes queued while the instance could not be reached.

When the instance is down (or the circuit breaker is open) a load must not lose its writes, nor
block forever. The sync engine appends the writes it could not send here, in order, and the
run ends "queued". ``Outbox.replay`` sends them later, in the same order, idempotently: a create
first looks its record up by ``u_unifi_source_id`` so a write that did land is never duplicated.

What the entries are: one per record write (``create`` / ``update``, keyed by source id) plus
one per relationship (``relate``, keyed by parent, child and type). A run that cannot read the
CMDB at all queues every record as a create (an upsert by source id) and every relationship, so
a load of 37 records with 43 relationships queues 80 entries; a pair of CIs may be linked by two
types (``Connects to`` and ``Depends on``), each its own entry. ``snowkit outbox show`` prints
the counts per operation and table (``Outbox.breakdown``).

One pending entry per intent: the queue is keyed (see ``intent_key``), so a run that queues a
write already waiting (every load retried during a long outage queues the same writes again)
replaces the older entry rather than adding one. The newer entry takes the newer position, so
the queue keeps the dependency order of the latest run; an update replaces a waiting update
(latest payload wins), a create or update over a waiting create stays a create (the fields
merged), and the earliest before-image of each field is kept for rollback.

We use SQLite (stdlib, one file, transactional appends, survives a crash) rather than a
message-queue library: the queue is tiny, local and single-writer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from snowkit import paths
from snowkit.cmdb.fields import SOURCE_ID_FIELD, as_str
from snowkit.cmdb.local_db import open_store
from snowkit.cmdb.plan import LOCATION_TABLE
from snowkit.cmdb.relationships import REL_TABLE, RelTypeCache, find_link
from snowkit.ops.redaction import redact_text
from snowkit.servicenow.query import Query

#: Operations an entry can hold.
OP_CREATE = "create"  # upsert by source id: look up first, create only when absent
OP_UPDATE = "update"  # patch a known sys_id (or the record found by source id)
OP_DELETE = "delete"
OP_RELATE = "relate"  # a cmdb_rel_ci link between two source ids

STATUS_PENDING = "pending"
STATUS_DONE = "done"
STATUS_FAILED = "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    op TEXT NOT NULL,
    table_name TEXT NOT NULL,
    source_id TEXT,
    sys_id TEXT,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TEXT NOT NULL,
    done_at TEXT,
    instance TEXT
);
CREATE INDEX IF NOT EXISTS outbox_status ON outbox(status, seq);
"""

#: Errors that mean "the instance cannot be reached now": replay stops and keeps the rest.
_UNREACHABLE_NAMES = frozenset(
    {
        "NetworkError",
        "CircuitOpenError",
        "HibernatingInstanceError",
        "DeadlineExceededError",
    }
)


def is_unreachable_error(exc: BaseException) -> bool:
    """True when the instance is down or shielded by the breaker: queue the write, don't fail.

    A rate-limit window closed for longer than snowkit waits (the non-retryable
    ``RateLimitError``) counts too: the instance takes no request until it resets, so the
    writes wait in the outbox; a run that met it mid-way had failed, its landed writes
    uncounted in the report. A 429 whose retries were used up within the cap is not: the
    window reopens soon, and queueing the rest of the run had stopped loads (the chaos drill)
    that a rerun finishes."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _UNREACHABLE_NAMES:
        return True
    context = getattr(exc, "context", None)
    return "RateLimitError" in names and getattr(context, "retryable", True) is False


#: Errors that concern every write, not the one entry: replay stops and keeps the rest (a
#: password rotated during the outage had failed the whole queue for good, entry by entry).
_WHOLE_QUEUE_NAMES = frozenset(
    {
        "AuthenticationError",  # 401, 403, no credentials: fix them, replay again
        "RateLimitError",
        "TransientServerError",
        "AmbiguousWriteError",  # may have landed: the next replay looks it up first
        "RetryBudgetExhaustedError",
    }
)


def stops_the_replay(exc: BaseException) -> str | None:
    """Why ``exc`` stops an outbox replay with the rest kept queued; None when it concerns
    only the entry being sent (which is then marked failed)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _UNREACHABLE_NAMES:
        return f"instance unreachable ({type(exc).__name__})"
    text = redact_text(str(exc))
    if names & _WHOLE_QUEUE_NAMES:
        return f"{type(exc).__name__}: {text}"[:300]
    status = getattr(getattr(exc, "context", None), "http_status", None)
    if status in (401, 403, 429) or (isinstance(status, int) and status >= 500):
        return f"HTTP {status}: {text}"[:300]
    return None


class OutboxClient(Protocol):
    """The part of ServiceNowAPIClient replay needs."""

    def query(
        self, table: str, query: Any = "", fields: Any = None, **kw: Any
    ) -> Iterator[dict]: ...

    def create(self, table: str, values: dict, *, source_id: str | None = None) -> dict: ...

    def update(self, table: str, sys_id: str, values: dict, *, before: Any = None) -> dict: ...

    def delete(self, table: str, sys_id: str, *, before: Any = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One queued write. ``payload`` holds ``values`` and unresolved ``references``
    (field → target source id), resolved to sys_ids at replay time."""

    seq: int
    run_id: str
    op: str
    table: str
    source_id: str | None
    sys_id: str | None
    payload: dict[str, Any]
    status: str
    attempts: int
    last_error: str | None
    created_at: str
    instance: str | None = None  #: the instance it was queued for (None: queued before that)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "run_id": self.run_id,
            "op": self.op,
            "table": self.table,
            "source_id": self.source_id,
            "sys_id": self.sys_id,
            "payload": self.payload,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "created_at": self.created_at,
            "instance": self.instance,
        }


@dataclass(slots=True)
class ReplayResult:
    """What one replay did. ``stopped`` says why it ended early (instance unreachable)."""

    sent: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    related: int = 0
    resolved_existing: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    remaining: int = 0
    stopped: str | None = None
    #: references written empty because their target was not found (its own write failed
    #: or is still queued): seq, table, source_id, field, target; the next load fills them
    unresolved: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.stopped is None and self.remaining == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "related": self.related,
            "resolved_existing": self.resolved_existing,
            "failed": list(self.failed),
            "remaining": self.remaining,
            "stopped": self.stopped,
            "unresolved": list(self.unresolved),
        }


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A pending entry as far as deduplication needs it."""

    seq: int
    op: str
    table: str
    sys_id: str | None
    payload: dict[str, Any]


def intent_key(
    op: str, table: str, source_id: str | None, sys_id: str | None, payload: dict[str, Any]
) -> tuple[str, ...] | None:
    """What makes two queued writes the same intent (None: never merged).

    Record writes are keyed by source id alone (a create and a later update of one record are
    one intent, even if its class, hence table, changed in between); relationships by their
    ends and type; deletes by table and sys_id."""
    if op in (OP_CREATE, OP_UPDATE):
        if source_id:
            return ("record", source_id)
        return ("record", table, sys_id) if sys_id else None
    if op == OP_RELATE:
        kind = payload.get("type_name") or payload.get("type_sys_id") or ""
        return ("relate", payload.get("parent_source_id") or "",
                payload.get("child_source_id") or "", kind)  # fmt: skip
    if op == OP_DELETE and sys_id:
        return ("delete", table, sys_id)
    return None


def merge_payloads(
    old_op: str, old: dict[str, Any], new_op: str, new: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """One entry for a write queued twice: (op, payload).

    The newer payload wins, except that a waiting create stays a create (the record may not
    exist yet) with the newer fields laid over its own, and each field keeps its earliest
    before-image (the CMDB as it was before any of the queued writes, for rollback)."""
    merged = dict(new)
    op = new_op
    if old_op == OP_CREATE and new_op == OP_UPDATE:
        op = OP_CREATE
        values = {**(old.get("values") or {}), **(new.get("values") or {})}
        references = dict(old.get("references") or {})
        for fld in new.get("values") or {}:
            references.pop(fld, None)  # resolved now: don't let the old pending one override
        references.update(new.get("references") or {})
        for fld in new.get("references") or {}:
            values.pop(fld, None)
        merged["values"], merged["references"] = values, references
    before = {**(new.get("before") or {}), **(old.get("before") or {})}
    if before:
        merged["before"] = before
    return op, merged


#: What to do with an outbox file that cannot be read.
_UNREADABLE = (
    "move it aside (keep it as evidence) and run again; the next load plans again, from the "
    "source, whatever writes it held"
)


class Outbox:
    """An ordered, crash-safe queue of CMDB writes in SQLite (``snowkit.paths.outbox_path()``)."""

    def __init__(self, path: Path | str | None = None, *, instance: str | None = None) -> None:
        """``instance`` (the sync state's key of an instance, ``job.instance_key``) scopes
        the queue: writes are queued for it, and only its entries are read, counted and
        replayed (an outage's writes had been replayed into whatever instance the next
        command targeted). Entries queued before there was a scope (no instance) are
        everyone's. Without ``instance``: every entry (``snowkit outbox show``)."""
        self.path = Path(path) if path is not None else paths.outbox_path()
        self.instance = instance
        self._lock = threading.Lock()
        self._conn = open_store(self.path, _SCHEMA, what="outbox", advice=_UNREADABLE)
        self._conn.execute("PRAGMA synchronous=FULL")
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(outbox)")}
        if "instance" not in columns:  # a file from before entries named their instance
            self._conn.execute("ALTER TABLE outbox ADD COLUMN instance TEXT")

    def _scoped(self, clauses: list[str], args: list[Any]) -> str:
        """`` WHERE ...`` of ``clauses`` and this outbox's instance scope (args appended)."""
        if self.instance is not None:
            clauses = [*clauses, "(instance=? OR instance IS NULL)"]
            args.append(self.instance)
        return " WHERE " + " AND ".join(clauses) if clauses else ""

    def elsewhere(self) -> dict[str, int]:
        """Pending entries queued for other instances than this outbox's: instance -> count."""
        if self.instance is None:
            return {}
        with self._lock:
            rows = self._conn.execute(
                "SELECT instance, COUNT(*) FROM outbox WHERE status=? AND instance IS NOT NULL"
                " AND instance<>? GROUP BY instance ORDER BY instance",
                (STATUS_PENDING, self.instance),
            ).fetchall()
        return {str(instance): int(n) for instance, n in rows}

    # -- writing ---------------------------------------------------------------------------
    def enqueue(
        self,
        run_id: str,
        op: str,
        table: str,
        *,
        source_id: str | None = None,
        sys_id: str | None = None,
        values: dict[str, Any] | None = None,
        references: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> int:
        """Append one write; returns its sequence number."""
        return self.enqueue_many(
            [
                {
                    "run_id": run_id,
                    "op": op,
                    "table": table,
                    "source_id": source_id,
                    "sys_id": sys_id,
                    "values": values,
                    "references": references,
                    "extra": extra,
                }
            ]
        )[0]

    def enqueue_many(self, entries: Iterable[dict[str, Any]]) -> list[int]:
        """Append many writes in one transaction (all or nothing), in the given order.

        A write whose intent is already pending (``intent_key``) replaces that entry: the two
        are merged (``merge_payloads``) and the result goes to the end of the queue."""
        seqs: list[int] = []
        created = _now()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                waiting = self._pending_by_key()
                for e in entries:
                    op = e["op"]
                    payload: dict[str, Any] = {
                        "values": dict(e.get("values") or {}),
                        "references": dict(e.get("references") or {}),
                    }
                    if e.get("extra"):
                        payload.update(e["extra"])
                    sys_id, table = e.get("sys_id"), e["table"]
                    key = intent_key(op, table, e.get("source_id"), sys_id, payload)
                    older = waiting.pop(key, None) if key is not None else None
                    if older is not None:
                        self._conn.execute("DELETE FROM outbox WHERE seq=?", (older.seq,))
                        op, payload = merge_payloads(older.op, older.payload, op, payload)
                        sys_id = sys_id or older.sys_id
                        if older.op == OP_CREATE and op == OP_CREATE and e["op"] == OP_UPDATE:
                            table = older.table  # still a create: in the class it was meant for
                    cur = self._conn.execute(
                        "INSERT INTO outbox(run_id, op, table_name, source_id, sys_id, payload,"
                        " created_at, instance) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            e["run_id"],
                            op,
                            table,
                            e.get("source_id"),
                            sys_id,
                            json.dumps(payload, sort_keys=True),
                            created,
                            self.instance,
                        ),
                    )
                    seq = int(cur.lastrowid or 0)
                    seqs.append(seq)
                    if key is not None:
                        waiting[key] = _Waiting(seq, op, table, sys_id, payload)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return seqs

    def _pending_by_key(self) -> dict[tuple[str, ...], _Waiting]:
        """Pending entries by intent key (called with the lock held, inside the transaction)."""
        args: list[Any] = [STATUS_PENDING]
        where = self._scoped(["status=?"], args)
        rows = self._conn.execute(
            "SELECT seq, op, table_name, source_id, sys_id, payload FROM outbox"
            f"{where} ORDER BY seq",
            args,
        ).fetchall()
        waiting: dict[tuple[str, ...], _Waiting] = {}
        for seq, op, table, source_id, sys_id, raw in rows:
            payload = json.loads(raw)
            key = intent_key(op, table, source_id, sys_id, payload)
            if key is not None:
                waiting[key] = _Waiting(seq, op, table, sys_id, payload)
        return waiting

    def mark(self, seq: int, status: str, *, error: str | None = None) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE outbox SET status=?, attempts=attempts+1, last_error=?, done_at=?"
                " WHERE seq=?",
                (status, error, _now() if status == STATUS_DONE else None, seq),
            )

    def purge_done(self) -> int:
        """Drop entries already sent; returns how many."""
        with self._lock:
            cur = self._conn.execute("DELETE FROM outbox WHERE status=?", (STATUS_DONE,))
            return cur.rowcount

    # -- reading ---------------------------------------------------------------------------
    def entries(self, status: str | None = None, run_id: str | None = None) -> list[OutboxEntry]:
        """Entries in order, optionally only one status and/or run."""
        sql = (
            "SELECT seq, run_id, op, table_name, source_id, sys_id, payload, status, attempts,"
            " last_error, created_at, instance FROM outbox"
        )
        clauses: list[str] = []
        args: list[Any] = []
        if status is not None:
            clauses.append("status=?")
            args.append(status)
        if run_id is not None:
            clauses.append("run_id=?")
            args.append(run_id)
        sql += self._scoped(clauses, args) + " ORDER BY seq"
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [
            OutboxEntry(
                seq=r[0],
                run_id=r[1],
                op=r[2],
                table=r[3],
                source_id=r[4],
                sys_id=r[5],
                payload=json.loads(r[6]),
                status=r[7],
                attempts=r[8],
                last_error=r[9],
                created_at=r[10],
                instance=r[11],
            )
            for r in rows
        ]

    def pending(self) -> list[OutboxEntry]:
        return self.entries(STATUS_PENDING)

    def replay_order(self) -> list[OutboxEntry]:
        """Pending entries in the order a replay sends them: locations, then other records,
        then relationships, each in queue order.

        Queue order alone is not enough: a record queued again by a later run moves to the end
        of the queue, behind a relationship an earlier run queued for it, and the relationship
        would be sent before its end exists.
        """
        return sorted(self.pending(), key=lambda e: (_replay_phase(e.table), e.seq))

    def count(self, status: str | None = STATUS_PENDING) -> int:
        args: list[Any] = [] if status is None else [status]
        where = self._scoped([] if status is None else ["status=?"], args)
        with self._lock:
            return int(
                self._conn.execute(f"SELECT COUNT(*) FROM outbox{where}", args).fetchone()[0]
            )

    def summary(self) -> dict[str, int]:
        """Entry counts per status."""
        args: list[Any] = []
        where = self._scoped([], args)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT status, COUNT(*) FROM outbox{where} GROUP BY status", args
            ).fetchall()
        return {status: int(n) for status, n in rows}

    def breakdown(self, status: str | None = STATUS_PENDING) -> dict[str, dict[str, int]]:
        """Entry counts per operation and table (``{"create": {"cmdb_ci_hardware": 14}}``):
        what a queue of N entries is made of."""
        args: list[Any] = [] if status is None else [status]
        where = self._scoped([] if status is None else ["status=?"], args)
        sql = f"SELECT op, table_name, COUNT(*) FROM outbox{where}"
        sql += " GROUP BY op, table_name ORDER BY op, table_name"
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        out: dict[str, dict[str, int]] = {}
        for op, table, n in rows:
            out.setdefault(op, {})[table] = int(n)
        return out

    # -- replay ----------------------------------------------------------------------------
    def replay(
        self, client: OutboxClient, *, audit: Any = None, intents: Any = None
    ) -> ReplayResult:
        """Send pending entries in order. Creates look up by source id first (never duplicate);
        an unreachable instance, or an error that concerns every write (authentication, rate
        limit, server error, a lost answer: :func:`stops_the_replay`), stops the replay and
        keeps the rest for next time; an entry the instance rejects is marked failed and
        reported, and the replay goes on.

        ``intents`` (a ``snowkit.cmdb.intents.IntentJournal``) notes each write before it is
        sent, so a replay killed between a write and its audit line is reconciled later."""
        result = ReplayResult()
        pending = self.replay_order()
        resolver = _SourceIdResolver(client)
        for index, entry in enumerate(pending):
            try:
                outcome = _replay_one(client, entry, resolver, audit, intents, result)
            except Exception as exc:
                why = stops_the_replay(exc)
                if why is not None:
                    result.stopped = f"{why}; {len(pending) - index} write(s) stay queued"
                    result.remaining = len(pending) - index
                    return result
                message = f"{type(exc).__name__}: {exc}"
                self.mark(entry.seq, STATUS_FAILED, error=message)
                result.failed.append(
                    {
                        "seq": entry.seq,
                        "op": entry.op,
                        "table": entry.table,
                        "source_id": entry.source_id,
                        "error": message,
                    }
                )
                continue
            self.mark(entry.seq, STATUS_DONE)
            result.sent += 1
            if outcome == "created":
                result.created += 1
            elif outcome == "updated":
                result.updated += 1
            elif outcome == "existing":
                result.resolved_existing += 1
            elif outcome == "deleted":
                result.deleted += 1
            elif outcome == "related":
                result.related += 1
        return result

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SourceIdResolver:
    """Source id → sys_id lookups during replay (cached; misses are not cached)."""

    def __init__(self, client: OutboxClient) -> None:
        self._client = client
        self._cache: dict[tuple[str, str], str] = {}
        self._types: RelTypeCache | None = None

    def find(self, table: str, source_id: str) -> dict | None:
        rows = self._client.query(
            table, Query().eq_exact(SOURCE_ID_FIELD, source_id), fields=None, page_size=2
        )
        # only a row that carries the id: an instance without the source-id field ignores the
        # condition and returns every row (each queued create had become an update of one CI)
        for row in _first(r for r in rows if as_str(r.get(SOURCE_ID_FIELD)) == source_id):
            self._cache[(table, source_id)] = row["sys_id"]
            return row
        return None

    def rel_type(self, name: str | None) -> str | None:
        """A cmdb_rel_type sys_id by name (queued while the instance was unreachable)."""
        if not name:
            return None
        if self._types is None:
            self._types = RelTypeCache(self._client)
        return self._types.get(name)

    def sys_id(self, table: str, source_id: str) -> str | None:
        key = (table, source_id)
        if key in self._cache:
            return self._cache[key]
        row = self.find(table, source_id)
        return row["sys_id"] if row else None


def _first(rows: Iterator[dict]) -> Iterator[dict]:
    for row in rows:
        yield row
        return


def _resolve_references(
    entry: OutboxEntry, resolver: _SourceIdResolver, result: ReplayResult | None
) -> dict[str, Any]:
    """The entry's values with its references filled in; one whose target is not found is
    left out and noted in ``result.unresolved``."""
    values = dict(entry.payload.get("values") or {})
    for fld, target in (entry.payload.get("references") or {}).items():
        target_table = "cmn_location" if fld == "location" else "cmdb_ci"
        sys_id = resolver.sys_id(target_table, target)
        if sys_id:
            values[fld] = sys_id
        elif result is not None:
            result.unresolved.append(
                {"seq": entry.seq, "table": entry.table, "source_id": entry.source_id,
                 "field": fld, "target": target}
            )  # fmt: skip
    return values


def _replay_one(
    client: OutboxClient,
    entry: OutboxEntry,
    resolver: _SourceIdResolver,
    audit: Any,
    intents: Any = None,
    result: ReplayResult | None = None,
) -> str:
    values = _resolve_references(entry, resolver, result)
    run_id = entry.run_id
    if entry.op == OP_CREATE:
        assert entry.source_id, "a queued create carries its source id"
        found_in = entry.table
        existing = resolver.find(entry.table, entry.source_id)
        if existing is None and entry.table != "cmn_location":
            # held under another class (or the class table is missing): cmdb_ci sees it
            found_in = "cmdb_ci"
            existing = resolver.find(found_in, entry.source_id)
        if existing is not None:
            # the sys_id a queued create chose is for a record that does not exist yet:
            # one found under another id keeps its own
            changed = {
                k: v
                for k, v in values.items()
                if k != "sys_id" and as_str(existing.get(k)) != as_str(v)
            }
            if changed:
                # addressed through the table it was found in: a PATCH to the queued class
                # table would miss a record held under another class (HTTP 404)
                sys_id = existing["sys_id"]
                before = {k: as_str(existing.get(k)) for k in changed}  # rollback restores it
                token = _intend(
                    intents, audit, entry, "update", sys_id, changed, table=found_in, before=before
                )
                client.update(found_in, sys_id, changed, before=before)
                _audit(audit, "update", found_in, sys_id, entry, changed, run_id, before=before)
                _done(intents, token)
                return "updated"
            return "existing"
        body = dict(values)
        body[SOURCE_ID_FIELD] = entry.source_id
        token = _intend(intents, audit, entry, "create", None, body)
        row = client.create(entry.table, body, source_id=entry.source_id)
        _audit(audit, "create", entry.table, row.get("sys_id"), entry, body, run_id)
        _done(intents, token)
        return "created"
    if entry.op == OP_UPDATE:
        sys_id = entry.sys_id or (
            resolver.sys_id(entry.table, entry.source_id) if entry.source_id else None
        )
        if not sys_id:
            raise LookupError(f"no record with source id {entry.source_id} to update")
        # the record as it is now, not as the plan saw it: a change made since belongs in
        # the before-image, or a rollback would put back the older value over it
        before = _current_values(client, entry.table, sys_id, values)
        token = _intend(intents, audit, entry, "update", sys_id, values, before=before)
        client.update(entry.table, sys_id, values, before=before)
        _audit(audit, "update", entry.table, sys_id, entry, values, run_id, before=before)
        _done(intents, token)
        return "updated"
    if entry.op == OP_DELETE:
        if entry.sys_id:
            client.delete(entry.table, entry.sys_id, before=entry.payload.get("before"))
            _audit(audit, "delete", entry.table, entry.sys_id, entry, None, run_id)
        return "deleted"
    if entry.op == OP_RELATE:
        parent = resolver.sys_id("cmdb_ci", entry.payload["parent_source_id"])
        child = resolver.sys_id("cmdb_ci", entry.payload["child_source_id"])
        type_id = entry.payload.get("type_sys_id") or resolver.rel_type(
            entry.payload.get("type_name")
        )
        if not (parent and child and type_id):
            raise LookupError(
                "relationship ends not found: "
                f"{entry.payload['parent_source_id']} -> {entry.payload['child_source_id']}"
            )
        body = {"parent": parent, "child": child, "type": type_id}
        if find_link(client, body):
            return "existing"
        token = _intend(intents, audit, entry, "relate", None, body)
        row = client.create("cmdb_rel_ci", body)
        _audit(audit, "create", "cmdb_rel_ci", row.get("sys_id"), entry, body, run_id)
        _done(intents, token)
        return "related"
    raise ValueError(f"unknown outbox operation {entry.op!r}")


def _current_values(
    client: OutboxClient, table: str, sys_id: str, values: dict[str, Any]
) -> dict[str, str] | None:
    """The fields ``values`` will change, as the record holds them now (None if it is gone:
    the update then fails with the instance's 404)."""
    fields = ["sys_id", *sorted(k for k in values if k != "sys_id")]
    query = Query().eq("sys_id", sys_id)
    for row in client.query(table, query, fields=fields, page_size=2):
        return {k: as_str(row.get(k)) for k in fields[1:]}
    return None


def _intend(
    intents: Any,
    audit: Any,
    entry: OutboxEntry,
    action: str,
    sys_id: str | None,
    after: dict[str, Any],
    *,
    table: str | None = None,
    before: dict[str, Any] | None = None,
) -> int | None:
    """Note one replayed write before it is sent (only when it will be audited)."""
    if intents is None or audit is None:
        return None
    write = {
        "action": action,
        "table": table or entry.table,
        "source_id": entry.source_id,
        "sys_id": sys_id,
        "before": before if action == "update" else None,
        "after": after,
    }
    return intents.intend(entry.run_id, [write])


def _done(intents: Any, token: int | None) -> None:
    if intents is not None:
        intents.done(token)


def _audit(
    audit: Any,
    action: str,
    table: str,
    sys_id: str | None,
    entry: OutboxEntry,
    after: dict | None,
    run_id: str,
    *,
    before: dict | None = None,
) -> None:
    if audit is None:
        return
    audit.record(
        action,
        table,
        sys_id,
        source_id=entry.source_id,
        before=before if before is not None else entry.payload.get("before"),
        after=after,
        run_id=run_id,
    )


def _replay_phase(table: str) -> int:
    """Dependency phase of a write: what it references must be written in an earlier one."""
    if table == LOCATION_TABLE:
        return 0
    return 2 if table == REL_TABLE else 1
