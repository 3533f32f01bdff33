"""Sending writes: Batch API requests of ``batch_size`` ops, ``workers`` at a time, under the
adaptive limiter, with per-item retries that never duplicate a create.

For each chunk: send; items that landed go to the ledger; an item the instance rejected for
good fails (reported item by item, the run goes on); an item worth another attempt (no answer,
5xx, 429, 409...) is retried — but a create or link whose outcome is unknown is first looked
up (by source id, or by parent/child/type) and adopted if it landed. A missing class table
sends the item again through ``cmdb_ci``. Once the instance cannot be reached, what is left is
queued in the outbox instead.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from snowkit.cmdb.fields import as_str
from snowkit.cmdb.ledger import Landed, RunLedger
from snowkit.cmdb.outbox import is_unreachable_error
from snowkit.cmdb.plan import CI_TABLE, CREATE, LOCATION_TABLE, SOURCE_ID_FIELD
from snowkit.cmdb.progress import bar
from snowkit.cmdb.relationships import find_link
from snowkit.cmdb.writes import (
    RELATE,
    RETRYABLE_STATUSES,
    WriteOp,
    describe,
    forbidden_result,
    is_invalid_table,
    result_error,
    sys_id_of,
    throttled,
    unreachable_result,
    version_of_result,
    whole_batch_failure,
)
from snowkit.servicenow.batch import BatchRequest
from snowkit.servicenow.query import Query

ChunkRunner = Callable[[list[WriteOp]], None]


class BatchRunner:
    """Runs lists of ``WriteOp`` in chunks; see the module docstring.

    ``on_batch(n)`` is called after each finished chunk with the number finished so far.
    """

    def __init__(
        self,
        client: Any,
        ledger: RunLedger,
        *,
        batch_size: int,
        workers: int,
        limiter: Any = None,
        max_attempts: int = 3,
        on_batch: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.batch_size = batch_size
        self.workers = workers
        self.limiter = limiter
        self.max_attempts = max(1, max_attempts)
        self.on_batch = on_batch
        self._clock = clock
        self._keys = itertools.count(1)
        self._batches_done = 0

    def next_key(self) -> str:
        """A unique batch item id for a new op."""
        return str(next(self._keys))

    def run(
        self,
        ops: list[WriteOp],
        desc: str,
        progress: bool | None,
        runner: ChunkRunner | None = None,
    ) -> None:
        """Send ``ops`` (``runner`` sends one chunk: Batch API by default, IRE in IRE mode)."""
        if not ops:
            return
        with self.throttle_feed():
            self._run(ops, desc, progress, runner)

    @contextlib.contextmanager
    def throttle_feed(self) -> Iterator[None]:
        """While this runner sends: let the limiter hear each 429 as it arrives, and lend a
        request's slot out while the client waits to retry it.

        The client retries a throttled request itself, so the batch that finally succeeds
        carries no throttle signal; without this the limiter only cut on latency, later. And
        a request sleeping out a ``Retry-After`` is not at the instance: holding its slot
        meanwhile, the sleepers could fill a freshly cut limit and stall every other batch.
        """
        listeners: list[tuple[str, Any]] = []
        if callable(getattr(self.limiter, "note_throttled", None)):
            listeners.append(("throttle", self.limiter.note_throttled))
        if callable(getattr(self.limiter, "step_out", None)):
            listeners.append(("backoff", self.limiter))
        with contextlib.ExitStack() as stack:
            for kind, listener in listeners:
                add = getattr(self.client, f"add_{kind}_listener", None)
                remove = getattr(self.client, f"remove_{kind}_listener", None)
                if add is not None and remove is not None:
                    add(listener)
                    stack.callback(remove, listener)
            yield

    def _run(
        self,
        ops: list[WriteOp],
        desc: str,
        progress: bool | None,
        runner: ChunkRunner | None,
    ) -> None:
        send = runner or self.run_chunk

        def run(chunk: list[WriteOp]) -> None:
            if self.ledger.forbidden:  # a 403 stopped the run: do not try every other batch
                self.ledger.skip(chunk)
                return
            send(chunk)

        # references to targets written meanwhile: resolve now (the rest stay for the outbox)
        for op in ops:
            for fld, target in list(op.pending_refs.items()):
                sys_id = self.ledger.sys_ids.get(target)
                if sys_id:
                    op.extra[fld] = sys_id
                    del op.pending_refs[fld]
        chunks = [ops[i : i + self.batch_size] for i in range(0, len(ops), self.batch_size)]
        with bar(len(ops), desc, enabled=progress) as pbar:
            if self.workers == 1 or len(chunks) == 1:
                for chunk in chunks:
                    run(chunk)
                    self.after_batch(pbar, len(chunk))
                return
            pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="snowkit-sync")
            try:
                futures = {pool.submit(run, c): len(c) for c in chunks}
                remaining = set(futures)
                while remaining:
                    done, remaining = wait(remaining, return_when=FIRST_EXCEPTION)
                    for fut in done:
                        fut.result()
                        self.after_batch(pbar, futures[fut])
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown(wait=True)

    def after_batch(self, pbar: Any, n: int) -> None:
        pbar.update(n)
        with self.ledger.lock:
            self._batches_done += 1
            done = self._batches_done
        if self.on_batch is not None:
            self.on_batch(done)

    def run_chunk(self, chunk: list[WriteOp]) -> None:
        audit = self.ledger.audit
        if audit is None:
            self._write_chunk(chunk)
            return
        token = self.ledger.intend(chunk)  # write-ahead: a crash mid-batch leaves a trace
        with audit.batch():  # one fsync per batch, not per record
            unsure = self._write_chunk(chunk)
        if not unsure:
            self.ledger.intents_done(token)
        # else the intents stay: the next run (or `snowkit outbox replay`) looks those writes
        # up and audits the ones that landed, as after a crash (``snowkit.cmdb.intents``)

    def _write_chunk(self, chunk: list[WriteOp]) -> bool:
        """Send the chunk, settle every write; True when a write may have landed without this
        run knowing (an attempt whose answer was lost, then the instance went away)."""
        ledger = self.ledger
        pending = list(chunk)
        last_error: dict[str, str] = {}
        unsure: set[str] = set()  # keys of writes whose last attempt has no known outcome
        for attempt in range(self.max_attempts):
            if ledger.forbidden:
                ledger.skip(pending)
                return bool(unsure)
            if ledger.unreachable:
                ledger.queue(pending)
                return bool(unsure)
            if attempt:
                ledger.add("retried", len(pending))
            try:
                results = self._send(pending)
                if results is None:  # the instance went away while this chunk waited
                    (ledger.skip if ledger.forbidden else ledger.queue)(pending)
                    return bool(unsure)
            except Exception as exc:
                unsure.update(op.key for op in pending)  # it may have been sent and committed
                if ledger.absorb_chunk_failure(pending, exc):
                    return True
                if type(exc).__name__ == "AmbiguousWriteError":
                    ledger.add("ambiguous", len(pending))
                message = describe(exc)
                for op in pending:
                    last_error[op.key] = message
                pending = self._settle_unsure(pending, unsure)
                continue
            whole = whole_batch_failure(results, pending)
            if whole is not None:
                if unreachable_result(whole):
                    ledger.mark_unreachable(RuntimeError(whole.error_message))
                    ledger.queue(pending)
                    return whole.ambiguous or bool(unsure)
                if forbidden_result(whole):
                    for op in pending:
                        ledger.forbid(op, result_error(whole))
                    return bool(unsure)
                if whole.ambiguous:
                    ledger.add("ambiguous", len(pending))
            retry: list[WriteOp] = []
            landed: list[Landed] = []
            others: list[WriteOp] = []
            refused: list[tuple[WriteOp, str, int | None]] = []
            for op in pending:
                res = results.get(op.key)
                if res is not None and res.ok:
                    landed.append((op, sys_id_of(res), version_of_result(res), res.result))
                else:
                    others.append(op)
                if res is not None and res.ambiguous:
                    unsure.add(op.key)
                else:  # an answer, or a batch the instance never ran
                    unsure.discard(op.key)
            # the adopted, the failed and the refused (unless unchecked) have known outcomes
            ledger.succeed_many(landed)  # first: what landed is recorded whatever comes next
            for op in others:
                res = results.get(op.key)
                status = None if res is None else res.status_code
                message = result_error(res)
                if forbidden_result(res):
                    ledger.forbid(op, message)
                    continue
                if is_invalid_table(status, message) and op.table != CI_TABLE:
                    ledger.fall_back(op)
                    retry.append(op)
                    continue
                if res is None or not res.serviced or status in RETRYABLE_STATUSES:
                    last_error[op.key] = message
                    retry.append(op)
                    continue
                refused.append((op, message, status))
            if not self._fail_unless_landed(refused):
                unsure.update(op.key for op, _, _ in refused)
            refused = []
            if not retry:
                return bool(unsure)
            if ledger.forbidden:
                ledger.skip(retry)
                return bool(unsure)
            pending = self._settle_unsure(retry, unsure)
            if not pending:
                return bool(unsure)
        for op in pending:
            ledger.fail(op, last_error.get(op.key, "no outcome after retries"), None)
        return bool(unsure)

    def _settle_unsure(self, ops: list[WriteOp], unsure: set[str]) -> list[WriteOp]:
        """:meth:`settle`, and what it adopted has a known outcome."""
        still = self.settle(ops)
        unsure.difference_update({op.key for op in ops} - {op.key for op in still})
        return still

    def _send(self, ops: list[WriteOp]) -> dict[str, Any] | None:
        """The chunk's answers by key; None when, by the time a slot was free, the instance
        was known to be unreachable or to refuse writes (nothing sent: no doomed request)."""
        requests = [
            BatchRequest(
                method=op.method,
                url=op.url,
                body=op.body,
                id=op.key,
                table=op.table,
                source_id=op.source_id,
            )
            for op in ops
        ]
        was_throttled = False
        if self.limiter is not None:
            self.limiter.acquire()
            if self.ledger.unreachable or self.ledger.forbidden:
                getattr(self.limiter, "abandon", self.limiter.release)()
                return None
        started = self._clock()
        try:
            # one request for the chunk (the client's own default item cap would split a
            # chunk above it into requests sent one after the other)
            results = self.client.batch(requests, max_items=max(len(requests), 1))
            was_throttled = any(throttled(r) for r in results)
        except Exception as exc:
            was_throttled = type(exc).__name__ == "RateLimitError"
            raise
        finally:
            if self.limiter is not None:
                self.limiter.release(self._clock() - started, was_throttled)
            self.ledger.add("batches")
        return {str(r.id): r for r in results}

    def settle(self, ops: list[WriteOp]) -> list[WriteOp]:
        """Before retrying: creates and links that landed anyway are adopted; returns what
        still needs sending, in order. Updates are idempotent and simply go again. If the
        lookups cannot reach the instance, nothing is adopted and every op is returned (the
        caller queues them)."""
        creates = [op for op in ops if op.action == CREATE]
        try:
            found = self._lookup_by_source_id(creates) if creates else {}
            links = {op.key: find_link(self.client, op.body) for op in ops if op.action == RELATE}
        except Exception as exc:
            if is_unreachable_error(exc):
                self.ledger.mark_unreachable(exc)
                return ops
            raise
        still: list[WriteOp] = []
        for op in ops:
            landed = found.get(op.source_id or "") if op.action == CREATE else links.get(op.key)
            if landed:
                self._adopt(op, landed)
            else:
                still.append(op)
        return still

    def _fail_unless_landed(self, refused: list[tuple[WriteOp, str, int | None]]) -> bool:
        """Refused writes are failures, except a create whose chosen sys_id already holds
        our record: a retry after an unclear first attempt that had in fact landed (the
        lookup before the retry ran before that attempt was committed). False when that
        could not be checked (the instance became unreachable)."""
        chosen = {
            op.extra["sys_id"]: op
            for op, _, _ in refused
            if op.action == CREATE and op.extra.get("sys_id") and op.source_id
        }
        found: set[str] = set()
        unchecked = False
        if chosen:
            try:
                found = self._landed_under(list(chosen.values()))
            except Exception as exc:
                if not is_unreachable_error(exc):
                    raise
                self.ledger.mark_unreachable(exc)
                unchecked = True
        for op, message, status in refused:
            if op.extra.get("sys_id") in found:
                self._adopt(op, op.extra["sys_id"])
            elif unchecked and op.extra.get("sys_id") in chosen:
                # an earlier attempt may have landed after all: no definite answer to report
                self.ledger.fail(
                    op, f"{message} (whether an earlier attempt landed could not be checked: "
                    "the instance became unreachable; the next run finds out)", None,
                )  # fmt: skip
            else:
                self.ledger.fail(op, message, status)
        return not unchecked

    def _landed_under(self, creates: list[WriteOp]) -> set[str]:
        """The chosen sys_ids of ``creates`` that hold a record with the create's source id."""
        by_table: dict[str, list[WriteOp]] = {}
        for op in creates:
            table = LOCATION_TABLE if op.table == LOCATION_TABLE else CI_TABLE
            by_table.setdefault(table, []).append(op)
        found: set[str] = set()
        for table, ops in by_table.items():
            wanted = {op.extra["sys_id"]: op.source_id for op in ops}
            for start in range(0, len(ops), 100):
                ids = [op.extra["sys_id"] for op in ops[start : start + 100]]
                query = Query().in_("sys_id", ids)
                for row in self.client.query(table, query, fields=["sys_id", SOURCE_ID_FIELD]):
                    sys_id = as_str(row.get("sys_id"))
                    if wanted.get(sys_id) == as_str(row.get(SOURCE_ID_FIELD)):
                        found.add(sys_id)
        return found

    def _adopt(self, op: WriteOp, sys_id: str) -> None:
        """A write whose outcome was unknown did land: count it (its version is unknown)."""
        with self.ledger.lock:
            self.ledger.stats.adopted_after_ambiguity += 1
            self.ledger.state_doubt = "a write was settled by lookup"
        self.ledger.succeed(op, sys_id, "")

    def _lookup_by_source_id(self, ops: list[WriteOp]) -> dict[str, str]:
        """Source id -> sys_id of the creates in ``ops`` that landed. Of several records with
        the source id, the one under the sys_id the create chose is ours; another one found
        without it (the instance kept its own id, or someone else's) is adopted as before."""
        rows: dict[str, list[str]] = {}
        by_table: dict[str, list[str]] = {}
        for op in ops:
            table = LOCATION_TABLE if op.table == LOCATION_TABLE else CI_TABLE
            if op.source_id:
                by_table.setdefault(table, []).append(op.source_id)
        for table, sids in by_table.items():
            for start in range(0, len(sids), 100):
                chunk = [s for s in sids[start : start + 100] if "," not in s and "^" not in s]
                if not chunk:
                    continue
                query = Query().in_(SOURCE_ID_FIELD, chunk)
                for row in self.client.query(table, query, fields=["sys_id", SOURCE_ID_FIELD]):
                    rows.setdefault(as_str(row.get(SOURCE_ID_FIELD)), []).append(
                        as_str(row.get("sys_id"))
                    )
        found: dict[str, str] = {}
        for op in ops:
            ids = rows.get(op.source_id or "")
            if ids:
                chosen = op.extra.get("sys_id")
                found[op.source_id or ""] = chosen if chosen in ids else ids[-1]
        return found
