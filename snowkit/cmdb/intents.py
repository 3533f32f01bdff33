"""Write-ahead intents: no write lands in the CMDB without a trace the audit trail can pick up.

The gap it closes: the loader commits a batch on the instance, then appends the audit lines. A
process killed between the two leaves records in the CMDB that no audit entry names; the next
run plans them as "no change" and ``snowkit rollback`` can never undo them.

So before a batch is sent its writes are recorded here (one SQLite transaction, fsynced: one
fsync per batch, not per record), and removed once their outcomes are in the audit trail.
Whatever is still here at the start of the next run (or of ``snowkit outbox replay``) belongs
to a process that died mid-batch and is reconciled (:func:`reconcile_intents`):

* a create whose record exists (looked up by ``u_unifi_source_id``; a relationship by parent,
  child and type) is audited as ``create`` with outcome ``recovered`` under the dead run's id,
  with the record read back as the after-image, so ``snowkit rollback <that run>`` deletes it;
* an update whose fields now hold the intended values is audited as ``update`` / ``recovered``
  with the before-image kept in the intent, so rollback restores it;
* anything else did not land: the intent is marked ``not_applied``;
* an intent whose write the trail already holds (the crash fell between the audit's fsync and
  the removal here) is only marked ``audited``: nothing is recorded twice.

Reconciled intents stay in the file with their outcome (evidence of the crash), and are
pruned after :data:`KEEP_RESOLVED_DAYS`. Why our own: a dozen lines of ``sqlite3``; a
workflow/saga library would add a dependency for one table.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from snowkit import paths
from snowkit.cmdb.fields import as_str
from snowkit.cmdb.local_db import open_store
from snowkit.cmdb.outbox import is_unreachable_error
from snowkit.cmdb.plan import CI_TABLE, CREATE, LOCATION_TABLE, SOURCE_ID_FIELD
from snowkit.cmdb.relationships import REL_TABLE, find_link
from snowkit.ops.audit import read_audit
from snowkit.servicenow.query import Query

#: Outcome of a write recovered from an intent (the audit trail's ``outcome`` field).
RECOVERED = "recovered"
PENDING = "pending"
NOT_APPLIED = "not_applied"
ALREADY_AUDITED = "audited"
KEEP_RESOLVED_DAYS = 30
#: Actions that relate two CIs (a ``cmdb_rel_ci`` create).
RELATE = "relate"
_UPDATES = frozenset({"update", "retire"})
_LOOKUP_CHUNK = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS intents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    batch INTEGER NOT NULL,
    action TEXT NOT NULL,
    table_name TEXT NOT NULL,
    source_id TEXT,
    sys_id TEXT,
    before TEXT,
    after TEXT,
    created_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    resolved_at TEXT
);
CREATE INDEX IF NOT EXISTS intents_status ON intents (status);
CREATE INDEX IF NOT EXISTS intents_batch ON intents (batch);
"""


def intents_path() -> Path:
    """Next to the outbox: ``.snowkit/intents.sqlite3``."""
    return paths.outbox_path().with_name("intents.sqlite3")


#: What to do with a journal file that cannot be read.
_UNREADABLE = (
    "move it aside (keep it as evidence) and run again; a batch a crashed run committed "
    "without auditing it is then loaded as existing, and no rollback undoes it"
)


@dataclass(frozen=True, slots=True)
class Intent:
    """One write about to be sent (``after`` is the body; ``before`` the before-image)."""

    id: int
    run_id: str
    action: str
    table: str
    source_id: str | None
    sys_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any]
    created_at: str


@dataclass
class ReconcileResult:
    """What :func:`reconcile_intents` found; ``runs`` are the dead runs' ids."""

    recovered: int = 0
    not_applied: int = 0
    already_audited: int = 0
    runs: list[str] = field(default_factory=list)
    stopped: str = ""

    @property
    def total(self) -> int:
        return self.recovered + self.not_applied + self.already_audited

    def to_dict(self) -> dict[str, Any]:
        return {
            "recovered": self.recovered,
            "not_applied": self.not_applied,
            "already_audited": self.already_audited,
            "runs": list(self.runs),
            "stopped": self.stopped,
        }

    def message(self) -> str:
        """One line for the run report (empty when there was nothing to reconcile)."""
        if not self.total:
            return ""
        runs = ", ".join(self.runs)
        return (
            f"{self.recovered} write(s) committed by run(s) {runs} before they were audited "
            "(the run was interrupted, or lost the instance before it knew) were found in the "
            "CMDB and audited now (outcome 'recovered'; `snowkit rollback RUN_ID` undoes "
            f"them); {self.not_applied} intended write(s) had not landed"
        )


class IntentJournal:
    """The SQLite journal of writes in flight (thread-safe).

    Writers run concurrently, so :meth:`intend` group-commits: the first thread to find no
    flush under way writes every batch queued so far in one transaction and one fsync, and the
    others wait for that fsync instead of queuing for one each. :meth:`done` only notes the
    token; the deletes ride along with the next commit (losing them to a crash merely means a
    reconcile that finds the writes already audited).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else intents_path()
        self._lock = threading.Lock()  # guards the connection
        self._state = threading.Condition(threading.Lock())  # guards the group-commit queue
        self._conn = open_store(self.path, _SCHEMA, what="intent journal", advice=_UNREADABLE)
        row = self._conn.execute("SELECT COALESCE(MAX(batch), 0) FROM intents").fetchone()
        self._last_token = int(row[0])
        self._queue: list[tuple[Any, ...]] = []
        self._finished: list[int] = []  # tokens whose deletes ride on the next commit
        self._queued_generation = 1  # the generation the queued rows will be committed as
        self._durable_generation = 0
        self._failed: dict[int, BaseException] = {}
        self._flushing = False

    # -- recording -------------------------------------------------------------------------
    def intend(self, run_id: str, writes: Iterable[Mapping[str, Any]]) -> int | None:
        """Record a batch of writes durably before it is sent; returns the batch token.

        Each write: ``action``, ``table``, ``source_id``, ``sys_id``, ``before``, ``after``.
        Returns None when there is nothing to record.
        """
        now = datetime.now(UTC).isoformat()
        with self._state:
            token = self._last_token + 1
            rows = [
                (
                    run_id,
                    token,
                    w["action"],
                    w["table"],
                    w.get("source_id"),
                    w.get("sys_id"),
                    _dump(w.get("before")),
                    _dump(w.get("after")) or "{}",
                    now,
                )
                for w in writes
            ]
            if not rows:
                return None
            self._last_token = token
            self._queue.extend(rows)
            generation = self._queued_generation
            while self._durable_generation < generation:
                if generation in self._failed:
                    raise self._failed[generation]
                if self._flushing:
                    self._state.wait()
                    continue
                self._lead_flush()
            if generation in self._failed:
                raise self._failed[generation]
        return token

    def _lead_flush(self) -> None:
        """Commit everything queued as one generation (called with ``_state`` held)."""
        rows, self._queue = self._queue, []
        finished, self._finished = self._finished, []
        generation = self._queued_generation
        self._queued_generation += 1
        self._flushing = True
        self._state.release()
        error: BaseException | None = None
        try:
            with self._lock:
                # FULL: this commit fsyncs the WAL, and with it any earlier NORMAL commit.
                self._conn.execute("PRAGMA synchronous=FULL")
                with self._transaction():
                    self._delete_finished(finished)
                    self._conn.executemany(
                        "INSERT INTO intents (run_id, batch, action, table_name, source_id,"
                        " sys_id, before, after, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
        except BaseException as exc:  # every writer of this generation must hear of it
            error = exc
        finally:
            self._state.acquire()
            self._flushing = False
            if error is not None:
                self._failed[generation] = error
                self._finished[:0] = finished
            self._durable_generation = generation
            self._state.notify_all()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One explicit transaction (called with ``_lock`` held).

        The connection is in autocommit mode (``isolation_level=None``), where ``with conn:``
        opens no transaction: every row of an ``executemany`` would be its own commit, each
        with its own WAL fsync under ``synchronous=FULL``. One transaction is one fsync, and a
        batch's intents land all or none.
        """
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _delete_finished(self, tokens: Sequence[int]) -> None:
        if tokens:
            self._conn.executemany(
                "DELETE FROM intents WHERE batch=? AND status=?",
                [(token, PENDING) for token in tokens],
            )

    def done(self, token: int | None) -> None:
        """The batch's outcomes are in the audit trail: forget its intents (lazily)."""
        if token is None:
            return
        with self._state:
            self._finished.append(token)

    def _settle(self) -> None:
        """Apply deferred deletes before reading (called with ``_lock`` held)."""
        with self._state:
            finished, self._finished = self._finished, []
        if finished:
            self._conn.execute("PRAGMA synchronous=NORMAL")
            with self._transaction():
                self._delete_finished(finished)

    # -- reading ---------------------------------------------------------------------------
    def pending(self, *, exclude_run: str | None = None) -> list[Intent]:
        """Intents left by a process that died mid-batch, oldest first."""
        with self._lock:
            self._settle()
            rows = self._conn.execute(
                "SELECT id, run_id, action, table_name, source_id, sys_id, before, after,"
                " created_at FROM intents WHERE status=? ORDER BY id",
                (PENDING,),
            ).fetchall()
        return [
            Intent(
                id=r[0],
                run_id=r[1],
                action=r[2],
                table=r[3],
                source_id=r[4],
                sys_id=r[5],
                before=_load(r[6]),
                after=_load(r[7]) or {},
                created_at=r[8],
            )
            for r in rows
            if r[1] != exclude_run
        ]

    def count(self, status: str = PENDING) -> int:
        with self._lock:
            self._settle()
            row = self._conn.execute(
                "SELECT COUNT(*) FROM intents WHERE status=?", (status,)
            ).fetchone()
        return int(row[0])

    def mark(self, ids: Sequence[int], status: str) -> None:
        """Record how intents were reconciled (kept as evidence; old ones pruned)."""
        if not ids:
            return
        now = datetime.now(UTC)
        cutoff = (now - timedelta(days=KEEP_RESOLVED_DAYS)).isoformat()
        with self._lock:
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._transaction():
                self._conn.executemany(
                    "UPDATE intents SET status=?, resolved_at=? WHERE id=?",
                    [(status, now.isoformat(), i) for i in ids],
                )
                self._conn.execute(
                    "DELETE FROM intents WHERE status!=? AND resolved_at<?", (PENDING, cutoff)
                )

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._settle()
            self._conn.close()

    def __enter__(self) -> IntentJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- reconciling ----------------------------------------------------------------------------


def reconcile_intents(
    client: Any,
    journal: IntentJournal,
    audit: Any,
    *,
    exclude_run: str | None = None,
    audit_path: str | Path | None = None,
) -> ReconcileResult:
    """Resolve the intents of dead runs against the CMDB (see the module docstring).

    Stops (``stopped`` set, intents kept) when the instance cannot be reached.
    """
    result = ReconcileResult()
    pending = journal.pending(exclude_run=exclude_run)
    if not pending:
        return result
    result.runs = sorted({i.run_id for i in pending})
    audited = _audited_writes(result.runs, audit_path or getattr(audit, "path", None))
    try:
        landed = _find_landed(client, pending)
    except Exception as exc:
        if not is_unreachable_error(exc):
            raise
        result.stopped = f"instance unreachable ({type(exc).__name__}); intents kept"
        return result
    outcome: dict[str, list[int]] = {RECOVERED: [], NOT_APPLIED: [], ALREADY_AUDITED: []}
    with _audit_batch(audit):
        for intent in pending:
            row = landed.get(intent.id)
            if row is None:
                outcome[NOT_APPLIED].append(intent.id)
                continue
            sys_id = as_str(row.get("sys_id"))
            action = "update" if intent.action in _UPDATES else "create"
            if (intent.run_id, action, sys_id) in audited:
                outcome[ALREADY_AUDITED].append(intent.id)
                continue
            after = {k: as_str(row.get(k)) for k in intent.after if k in row}
            if audit is not None:
                audit.record(
                    action,
                    REL_TABLE if intent.action == RELATE else intent.table,
                    sys_id,
                    source_id=intent.source_id,
                    before=intent.before if action == "update" else None,
                    after=after or dict(intent.after),
                    outcome=RECOVERED,
                    run_id=intent.run_id,
                )
            outcome[RECOVERED].append(intent.id)
    for status, ids in outcome.items():
        journal.mark(ids, status)
    result.recovered = len(outcome[RECOVERED])
    result.not_applied = len(outcome[NOT_APPLIED])
    result.already_audited = len(outcome[ALREADY_AUDITED])
    return result


def _audit_batch(audit: Any) -> Any:
    return audit.batch() if audit is not None else contextlib.nullcontext()


def _audited_writes(run_ids: Sequence[str], path: Any) -> set[tuple[str, str, str]]:
    """(run_id, create|update, sys_id) of every write the trail already holds for these runs."""
    wanted = set(run_ids)
    seen: set[tuple[str, str, str]] = set()
    for entry in read_audit(path):
        run = entry.get("run_id")
        if run in wanted and entry.get("action") in ("create", "update"):
            seen.add((str(run), str(entry["action"]), str(entry.get("sys_id") or "")))
    return seen


def _find_landed(client: Any, intents: Sequence[Intent]) -> dict[int, dict[str, Any]]:
    """intent id -> the record showing that the write landed (absent: it did not)."""
    landed: dict[int, dict[str, Any]] = {}
    creates: dict[str, list[Intent]] = {}
    for intent in intents:
        if intent.action == RELATE:
            body = {k: as_str(intent.after.get(k)) for k in ("parent", "child", "type")}
            if all(body.values()):
                found = find_link(client, body)
                if found:
                    landed[intent.id] = {"sys_id": found, **body}
        elif intent.action in _UPDATES:
            row = _read_record(client, intent)
            if row is not None and _holds(row, intent.after):
                landed[intent.id] = row
        elif intent.source_id:
            table = LOCATION_TABLE if intent.table == LOCATION_TABLE else CI_TABLE
            creates.setdefault(table, []).append(intent)
    for table, group in creates.items():
        rows = _by_source_id(client, table, [i.source_id or "" for i in group])
        for intent in group:
            candidates = rows.get(intent.source_id or "", [])
            if candidates and intent.action == CREATE:
                mine = _created_by(intent, candidates)
                if mine:
                    landed[intent.id] = mine[-1]
    return landed


#: How far the instance's clock may be behind ours when telling a record made by a create
#: (without a chosen sys_id) from one that was there before it.
CLOCK_SLACK = timedelta(minutes=5)


def _created_by(intent: Intent, candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records carrying the intent's source id that its create can have made: the one
    under the sys_id it chose, else (none chosen: a replayed or IRE create) those created
    since the intent was written. Another record with the source id (someone else's, or one
    a later run adopted) is not claimed: it would be audited as this run's create, and a
    rollback would delete it."""
    chosen = as_str(intent.after.get("sys_id"))
    if chosen:
        return [r for r in candidates if as_str(r.get("sys_id")) == chosen]
    try:
        since = datetime.fromisoformat(intent.created_at) - CLOCK_SLACK
    except ValueError:
        return []
    stamp = since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return [r for r in candidates if as_str(r.get("sys_created_on")) >= stamp]


def _read_record(client: Any, intent: Intent) -> dict[str, Any] | None:
    table = LOCATION_TABLE if intent.table == LOCATION_TABLE else CI_TABLE
    if intent.sys_id:
        return client.get(table, intent.sys_id)
    if intent.source_id:
        rows = _by_source_id(client, table, [intent.source_id]).get(intent.source_id)
        return rows[-1] if rows else None
    return None


def _holds(row: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    """Every field the write set has its intended value (meta fields aside)."""
    compared = [k for k in values if k not in (SOURCE_ID_FIELD, "sys_class_name") and k in row]
    return bool(compared) and all(as_str(row.get(k)) == as_str(values[k]) for k in compared)


def _by_source_id(client: Any, table: str, source_ids: Sequence[str]) -> dict[str, list[dict]]:
    """Source id -> every row carrying it, in the order read."""
    found: dict[str, list[dict]] = {}
    usable = [s for s in source_ids if s and "," not in s and "^" not in s]
    for start in range(0, len(usable), _LOOKUP_CHUNK):
        query = Query().in_(SOURCE_ID_FIELD, usable[start : start + _LOOKUP_CHUNK])
        for row in client.query(table, query):
            found.setdefault(as_str(row.get(SOURCE_ID_FIELD)), []).append(row)
    return found


def _dump(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _load(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


__all__ = [
    "RECOVERED",
    "Intent",
    "IntentJournal",
    "ReconcileResult",
    "intents_path",
    "reconcile_intents",
]
