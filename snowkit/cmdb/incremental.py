"""Incremental snapshot: on a rerun, read only what changed in the CMDB since the last run.

Why: a no-change rerun spent most of its time re-reading every CI, location and link of the
source. With the last synced state kept locally (``snowkit.cmdb.state``), one parallel round of
small requests tells what changed:

- per table (``cmdb_ci`` and ``cmn_location`` rows carrying a source id, and ``cmdb_rel_ci``) a
  *listing* of ``sys_id`` + version (``sys_updated_on``, ``sys_mod_count``) of the records
  updated at or after the watermark minus ``OVERLAP_SECONDS``; a record whose version differs
  from the remembered one is read in full (``sys_idIN`` chunks) — someone else's edit is seen;
- per table a ``X-Total-Count`` count, to see deletions (a deleted record leaves no trace in a
  listing): for CIs and locations the remembered ids plus the listed ids must make exactly the
  count; for links (of which we remember only ours) the remembered total plus the links
  created since must. Any difference, or a field set that changed, falls back to a full read.

Correctness rests on server values only: watermarks are the server's ``sys_updated_on``, never
the local clock, and are taken with an overlap (records stamped in the last seconds are listed
again and compared by version, which also covers two updates in one second: ``sys_mod_count``
differs). After a run that wrote, ``seal`` lists what changed since the plan's watermark and
checks it against the versions our own write responses returned: anything else (a concurrent
edit) makes the next run read everything. Verification mismatches, ambiguous writes resolved by
lookup and IRE mode (no versions in its answers) do the same. Every doubt costs one full read,
never a missed change.

Listings leave out what our own account created and nobody touched since (``listing_query``):
otherwise a back-to-back rerun, and every seal, would list all of a run's own writes again,
since they fall inside the overlap window. A canary record and the counts keep that safe.

The round runs while the inventory is still being collected (``SyncEngine.prefetch``, only
with an empty outbox: nothing may be written between that read and the plan), as one Batch API
request (``_listings_in_one_batch``; one request per listing and count when that answer cannot
be used), while the remembered rows load beside it. Measured (``benchmarks/rerun_nochange.py``:
5,000 CIs + 5,480 links, 50 ms latency, cap 8, 8 workers, batches of 100, on a shared 2-CPU
machine): the no-change rerun went from ~1.4 s (full read) to ~0.4 s (first incremental
version) to 0.13-0.14 s, about 10x the initial load; what is left is one round trip and the
transform and plan on the local CPU.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from snowkit.cmdb.fields import as_str
from snowkit.cmdb.plan import (
    CI_TABLE,
    LOCATION_TABLE,
    SOURCE_ID_FIELD,
    CMDBSnapshot,
    fields_by_table,
    parallel_map,
    read_sourced,
    snapshot_from_rows,
)
from snowkit.cmdb.questions import Rider, table_url
from snowkit.cmdb.relationships import REL_TABLE, LinkKey, existing_link_rows
from snowkit.cmdb.state import SyncState
from snowkit.servicenow.batch import BatchRequest
from snowkit.servicenow.query import Query, QueryValueError

#: Records stamped this close to the watermark are listed again (clock skew between nodes,
#: transactions committed after the listing that stamped them).
OVERLAP_SECONDS = 2.0
#: Listings ask for this many light rows per page (the Table API allows up to 10,000).
LISTING_PAGE = 10_000
#: More changed records than this: a full read is as cheap as reading them by id.
MAX_CHANGED = 2_000
VERSION_FIELDS = ("sys_updated_on", "sys_mod_count")
_STAMP = "%Y-%m-%d %H:%M:%S"
_KIND_TABLE = {"ci": CI_TABLE, "loc": LOCATION_TABLE, "rel": REL_TABLE}


def version_of(row: Mapping[str, Any]) -> str:
    """A record's version: ``sys_updated_on|sys_mod_count`` (empty parts when not returned)."""
    return f"{as_str(row.get('sys_updated_on'))}|{as_str(row.get('sys_mod_count'))}"


def signature(records: Sequence[Any]) -> str:
    """Names the fields a snapshot holds: a state read for other fields cannot be reused."""
    parts = [f"{t}:{','.join(sorted(f))}" for t, f in sorted(fields_by_table(records).items())]
    return ";".join(parts)


def input_digest(records: Sequence[Any], relationships: Sequence[Any]) -> str:
    """A digest of everything the plan takes from the transform: each record's table, source
    id, kind, values and references, and each relationship. Equal digests: equal plans
    against an unchanged CMDB (see ``SyncState.input_digest``)."""
    digest = hashlib.blake2b(digest_size=20)
    for start in range(0, len(records), _DIGEST_CHUNK):  # a few MB at most in memory at once
        part = records[start : start + _DIGEST_CHUNK]
        digest.update(orjson.dumps(
            [(r.table, r.source_id, r.kind, r.values, r.references) for r in part],
            option=orjson.OPT_SORT_KEYS,
        ))  # fmt: skip
    digest.update(b"|")  # records end here
    for start in range(0, len(relationships), _DIGEST_CHUNK):
        part = relationships[start : start + _DIGEST_CHUNK]
        digest.update(orjson.dumps([(s.parent_source_id, s.child_source_id, s.type_name)
                                    for s in part]))  # fmt: skip
    return digest.hexdigest()


_DIGEST_CHUNK = 2000


def cut(watermark: str | None, overlap: float = OVERLAP_SECONDS) -> str | None:
    """The watermark minus the overlap, in the server's format (None: no watermark)."""
    if not watermark:
        return None
    try:
        at = datetime.strptime(watermark, _STAMP)
    except ValueError:
        return None
    return (at - timedelta(seconds=overlap)).strftime(_STAMP)


def newest_stamp(versions: Iterable[str]) -> str | None:
    """The newest ``sys_updated_on`` among versions (they start with it: a string max)."""
    return max(versions, default="").split("|", 1)[0] or None


def max_stamp(stamps: Iterable[str], start: str | None = None) -> str | None:
    best = start or ""
    for stamp in stamps:
        if stamp and stamp > best:
            best = stamp
    return best or None


@dataclass
class Listing:
    """What a listing of one table since a cut showed, compared on the fly with the remembered
    versions (nothing per row is kept but the changes: a listing of 50,000 rows costs no
    memory worth the name)."""

    count: int = 0  #: the table's count (X-Total-Count), from a separate request
    newest: str | None = None  #: the newest ``sys_updated_on`` listed
    changed: dict[str, str] = field(default_factory=dict)  #: id → version, where it differs
    unknown: int = 0  #: listed ids not remembered at all (they are in ``changed`` too)
    known_recent: int = 0  #: listed ids remembered with a stamp at or after the cut
    created_since: int = 0  #: (links) ids created at or after the cut, not in ``recent``
    created_since_known: int = 0  #: (links) of those, ids remembered (ours, the canary)
    recent: dict[str, str] = field(default_factory=dict)  #: (links) id → created, newest only
    #: our own writes were left out (see ``listing_query``); the canary stands in for them
    narrowed: bool = False
    canary: str | None = None  #: a remembered id stamped at or after the cut: must be listed
    canary_seen: bool = False

    def recent_ok(self, known: Mapping[str, str], since: str | None) -> bool:
        """The listing's time filter was read as meant: every remembered record stamped at or
        after the cut came back (or, narrowed, the one canary did)."""
        if self.narrowed:
            return self.canary is None or self.canary_seen
        return self.known_recent == expected_recent(known, since)


def listing_query(kind: str, since: str | None, me: str = "", canary: str | None = None) -> str:
    """What a listing asks for: records (carrying a source id, for CIs and locations) stamped
    at or after ``since``.

    With ``me`` (the account our writes are stamped with) the records *we created* and nobody
    touched since are left out: a back-to-back rerun would otherwise list every write of the
    run before (the overlap window), and a run's seal every write of its own. Left in: all
    that others changed, everything ``me`` changed after creating it (``sys_mod_count > 0``:
    our updates, business rules running as us, a rollback), and ``canary`` (a remembered
    record stamped after the cut, proving the time filter). Only used on a sealed state
    (``SyncState.sealed``: no write since it was saved), so every record ``me`` created in the
    window is one the state knows; after a run that crashed or lost the instance, the next one
    lists everything (one of its creates could otherwise cancel out someone else's deletion
    in the counts). Assumes the account is snowkit's alone, as the intent journal does.
    """
    sourced = kind != "rel"
    if not since:
        return f"{SOURCE_ID_FIELD}ISNOTEMPTY" if sourced else ""

    def group(query: Query) -> Query:
        if sourced:
            query.is_not_empty(SOURCE_ID_FIELD)
        return query.ge("sys_updated_on", since)

    query = group(Query())
    if not me:
        return str(query)
    try:
        query.ne("sys_updated_by", me).new_query()
        group(query).eq("sys_updated_by", me).gt("sys_mod_count", "0")
        if canary:
            group(query.new_query()).eq("sys_id", canary)
    except QueryValueError:  # a user name the encoded query cannot carry: list it all
        return str(group(Query()))
    return str(query)


def canary_for(known: Mapping[str, str], since: str | None) -> str | None:
    """The remembered record stamped closest after ``since`` (the first to go missing if the
    instance read the cut later than meant, e.g. in another time zone)."""
    if not since:
        return None
    best: tuple[str, str] | None = None
    for sys_id, version in known.items():
        stamp = version.split("|", 1)[0]
        if stamp >= since and (best is None or stamp < best[0]):
            best = (stamp, sys_id)
    return best[1] if best else None


@dataclass(frozen=True)
class _ListingRead:
    """What one listing asks for (see :func:`listing_query`)."""

    kind: str
    since: str | None
    query: str
    fields: tuple[str, ...]
    narrowed: bool
    canary: str | None


def _listing_read(
    kind: str,
    since: str | None,
    versions: Callable[[], Mapping[str, str]],
    me: str = "",
    canary: str | None = None,
) -> _ListingRead:
    narrowed = bool(me and since)
    if narrowed and canary is None:
        canary = canary_for(versions(), since)
    query = listing_query(kind, since, me if narrowed else "", canary if narrowed else None)
    fields = ("sys_id", *VERSION_FIELDS) + (("sys_created_on",) if kind == "rel" else ())
    return _ListingRead(kind, since, query, fields, narrowed, canary if narrowed else None)


def _list(
    client: Any,
    kind: str,
    since: str | None,
    versions: Callable[[], Mapping[str, str]],
    recent_before: set[str],
    me: str = "",
    canary: str | None = None,
) -> Listing:
    """One listing; ``versions`` gives the remembered versions (it may wait for them to be
    loaded: the request goes out first when ``canary`` is already known)."""
    read = _listing_read(kind, since, versions, me, canary)
    table = _KIND_TABLE[kind]
    rows = list(client.query(table, read.query, fields=list(read.fields), page_size=LISTING_PAGE))
    return _compare(read, rows, versions(), recent_before)


def _compare(
    read: _ListingRead,
    rows: Iterable[Mapping[str, Any]],
    known: Mapping[str, str],
    recent_before: set[str],
) -> Listing:
    """A listing's rows against the remembered versions (``sys_created_on`` tells links
    created since from links changed)."""
    kind, since = read.kind, read.since
    out = Listing(narrowed=read.narrowed, canary=read.canary)
    newest = ""
    for row in rows:
        sys_id, version = as_str(row.get("sys_id")), version_of(row)
        out.canary_seen = out.canary_seen or sys_id == out.canary
        stamp = version.split("|", 1)[0]
        newest = max(newest, stamp)
        was = known.get(sys_id)
        if was != version:
            out.changed[sys_id] = version
            out.unknown += was is None
        if was is not None and since and was.split("|", 1)[0] >= since:
            out.known_recent += 1
        if kind == "rel":
            created = as_str(row.get("sys_created_on"))
            if created >= (since or "") and sys_id not in recent_before:
                out.created_since += 1
                out.created_since_known += was is not None
            out.recent[sys_id] = created
            if len(out.recent) > 2 * LISTING_PAGE:
                out.recent = _prune(out.recent, newest)
    out.newest = newest or None
    out.recent = _prune(out.recent, newest)
    return out


def _prune(created: dict[str, str], newest: str) -> dict[str, str]:
    """Only the ids created within the overlap of the newest stamp (the next cut)."""
    floor = cut(newest) or ""
    return {s: c for s, c in created.items() if c >= floor}


def expected_recent(known: Mapping[str, str], since: str | None) -> int:
    """How many remembered records a listing since ``since`` must return (a canary for the
    listing's time filter: if the instance read the cut in another time zone than its stamps
    — a literal date in an encoded query is the user's local time on some instances — they
    would not come back, and the caller reads everything instead of trusting the listing)."""
    if not since:
        return 0
    return sum(1 for v in known.values() if v.split("|", 1)[0] >= since)


def _count_query(kind: str) -> str:
    return "" if kind == "rel" else f"{SOURCE_ID_FIELD}ISNOTEMPTY"


def _count(client: Any, kind: str) -> int:
    return int(client.count(_KIND_TABLE[kind], _count_query(kind)))


def count_rider(kind: str, take_count: Callable[[int | None], None]) -> Rider:
    """The count of ``kind``'s table (as a listing round counts it) riding in another round's
    Batch API request; ``take_count`` gets it, or None when the answer is unusable."""
    url = table_url(_KIND_TABLE[kind], {
        "sysparm_query": _count_query(kind), "sysparm_fields": "sys_id", "sysparm_limit": "1",
    })  # fmt: skip

    def take(answer: Any) -> None:
        take_count(answer.total if answer.ok else None)

    return Rider(BatchRequest("GET", url), take)


def list_changes(
    client: Any,
    state: SyncState,
    *,
    workers: int,
    extra: Sequence[Callable[[], Any]] = (),
    riders: Sequence[Rider] = (),
    kinds: Sequence[str] = ("ci", "loc", "rel"),
    since: Mapping[str, str | None] | None = None,
    load_rows: Callable[[], None] | None = None,
    sending: Callable[[], None] | None = None,
) -> tuple[dict[str, Listing], list[Any]]:
    """One parallel round: a listing (since each kind's watermark, or ``since``) and a count
    per kind, plus ``extra`` reads (e.g. the class-table probes) so they share the round, and
    ``riders``: reads that go in the listings' Batch API request (answered only if it is);
    ``sending()`` is called as the listings go out.

    ``load_rows`` fills ``state`` (loaded head only) with its rows and versions alongside the
    requests: each listing compares its answer once they are in. Its canaries then come from
    the head (``state.canaries``, set by :func:`choose_canaries` before the state was saved)."""
    marks = state.watermarks if since is None else since
    loaded = threading.Event()
    if load_rows is None:
        loaded.set()

    def load() -> None:
        try:
            assert load_rows is not None
            load_rows()
        finally:
            loaded.set()

    def versions(kind: str) -> Mapping[str, str]:
        loaded.wait()
        return state.versions[kind]

    def canary(kind: str) -> str | None:
        return state.canaries.get(kind) if since is None and load_rows is not None else None

    # our own untouched creates are left out only when every write since the state was saved
    # is known: a seal (``since`` given) knows its own run's; a rerun needs a sealed state
    me = state.updater if since is not None or state.sealed else ""

    def listing(kind: str) -> Listing:
        return _list(client, kind, cut(marks.get(kind)), lambda: versions(kind), state.recent,
                     me, canary(kind))  # fmt: skip

    def batched() -> dict[str, Listing] | None:
        if not callable(getattr(client, "batch", None)):
            if sending is not None:
                sending()  # the one-by-one listings go out now
            return None
        reads = [
            _listing_read(kind, cut(marks.get(kind)), lambda k=kind: versions(k), me, canary(kind))
            for kind in kinds
        ]
        return _listings_in_one_batch(client, reads, versions, state.recent, riders, sending)

    loading = [(load,)] if load_rows is not None else []
    results = parallel_map(lambda fn: fn(), [*loading, (batched,), *((fn,) for fn in extra)],
                           max(workers, len(extra) + 2))[len(loading):]  # fmt: skip
    listings, extras = results[0], results[1:]
    if listings is None:  # no Batch API (or it failed): one request per listing and count
        jobs = [(lambda k=kind: listing(k),) for kind in kinds]
        jobs += [(lambda k=kind: _count(client, k),) for kind in kinds]
        answers = parallel_map(lambda fn: fn(), jobs, workers)
        listings = {}
        for n, kind in enumerate(kinds):
            listings[kind] = answers[n]
            listings[kind].count = answers[len(kinds) + n]
    return listings, extras


def _listings_in_one_batch(
    client: Any,
    reads: Sequence[_ListingRead],
    versions: Callable[[str], Mapping[str, str]],
    recent_before: set[str],
    riders: Sequence[Rider] = (),
    sending: Callable[[], None] | None = None,
) -> dict[str, Listing] | None:
    """Every listing and count of the round as one Batch API request: one round trip and one
    connection instead of six (a no-change rerun spends most of its time in this round).
    None when the answer cannot be used as is (an item failed, a header is missing): the
    caller then sends the reads one by one, with their own retries and errors. A listing is
    read again with paging unless its own ``X-Total-Count`` says it holds every matching row:
    a real instance cuts the page before its ACLs hide rows, so a short page is no proof
    (see :mod:`snowkit.servicenow.paging`)."""
    requests: list[BatchRequest] = []
    for read in reads:
        table = _KIND_TABLE[read.kind]
        requests.append(BatchRequest("GET", table_url(table, {
            "sysparm_query": read.query, "sysparm_fields": ",".join(read.fields),
            "sysparm_limit": str(LISTING_PAGE), "sysparm_exclude_reference_link": "true",
        })))  # fmt: skip
        requests.append(BatchRequest("GET", table_url(table, {
            "sysparm_query": _count_query(read.kind), "sysparm_fields": "sys_id",
            "sysparm_limit": "1",
        })))  # fmt: skip
    requests += [rider.request for rider in riders]
    if sending is not None:
        sending()
    try:
        answers = client.batch(requests)
    except Exception:  # the one-by-one reads that follow raise what matters
        return None
    for rider, answer in zip(riders, answers[len(answers) - len(riders) :], strict=True):
        rider.take(answer)
    answers = answers[: len(answers) - len(riders)]
    listings: dict[str, Listing] = {}
    for read, rows_answer, count_answer in zip(reads, answers[::2], answers[1::2], strict=True):
        total = count_answer.total
        rows = rows_answer.result if rows_answer.ok else None
        if not count_answer.ok or total is None or not isinstance(rows, list):
            return None
        if not _whole_listing(rows_answer, rows):
            return None
        listing = _compare(read, rows, versions(read.kind), recent_before)
        listing.count = total
        listings[read.kind] = listing
    return listings


def _whole_listing(answer: Any, rows: list[Any]) -> bool:
    """The listing page holds every row its query matches: its count says so (and it is
    under the page size)."""
    matched = answer.total
    return matched is not None and len(rows) < LISTING_PAGE and matched <= len(rows)


def choose_canaries(state: SyncState) -> None:
    """Pick, per kind, the canary the next run's listing must return (see ``Listing``)."""
    state.canaries = {}
    for kind in ("ci", "loc", "rel"):
        canary = canary_for(state.versions[kind], cut(state.watermarks.get(kind)))
        if canary:
            state.canaries[kind] = canary


def refresh_records(
    client: Any,
    state: SyncState,
    listings: Mapping[str, Listing],
    records: Sequence[Any],
    missing: set[str],
    *,
    workers: int,
) -> str | None:
    """Bring the remembered CI and location rows up to date; returns why it cannot (then the
    caller reads everything) or None."""
    if state.signature != signature(records):
        return "the transform maps other fields than last time"
    if set(state.missing_tables) != missing:
        return "the class tables present on the instance changed"
    changed: list[str] = []
    for kind in ("ci", "loc"):
        listing, known = listings[kind], state.versions[kind]
        if len(known) + listing.unknown != listing.count:
            return f"records carrying a source id were deleted or unsourced ({kind})"
        if not listing.recent_ok(known, cut(state.watermarks.get(kind))):
            return f"records stamped after the watermark were not listed ({kind})"
        changed.extend(listing.changed)
    if len(changed) > MAX_CHANGED:
        return f"{len(changed)} records changed"
    if changed:
        rows = read_sourced(client, records, missing_tables=missing, sys_ids=changed,
                            workers=workers)  # fmt: skip
        if set(rows) != set(changed):
            return "a changed record vanished while it was read"
        state.dirty = True
        for sys_id, row in rows.items():
            kind = "loc" if row.get("sys_class_name") == LOCATION_TABLE else "ci"
            other = "ci" if kind == "loc" else "loc"
            state.rows[other].pop(sys_id, None)
            state.versions[other].pop(sys_id, None)
            state.rows[kind][sys_id] = row
            state.versions[kind][sys_id] = version_of(row)
    for kind in ("ci", "loc"):
        state.watermarks[kind] = (
            max_stamp([listings[kind].newest or ""], state.watermarks.get(kind)) or ""
        )
        state.counts[kind] = listings[kind].count
    return None


def refresh_links(
    client: Any, state: SyncState, listing: Listing, our_sys_ids: set[str], *, workers: int
) -> str | None:
    """Bring the remembered links (those touching our CIs) up to date; returns why it cannot
    (then the relationship phase reads the links as before) or None."""
    if not state.has_links:
        return "no links remembered"
    if state.counts.get("rel", -1) + listing.created_since != listing.count:
        return "links were deleted"
    changed = list(listing.changed)
    if len(changed) > MAX_CHANGED:
        return f"{len(changed)} links changed"
    if changed:
        state.dirty = True
        rows = existing_link_rows(client, "sys_id", changed, workers=workers)
        for sys_id in changed:
            row = rows.get(sys_id)
            state.rows["rel"].pop(sys_id, None)
            state.versions["rel"].pop(sys_id, None)
            if row and (row["parent"] in our_sys_ids or row["child"] in our_sys_ids):
                state.rows["rel"][sys_id] = {k: row[k] for k in ("parent", "child", "type")}
                state.versions["rel"][sys_id] = row["version"]
    take_link_marks(state, listing)
    return None


def take_link_marks(state: SyncState, listing: Listing, ours: str | None = None) -> None:
    """Watermark, count and the recently created ids the count includes, from a listing
    (``ours``: the newest stamp of our own links, which a narrowed listing leaves out)."""
    marks = [listing.newest or "", ours or ""]
    state.watermarks["rel"] = max_stamp(marks, state.watermarks.get("rel")) or ""
    since = cut(state.watermarks["rel"]) or ""
    state.recent = {s for s, c in listing.recent.items() if c >= since}
    state.counts["rel"] = listing.count


def link_keys(state: SyncState) -> set[LinkKey]:
    return {(r["parent"], r["child"], r["type"]) for r in state.rows["rel"].values()}


def snapshot_of(state: SyncState, records: Sequence[Any], missing: set[str]) -> CMDBSnapshot:
    rows = {**state.rows["ci"], **state.rows["loc"]}
    return snapshot_from_rows(dict(sorted(rows.items())), missing, records)


def state_from_full_read(
    snapshot: CMDBSnapshot, records: Sequence[Any], missing: set[str], read_s: float = 0.0
) -> SyncState:
    """A fresh state from a full read that took ``read_s`` seconds (watermarks: the newest
    stamps read, less that time: a record on an early page edited while later pages were
    read is older than the newest stamp, and must still be listed next time)."""
    state = SyncState(signature=signature(records), missing_tables=sorted(missing), dirty=True)
    for row in snapshot.rows.values():
        kind = "loc" if row.get("sys_class_name") == LOCATION_TABLE else "ci"
        state.rows[kind][row["sys_id"]] = row
        state.versions[kind][row["sys_id"]] = version_of(row)
    for kind in ("ci", "loc"):
        state.counts[kind] = len(state.rows[kind])
        newest = newest_stamp(state.versions[kind].values())
        state.watermarks[kind] = (cut(newest, overlap=read_s) if read_s > 0 else newest) or ""
    return state


def seal(
    client: Any,
    state: SyncState,
    since: Mapping[str, str | None],
    our_sys_ids: set[str],
    *,
    workers: int,
    links_created: int = 0,
) -> str | None:
    """After writing: list what changed since the plan's watermarks and check every change is one of
    ours (its version is the one our write returned). Returns why the state cannot be kept.

    Links: the count before the run (``counts["rel"]``, taken in the plan's first round) plus
    the ``links_created`` by this run plus those others created since must make the count now;
    a link deleted meanwhile leaves no other trace (it had been taken into the new count, and
    the remembered link was never recreated)."""
    kinds = ("ci", "loc", "rel") if state.has_links else ("ci", "loc")
    listings, _ = list_changes(client, state, workers=workers, kinds=kinds, since=since)
    for kind in ("ci", "loc"):
        listing, known = listings[kind], state.versions[kind]
        if not listing.recent_ok(known, cut(since.get(kind))):
            return f"records written in this run were not listed ({kind})"
        if listing.changed:
            return f"{len(listing.changed)} record(s) changed by someone else during the run"
        if len(known) != listing.count:
            return f"the count of sourced records does not add up ({kind})"
        marks = [listing.newest or "", newest_stamp(known.values()) or ""]
        state.watermarks[kind] = max_stamp(marks, state.watermarks.get(kind)) or ""
        state.counts[kind] = listing.count
    if state.has_links:
        listing, known = listings["rel"], state.versions["rel"]
        if not since.get("rel"):
            return "no link watermark"
        before = state.counts.get("rel")
        if before is None:
            return "no link count from before the run"
        others = listing.created_since - listing.created_since_known
        if before + links_created + others != listing.count:
            return "the count of links does not add up (one deleted or added during the run)"
        # ours must carry our versions; others matter only if they touch our CIs
        if any(s in known for s in listing.changed):
            return "links changed by someone else during the run"
        unknown = list(listing.changed)
        if len(unknown) > MAX_CHANGED:
            return "many links changed during the run"
        if unknown:
            rows = existing_link_rows(client, "sys_id", unknown, workers=workers)
            if any(r["parent"] in our_sys_ids or r["child"] in our_sys_ids for r in rows.values()):
                return "links to our CIs were added by someone else during the run"
        take_link_marks(state, listing, newest_stamp(known.values()))
    return None
