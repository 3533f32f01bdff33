"""``ServiceNowAPIClient``: the Table, Batch and IRE APIs behind one resilient request path.

Every request goes through :meth:`ServiceNowAPIClient._execute_request`, once:

    retry (RetryManager: full jitter, Retry-After, deadline, shared budget)
      └─ per attempt: rate-limit pacing → circuit breaker → auth fallback → HTTP
           └─ metrics (record_request / record_error / record_rate_limit), a ``request`` log
              line, and an error context for anything that is not a success

Decisions worth knowing (the "why" behind the behaviour):

- **Which failures are retried.** GET/HEAD/PUT/DELETE are retried on network errors and 5xx.
  POST and PATCH are retried only when the request provably did not run: the connection was
  never made, a 429 (the rate limiter rejects before processing), a 401 answered by the auth
  layer. A 5xx on a POST/PATCH is *not* proof of a rollback on ServiceNow: records are
  committed as the insert runs, business rules after it can still fail the transaction with a
  500, a quota cancellation ("maximum execution time exceeded") stops a transaction midway
  without undoing it, and a 502/504 from the load balancer says nothing about the node behind
  it. So a 5xx on a write is an :class:`AmbiguousWriteError` by default, like a read timeout
  or a connection dropped after sending (``retry_write_statuses`` can opt specific statuses
  back in). The error names the table and the record's source key and tells the caller to look
  the record up by that key before trying again; the client never re-sends it blindly.
  The IRE endpoint is treated as idempotent: identification matches the same CI on a resend.
- **DELETE retried after a lost answer** may find the record gone: a 404 on a retry attempt
  of a DELETE counts as success.
- **Authentication.** The methods from ``credentials.auth_methods()`` (API key → OAuth → basic,
  as configured) are tried in order; a 401 refreshes the method once (``refresh()``: a new
  OAuth token), then moves to the next method, logs which one is in use (never its value) and
  re-sends (a 401 means nothing ran). When all are rejected: :class:`AuthenticationError`
  with guidance.
- **Thread safety.** One pooled ``requests.Session``; per-call state lives in locals; the auth
  state is an immutable snapshot swapped under a lock.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson
import requests

from snowkit.ops.breaker import CircuitBreaker, CircuitOpenError
from snowkit.ops.errors import (
    AmbiguousWriteError,
    AuthenticationError,
    ConfigurationError,
    ErrorCategory,
    ErrorHandler,
    ErrorSeverity,
    HibernatingInstanceError,
    NetworkError,
    OperationalError,
    make_context,
)
from snowkit.ops.logging import StructuredLogger, correlation_scope, current_correlation_id
from snowkit.ops.metrics import MetricsCollector
from snowkit.ops.retry import RetryBudget, RetryManager, RetryPolicy
from snowkit.servicenow import batch as batch_api
from snowkit.servicenow.batch import BatchRequest, BatchResult
from snowkit.servicenow.hibernation import GUIDANCE as HIBERNATION_GUIDANCE
from snowkit.servicenow.hibernation import is_hibernation_page, is_unexpected_html
from snowkit.servicenow.limiter import RateLimitPacer
from snowkit.servicenow.paging import KEY_FIELD, Pager, PagingMode, split_groups
from snowkit.servicenow.query import Query
from snowkit.servicenow.transport import (
    Timeouts,
    build_session,
    normalize_instance_url,
    request_was_sent,
    resolve_proxies,
    resolve_verify,
)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
TABLE_NAME = re.compile(r"^[a-z0-9_]{1,80}$")
SYS_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_PAGE_SIZE = 500
_PING_POLICY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class _AuthState:
    """One prepared auth method: what to attach to each request (never logged)."""

    index: int
    name: str
    auth: Any = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)  # may hold x-sn-apikey / Authorization
    session: requests.Session | None = field(repr=False)


@dataclass(frozen=True)
class _Call:
    """Everything about one logical request (shared by its attempts, never stored on self)."""

    method: str
    url: str
    params: Mapping[str, Any] | None
    body: bytes | None
    table: str | None
    operation: str
    idempotent: bool
    source_id: str | None
    allow_404_on_retry: bool
    ok_statuses: frozenset[int]


def _cfg(obj: Any, name: str, default: Any = None) -> Any:
    value = getattr(obj, name, None) if obj is not None else None
    return default if value is None else value


class ServiceNowAPIClient:
    """A thread-safe ServiceNow REST client with retries, a breaker, metrics, logs and audit.

    ``credentials`` is a ``CredentialManager`` (anything with ``auth_methods()``); ``config``
    an ``OperationalConfig`` (its ``servicenow``, ``retry`` and ``circuit_breaker`` sections are
    read when present). Every collaborator can be injected; the defaults are built from the
    config. ``sleep``/``clock``/``wall_clock`` drive every wait and measurement (tests pass
    fakes). ``hibernation_wait_seconds`` > 0 keeps re-checking a sleeping instance every
    ``hibernation_poll_seconds`` for that long before giving up. ``retry_write_statuses``
    lists 5xx statuses after which a POST/PATCH may be re-sent (default: none; see above).
    """

    def __init__(
        self,
        instance_url: str,
        credentials: Any,
        config: Any = None,
        *,
        metrics: MetricsCollector | None = None,
        logger: StructuredLogger | None = None,
        audit: Any = None,
        error_handler: ErrorHandler | None = None,
        retry_manager: RetryManager | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        verify: bool | str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        hibernation_wait_seconds: float = 0.0,
        hibernation_poll_seconds: float = 30.0,
        retry_write_statuses: Sequence[int] = (),
    ) -> None:
        sn = _cfg(config, "servicenow")
        self.instance_url = normalize_instance_url(instance_url)
        self.credentials = credentials
        self.config = config
        self.workers = int(_cfg(sn, "workers", 8))
        self.page_size = int(_cfg(sn, "page_size", DEFAULT_PAGE_SIZE))
        self.batch_size = int(_cfg(sn, "batch_size", batch_api.DEFAULT_MAX_ITEMS))
        self.timeouts = Timeouts(
            connect=float(_cfg(sn, "connect_timeout", 10.0)),
            read=float(_cfg(sn, "read_timeout", 60.0)),
        )
        chosen_verify = verify if verify is not None else _cfg(sn, "verify", None)
        self.verify = resolve_verify(chosen_verify, _cfg(sn, "ca_bundle", None))
        self.proxies = resolve_proxies(self.instance_url, _cfg(sn, "proxies", None))
        self._session = build_session(
            self.instance_url, workers=self.workers, verify=self.verify, proxies=self.proxies
        )
        self._sleep = sleep
        self._clock = clock
        self.hibernation_wait_seconds = float(hibernation_wait_seconds)
        self.hibernation_poll_seconds = max(0.001, float(hibernation_poll_seconds))
        self.retry_write_statuses = frozenset(int(s) for s in retry_write_statuses)

        self.metrics = metrics if metrics is not None else MetricsCollector()
        self.logger = logger or StructuredLogger("snowkit.servicenow")
        self.audit = audit
        self.error_handler = error_handler or ErrorHandler()
        self.retry_manager = retry_manager or RetryManager(
            RetryPolicy.from_config(_cfg(config, "retry")) if config is not None else None,
            budget=RetryBudget(clock=clock),
            sleep=sleep,
            clock=clock,
            wall_clock=wall_clock,
        )
        self.retry_manager.add_hook(self._on_retry)
        cb = _cfg(config, "circuit_breaker")
        self.circuit_breaker = circuit_breaker or CircuitBreaker(
            failure_threshold=int(_cfg(cb, "failure_threshold", 5)),
            recovery_timeout_seconds=float(_cfg(cb, "recovery_timeout_seconds", 60)),
            clock=clock,
        )
        if hasattr(self.metrics, "watch_breaker"):
            self.metrics.watch_breaker(self.circuit_breaker)
        self.pacer = RateLimitPacer(wall_clock=wall_clock)

        self._auth_lock = threading.Lock()
        self._methods = list(credentials.auth_methods()) if credentials is not None else []
        self._auth: _AuthState | None = None
        self._auth_confirmed = False
        if self._methods:
            self._auth = self._first_usable_auth(0)

    @classmethod
    def from_config(cls, config: Any, credentials: Any, **kwargs: Any) -> ServiceNowAPIClient:
        """Build from an ``OperationalConfig`` and a ``CredentialManager``.

        The instance comes from ``config.servicenow.instance``, else from the credentials
        (``SERVICENOW_INSTANCE``). ``"embedded"`` needs a running sandbox: start it with
        ``snowkit.sandbox.Sandbox.start()`` and pass its ``url``.
        """
        instance = _cfg(_cfg(config, "servicenow"), "instance", None)
        if not instance or instance == "embedded":
            from_credentials = credentials.instance_url() if credentials is not None else None
            if from_credentials:
                instance = from_credentials
            elif instance == "embedded":
                raise ConfigurationError(
                    "servicenow.instance is 'embedded' but no embedded instance is running",
                    guidance=(
                        "start it with snowkit.sandbox.Sandbox.start() (or `snowkit sandbox "
                        "serve`) and pass its url as the instance"
                    ),
                )
        return cls(str(instance or ""), credentials, config, **kwargs)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the pooled connections (and any token session)."""
        self._session.close()
        state = self._auth
        if state is not None and state.session is not None:
            state.session.close()

    def __enter__(self) -> ServiceNowAPIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServiceNowAPIClient({self.instance_url!r})"

    @property
    def auth_method(self) -> str | None:
        """The name of the auth method in use (``api_key``, ``oauth``, ``basic``)."""
        state = self._auth
        return state.name if state is not None else None

    # ------------------------------------------------------------------ Table API
    def get(
        self,
        table: str,
        sys_id: str,
        fields: Sequence[str] | None = None,
        display_value: bool | str = False,
    ) -> dict[str, Any] | None:
        """One record by sys_id, or None when it does not exist (or is hidden by an ACL)."""
        response = self._execute_request(
            "GET",
            _table_path(table, sys_id),
            params=self._read_params(fields, display_value),
            table=table,
            operation="get",
            ok_statuses=frozenset({404}),  # "not there" is an answer, not an error
        )
        return None if response.status_code == 404 else _result(response)

    def query(
        self,
        table: str,
        query: str | Query = "",
        fields: Sequence[str] | None = None,
        page_size: int | None = None,
        order_by: str = KEY_FIELD,
        display_value: bool | str = False,
        limit: int | None = None,
        *,
        paging: PagingMode | str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Records matching ``query``, page by page (a generator: nothing is fetched until used).

        Keyset paging on sys_id by default: no duplicates and no misses of records that exist
        for the whole scan, however many others are inserted or deleted meanwhile (see
        :mod:`snowkit.servicenow.paging`). ``order_by`` other than ``sys_id`` (or ordering in the
        Query) switches to offset paging, which is only stable on a quiet table. ``order_by``
        may start with ``-`` for descending.
        """
        _check_table(table)
        encoded = str(query or "")
        descending = order_by.startswith("-")
        order_field = order_by.lstrip("-")
        ordering = query.ordering if isinstance(query, Query) else _order_of(encoded)
        if paging is None:
            keyset = (
                order_field == KEY_FIELD
                and not descending
                and ordering in ([], [(KEY_FIELD, False)])
            )
            mode = PagingMode.KEYSET if keyset else PagingMode.OFFSET
        else:
            mode = PagingMode(paging)
        pager = Pager(
            encoded,
            page_size or self.page_size,
            mode=mode,
            order_by=order_field,
            descending=descending,
            limit=limit,
        )
        wanted = _fields_for(fields, query)
        post_filter = query.matches_exact if isinstance(query, Query) else None
        return self._iterate(table, pager, wanted, display_value, post_filter)

    def _iterate(
        self,
        table: str,
        pager: Pager,
        fields: list[str] | None,
        display_value: bool | str,
        post_filter: Callable[[Mapping[str, Any]], bool] | None,
    ) -> Iterator[dict[str, Any]]:
        while (request := pager.next_request()) is not None:
            params = self._read_params(fields, display_value)
            params.update(
                sysparm_query=request.query,
                sysparm_limit=request.limit,
                sysparm_suppress_pagination_header="true",
            )
            if pager.mode is PagingMode.OFFSET:
                params["sysparm_offset"] = request.offset
            else:
                params["sysparm_no_count"] = "true"
            response = self._execute_request(
                "GET", _table_path(table), params=params, table=table, operation="query"
            )
            rows = _result(response) or []
            pager.advance(request, rows)
            for row in rows:
                if post_filter is not None and not post_filter(row):
                    continue
                pager.count_returned(1)
                yield row
                if pager.limit is not None and pager.returned >= pager.limit:
                    return

    def count(self, table: str, query: str | Query = "") -> int:
        """How many records match: one request reading ``X-Total-Count``.

        A Query with :meth:`Query.eq_exact` filters cannot be counted by the server exactly;
        it is counted by scanning sys_ids instead.
        """
        if isinstance(query, Query) and query.exact_filters:
            return sum(1 for _ in self.query(table, query, fields=[KEY_FIELD], page_size=1000))
        params = {
            "sysparm_query": str(query or ""),
            "sysparm_limit": 1,
            "sysparm_fields": KEY_FIELD,
            "sysparm_suppress_pagination_header": "true",
        }
        response = self._execute_request(
            "GET", _table_path(table), params=params, table=table, operation="count"
        )
        total = response.headers.get("X-Total-Count")
        if total is None:
            raise OperationalError(
                f"the instance sent no X-Total-Count for {table}; cannot count",
                operation="count",
            )
        return int(total)

    def create(
        self, table: str, values: Mapping[str, Any], *, source_id: str | None = None
    ) -> dict[str, Any]:
        """Insert one record; returns it as stored. Audited (outcome ambiguous if unknown)."""
        with _scope():
            try:
                response = self._execute_request(
                    "POST",
                    _table_path(table),
                    params={"sysparm_exclude_reference_link": "true"},
                    json=dict(values),
                    table=table,
                    operation="create",
                    source_id=source_id,
                )
            except OperationalError as exc:
                self._audit("create", table, None, source_id, None, dict(values), exc)
                raise
            record = _result(response) or {}
            self._audit("create", table, _plain(record.get(KEY_FIELD)), source_id, None, record)
            return record

    def update(
        self,
        table: str,
        sys_id: str,
        values: Mapping[str, Any],
        *,
        before: Mapping[str, Any] | None = None,
        source_id: str | None = None,
    ) -> dict[str, Any]:
        """PATCH one record; returns it as stored. The before image is fetched only if audited."""
        with _scope():
            if before is None and self.audit is not None:
                before = self.get(table, sys_id)
            try:
                response = self._execute_request(
                    "PATCH",
                    _table_path(table, sys_id),
                    params={"sysparm_exclude_reference_link": "true"},
                    json=dict(values),
                    table=table,
                    operation="update",
                    source_id=source_id or sys_id,
                )
            except OperationalError as exc:
                self._audit("update", table, sys_id, source_id, before, dict(values), exc)
                raise
            record = _result(response) or {}
            self._audit("update", table, sys_id, source_id, before, record)
            return record

    def delete(
        self,
        table: str,
        sys_id: str,
        *,
        before: Mapping[str, Any] | None = None,
        source_id: str | None = None,
    ) -> None:
        """DELETE one record (RecordNotFoundError if it was not there to begin with)."""
        with _scope():
            if before is None and self.audit is not None:
                before = self.get(table, sys_id)
            try:
                self._execute_request(
                    "DELETE",
                    _table_path(table, sys_id),
                    table=table,
                    operation="delete",
                    source_id=source_id or sys_id,
                    allow_404_on_retry=True,
                )
            except OperationalError as exc:
                self._audit("delete", table, sys_id, source_id, before, None, exc)
                raise
            self._audit("delete", table, sys_id, source_id, before, None)

    # ------------------------------------------------------------------ Batch and IRE
    def batch(
        self,
        requests_: Sequence[BatchRequest],
        *,
        max_rounds: int = 3,
        max_batch_bytes: int = batch_api.DEFAULT_MAX_BATCH_BYTES,
        max_items: int | None = None,
    ) -> list[BatchResult]:
        """Run many sub-requests through the Batch API; one result per request, in order.

        Chunked under the payload cap; unserviced items are resent up to ``max_rounds`` in
        total; failed items carry the ServiceNow error message/detail and an ErrorContext.
        A chunk whose batch request fails as a whole (breaker open, retries exhausted, answer
        lost) does not raise: its items come back with ``ok`` False, the error context, and
        ``ambiguous`` True when writes in it may have been applied. Writes are audited.
        """
        items = batch_api.assign_ids(requests_)
        results: dict[str, BatchResult] = {}
        for chunk_items in batch_api.chunk(
            items, max_bytes=max_batch_bytes, max_items=max_items or self.batch_size
        ):
            chunk_results = self._run_chunk(chunk_items, max_rounds)
            with self._audit_batch():  # one fsync and checkpoint per chunk, not per record
                for result in chunk_results:
                    results[result.id] = result
                    self._audit_batch_item(result)
        return [results[item.id] for item in items]

    def _run_chunk(
        self, chunk_items: list[batch_api.EncodedItem], max_rounds: int
    ) -> list[BatchResult]:
        done_all: list[BatchResult] = []
        pending = chunk_items
        rounds = 0
        while pending and rounds < max_rounds:
            rounds += 1
            try:
                response = self._execute_request(
                    "POST",
                    batch_api.BATCH_PATH,
                    json=batch_api.envelope(pending),
                    operation="batch",
                    idempotent=batch_api.is_idempotent(pending),
                    source_id=",".join(str(i.request.source_id or i.id) for i in pending[:20]),
                )
            except OperationalError as exc:
                ambiguous = isinstance(exc, AmbiguousWriteError)
                return done_all + [
                    batch_api.failed_result(item, exc.context, ambiguous=ambiguous)
                    for item in pending
                ]
            done, pending = batch_api.decode_response(
                orjson.loads(response.content or b"{}"), pending
            )
            for result in done:
                if not result.ok:
                    result.error = self._item_error(result)
            done_all.extend(done)
            if pending:
                self.logger.event(
                    "batch_unserviced", level="WARNING", count=len(pending), round=rounds
                )
        return done_all + [batch_api.unserviced_result(item, rounds) for item in pending]

    def _audit_batch(self) -> Any:
        batch = getattr(self.audit, "batch", None)
        return batch() if callable(batch) else contextlib.nullcontext()

    def _audit_batch_item(self, result: BatchResult) -> None:
        target = batch_api.write_target(result.request) if self.audit is not None else None
        if target is None:
            return
        action, table, sys_id = target
        after = result.result if result.ok and isinstance(result.result, dict) else None
        if action == "delete":
            after = None
        elif after is None:
            body = result.request.body
            after = dict(body) if isinstance(body, Mapping) else None
        sys_id = sys_id or (_plain(after.get(KEY_FIELD)) if after and result.ok else None)
        outcome = "success" if result.ok else ("ambiguous" if result.ambiguous else "failure")
        self.audit.record(
            action,
            table,
            sys_id,
            source_id=result.request.source_id,
            before=dict(result.request.before) if result.request.before else None,
            after=after,
            outcome=outcome,
            correlation_id=current_correlation_id(),
        )

    def _item_error(self, result: BatchResult) -> Any:
        fake = requests.Response()
        fake.status_code = result.status_code or 0
        fake._content = result.raw_body
        fake.headers.update(result.headers)
        fake.headers.setdefault("Content-Type", "application/json")
        fake.url = self.instance_url + result.request.url
        return self.error_handler.handle_servicenow_error(fake, f"batch {result.request.method}")

    def identify_reconcile(
        self, payload: Mapping[str, Any], data_source: str = "ServiceNow", dry_run: bool = False
    ) -> dict[str, Any]:
        """POST to the Identification and Reconciliation API; returns its ``result``.

        Treated as idempotent: identification matches the same CI when a payload is resent.
        """
        path = "/api/now/identifyreconcile" + ("/query" if dry_run else "")
        response = self._execute_request(
            "POST",
            path,
            params={"sysparm_data_source": data_source},
            json=dict(payload),
            table="identifyreconcile",
            operation="identify_reconcile",
            idempotent=True,
        )
        return _result(response) or {}

    def ping(self) -> float:
        """One cheap authenticated GET; its round trip in milliseconds.

        Raises HibernatingInstanceError / AuthenticationError / NetworkError for the health check.
        """
        started = time.perf_counter()
        self._execute_request(
            "GET",
            "/api/now/table/sys_user",
            params={"sysparm_limit": 1, "sysparm_fields": KEY_FIELD},
            table="sys_user",
            operation="ping",
            policy=_PING_POLICY,
        )
        return (time.perf_counter() - started) * 1000.0

    # ------------------------------------------------------------------ the request path
    def _execute_request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        table: str | None = None,
        operation: str | None = None,
        idempotent: bool | None = None,
        source_id: str | None = None,
        allow_404_on_retry: bool = False,
        ok_statuses: frozenset[int] = frozenset(),
        policy: RetryPolicy | None = None,
    ) -> requests.Response:
        """The single path every request takes: retry → breaker → auth → HTTP → observe."""
        verb = method.upper()
        call = _Call(
            method=verb,
            url=self.instance_url + path,
            params=params,
            body=orjson.dumps(json) if json is not None else None,
            table=table,
            operation=operation or f"{verb} {table or path}",
            idempotent=(verb in IDEMPOTENT_METHODS) if idempotent is None else idempotent,
            source_id=source_id,
            allow_404_on_retry=allow_404_on_retry,
            ok_statuses=ok_statuses,
        )
        attempt = 0

        def one_attempt() -> requests.Response:
            nonlocal attempt
            attempt += 1
            self._pace()
            number = attempt
            return self.circuit_breaker.call(lambda: self._attempt(call, number), call.operation)

        deadline = self._clock() + self.hibernation_wait_seconds
        sleeping: HibernatingInstanceError | None = None
        while True:
            attempt = 0
            try:
                return self.retry_manager.execute_with_retry(one_attempt, policy, call.operation)
            except (HibernatingInstanceError, CircuitOpenError) as exc:
                if isinstance(exc, HibernatingInstanceError):
                    sleeping = exc
                elif sleeping is None:
                    raise  # the breaker opened for another reason: not ours to wait out
                if self._clock() + self.hibernation_poll_seconds > deadline:
                    raise sleeping from None
                self.logger.event(
                    "hibernation_wait",
                    level="WARNING",
                    operation=call.operation,
                    recheck_in_s=self.hibernation_poll_seconds,
                )
                self._sleep(self.hibernation_poll_seconds)

    def _pace(self) -> None:
        delay = self.pacer.delay()
        if delay > 0:
            self.logger.event("rate_limit_pacing", delay_s=round(delay, 3))
            self._sleep(delay)

    def _attempt(self, call: _Call, attempt: int) -> requests.Response:
        """One HTTP exchange (with auth fallback), observed and classified."""
        started = time.perf_counter()
        try:
            response = self._send_authenticated(call, attempt)
        except requests.RequestException as exc:
            duration = (time.perf_counter() - started) * 1000.0
            self.metrics.record_error(call.method, call.operation, exc, call.table, duration)
            self._log_request(call, attempt, None, duration, error=type(exc).__name__)
            raise self._network_error(call, exc, attempt) from exc
        duration = (time.perf_counter() - started) * 1000.0
        status = response.status_code
        self.metrics.record_request(call.method, call.operation, status, duration, call.table)
        self.pacer.observe(response.headers)
        ok = status < 400 or status in call.ok_statuses
        self._log_request(call, attempt, status, duration, ok=ok)
        if status < 300:
            if is_unexpected_html(response):
                raise self._html_error(call, response)
            return response
        if status in call.ok_statuses:
            return response
        if status == 404 and call.allow_404_on_retry and attempt > 1:
            return response  # an earlier attempt did the delete; its answer was lost
        raise self._response_error(call, response)

    def _send_authenticated(self, call: _Call, attempt: int) -> requests.Response:
        """Send; on 401 refresh (OAuth, once) or fall back to the next method and re-send."""
        state = self._auth
        refreshed: set[int] = set()
        headers = {"Content-Type": "application/json"} if call.body is not None else None
        while True:
            extra = dict(headers or {})
            auth = None
            if state is not None:
                extra.update(state.headers)
                auth = state.auth
            try:
                response: requests.Response | None = self._session.request(
                    call.method,
                    call.url,
                    params=call.params,
                    data=call.body,
                    headers=extra or None,
                    auth=auth,
                    timeout=self.timeouts.for_attempt(attempt),
                )
            except AuthenticationError as exc:  # e.g. a lazy OAuth token fetch was refused
                if state is None:
                    raise
                self.logger.log_credential_access(state.name, False, exc.context.error_message)
                response = None
            if response is not None and (response.status_code != 401 or state is None):
                if state is not None and not self._auth_confirmed and response.status_code < 400:
                    self._auth_confirmed = True
                    self.logger.log_credential_access(state.name, True)
                return response
            assert state is not None
            if response is not None:
                elapsed_ms = response.elapsed.total_seconds() * 1000.0
                self.metrics.record_request(
                    call.method, call.operation, 401, elapsed_ms, call.table
                )
                self.logger.log_credential_access(state.name, False, "rejected with HTTP 401")
                response.close()
            refresh = state.index not in refreshed and callable(
                getattr(self._methods[state.index], "refresh", None)
            )
            refreshed.add(state.index)
            next_state = self._advance_auth(state, refresh=refresh)
            if next_state is None:
                raise self._auth_exhausted(call)
            state = next_state

    # ------------------------------------------------------------------ auth state
    def _prepare(self, index: int) -> _AuthState:
        method = self._methods[index]
        scratch = requests.Session()
        scratch.trust_env = False
        scratch.verify = self.verify
        scratch.proxies = dict(self.proxies)
        scratch.headers.clear()
        method.apply(scratch, self.instance_url)
        return _AuthState(
            index=index,
            name=str(getattr(method, "name", type(method).__name__)),
            auth=scratch.auth,
            headers=dict(scratch.headers),
            session=scratch,
        )

    def _first_usable_auth(self, start: int) -> _AuthState | None:
        for index in range(start, len(self._methods)):
            try:
                return self._prepare(index)
            except Exception as exc:  # e.g. an OAuth token fetch that failed
                name = str(getattr(self._methods[index], "name", index))
                self.logger.log_credential_access(name, False, type(exc).__name__)
        return None

    def _advance_auth(self, failed: _AuthState, *, refresh: bool) -> _AuthState | None:
        with self._auth_lock:
            current = self._auth
            if current is not None and current is not failed and current.index >= failed.index:
                return current  # another thread already moved on
            new: _AuthState | None = None
            if refresh:  # e.g. an expired OAuth token: fetch a new one once, same method
                try:
                    if self._methods[failed.index].refresh():
                        new = self._prepare(failed.index)
                except Exception as exc:
                    self.logger.log_credential_access(failed.name, False, type(exc).__name__)
                    new = None
            if new is None:
                new = self._first_usable_auth(failed.index + 1)
            if new is None:
                return None
            if new.index == failed.index:
                self.logger.event("auth_refreshed", method=new.name)
            else:
                self.logger.event("auth_fallback", level="WARNING", old=failed.name, new=new.name)
            self._auth = new
            self._auth_confirmed = False
            return new

    def _auth_exhausted(self, call: _Call) -> AuthenticationError:
        names = [str(getattr(m, "name", m)) for m in self._methods] or ["none"]
        ctx = self.error_handler.handle_authentication_error(
            names[0] if len(names) == 1 else "any configured method",
            {
                "reason": "ServiceNow rejected every configured credential "
                f"(tried: {', '.join(names)})",
                "http_status": 401,
                "tried_methods": names,
                "operation": call.operation,
            },
        )
        self.logger.log_error(ctx)
        return AuthenticationError(ctx)

    # ------------------------------------------------------------------ classification
    def _network_error(
        self, call: _Call, exc: requests.RequestException, attempt: int
    ) -> OperationalError:
        sent = request_was_sent(exc)
        if sent and not call.idempotent:
            return self._ambiguous(call, f"no answer arrived ({type(exc).__name__})", None)
        tls = isinstance(exc, requests.exceptions.SSLError)
        details: dict[str, Any] = {
            "method": call.method,
            "table": call.table,
            "request_sent": sent,
            "attempt": attempt,
            "exception_type": type(exc).__name__,
        }
        if tls:
            details["hint"] = (
                "TLS verification failed: set servicenow.ca_bundle or REQUESTS_CA_BUNDLE"
            )
        ctx = make_context(
            f"{call.method} {call.table or call.url} failed: {type(exc).__name__}: {exc}",
            operation=call.operation,
            category=ErrorCategory.NETWORK,
            severity=ErrorSeverity.HIGH if tls else ErrorSeverity.MEDIUM,
            retryable=not tls,
            details=details,
        )
        self.error_handler.record(ctx)
        return NetworkError(ctx)

    def _ambiguous(self, call: _Call, why: str, status: int | None) -> AmbiguousWriteError:
        key = call.source_id or "(none given)"
        what = f"{call.method} {call.table or call.url}"
        ctx = make_context(
            f"{what} for source key {key!r}: {why}. The write may or may not have been applied; "
            "snowkit did not resend it.",
            operation=call.operation,
            category=ErrorCategory.AMBIGUOUS_WRITE,
            severity=ErrorSeverity.HIGH,
            retryable=False,
            http_status=status,
            details={"method": call.method, "table": call.table, "source_id": call.source_id},
            guidance=(
                f"Look the record up in {call.table or 'the table'} by its source key {key!r} "
                "(the field your load keeps it in, e.g. serial_number or correlation_id) before "
                "retrying: create it only if it is missing, compare it if it is there."
            ),
        )
        self.error_handler.record(ctx)
        self.logger.log_error(ctx)
        return AmbiguousWriteError(ctx)

    def _response_error(self, call: _Call, response: requests.Response) -> OperationalError:
        status = response.status_code
        if (
            status >= 500
            and not call.idempotent
            and status not in self.retry_write_statuses
            and not is_hibernation_page(response)
        ):
            return self._ambiguous(call, f"the instance answered HTTP {status}", status)
        ctx = self.error_handler.handle_servicenow_error(response, call.operation)
        if call.table and "table" not in ctx.details:
            ctx.details["table"] = call.table
        if status == 429:
            self.metrics.record_rate_limit(call.operation, ctx.details.get("retry_after"))
        if ctx.category is ErrorCategory.HIBERNATING:
            ctx.guidance = HIBERNATION_GUIDANCE
        if status >= 500 and call.idempotent is False and status in self.retry_write_statuses:
            ctx.retryable = True
        try:
            self.error_handler.raise_for(ctx)
        except OperationalError as exc:
            if ctx.severity in (ErrorSeverity.HIGH, ErrorSeverity.CRITICAL):
                self.logger.log_error(ctx)
            return exc
        raise AssertionError("raise_for returned")  # pragma: no cover

    def _html_error(self, call: _Call, response: requests.Response) -> OperationalError:
        if is_hibernation_page(response):
            ctx = make_context(
                f"{self.instance_url} answered {call.operation} with its hibernation page",
                operation=call.operation,
                category=ErrorCategory.HIBERNATING,
                severity=ErrorSeverity.CRITICAL,
                http_status=response.status_code,
                guidance=HIBERNATION_GUIDANCE,
            )
            self.error_handler.record(ctx)
            return HibernatingInstanceError(ctx)
        ctx = make_context(
            f"{self.instance_url} answered {call.operation} with an HTML page instead of JSON",
            operation=call.operation,
            category=ErrorCategory.SERVICENOW_API,
            severity=ErrorSeverity.HIGH,
            http_status=response.status_code,
            guidance=(
                "Something between snowkit and the instance (an SSO login page, a proxy, a "
                "maintenance page) answered instead of the REST API. Check the instance URL and "
                "proxy settings."
            ),
        )
        self.error_handler.record(ctx)
        return OperationalError(ctx)

    # ------------------------------------------------------------------ observation
    def _on_retry(self, attempt: int, delay: float, exc: BaseException, operation: str) -> None:
        reason = exc.category.value if isinstance(exc, OperationalError) else type(exc).__name__
        self.metrics.record_retry(operation, reason)

    def _log_request(
        self,
        call: _Call,
        attempt: int,
        status: int | None,
        duration_ms: float,
        error: str | None = None,
        ok: bool = False,
    ) -> None:
        fields: dict[str, Any] = {
            "method": call.method,
            "table": call.table,
            "operation": call.operation,
            "status_code": status,
            "duration_ms": round(duration_ms, 3),
            "attempt": attempt,
        }
        if error:
            fields["error"] = error
        self.logger.event("request", level="INFO" if ok else "WARNING", **fields)

    def _audit(
        self,
        action: str,
        table: str,
        sys_id: str | None,
        source_id: str | None,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        error: BaseException | None = None,
    ) -> None:
        if self.audit is None:
            return
        outcome = "success"
        if isinstance(error, AmbiguousWriteError):
            outcome = "ambiguous"
        elif error is not None:
            outcome = "failure"
        self.audit.record(
            action,
            table,
            sys_id,
            source_id=source_id,
            before=dict(before) if before is not None else None,
            after=dict(after) if after is not None else None,
            outcome=outcome,
            correlation_id=current_correlation_id(),
        )

    def _read_params(
        self, fields: Sequence[str] | None, display_value: bool | str
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "sysparm_display_value": _display(display_value),
            "sysparm_exclude_reference_link": "true",
        }
        if fields:
            params["sysparm_fields"] = ",".join(fields)
        return params


# ---------------------------------------------------------------------- helpers
def _scope() -> Any:
    """A correlation scope for one client operation, unless the caller already opened one."""
    return contextlib.nullcontext() if current_correlation_id() else correlation_scope()


def _check_table(table: str) -> str:
    if not isinstance(table, str) or not TABLE_NAME.match(table):
        raise ValueError(
            f"invalid table name {table!r}: "
            "ServiceNow table names are lower-case letters, digits and '_'"
        )
    return table


def _table_path(table: str, sys_id: str | None = None) -> str:
    path = f"/api/now/table/{_check_table(table)}"
    if sys_id is not None:
        if not isinstance(sys_id, str) or not SYS_ID.match(sys_id):
            raise ValueError(f"invalid sys_id {sys_id!r}: expected 32 hexadecimal characters")
        path += "/" + quote(sys_id, safe="")
    return path


def _display(value: bool | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).lower()
    if text not in {"true", "false", "all"}:
        raise ValueError("display_value must be True, False or 'all'")
    return text


def _fields_for(fields: Sequence[str] | None, query: str | Query) -> list[str] | None:
    if not fields:
        return None
    wanted = [KEY_FIELD, *[f for f in fields if f != KEY_FIELD]]
    if isinstance(query, Query):
        for exact in query.exact_filters:
            if exact.field not in wanted:
                wanted.append(exact.field)
    return wanted


def _order_of(encoded: str) -> list[tuple[str, bool]]:
    _, clauses = split_groups(encoded)
    out = []
    for clause in clauses:
        if clause.startswith("ORDERBYDESC"):
            out.append((clause[len("ORDERBYDESC") :], True))
        else:
            out.append((clause[len("ORDERBY") :], False))
    return out


def _result(response: requests.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        text = response.content[:200].decode("utf-8", "replace")
        raise OperationalError(
            f"ServiceNow sent a body that is not JSON (HTTP {response.status_code}): {text!r}",
            operation="parse_response",
            guidance=(
                "A cut-off answer usually means the transaction was cancelled (maximum execution "
                "time exceeded): use a smaller page_size or fewer fields."
            ),
        ) from exc
    return body.get("result") if isinstance(body, dict) else None


def _plain(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("value")
    return None if value is None else str(value)
