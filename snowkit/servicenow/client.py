"""``ServiceNowAPIClient``: the Table, Batch and IRE APIs behind one resilient request path.

Every request goes through :meth:`ServiceNowAPIClient._execute_request`, once, which hands it
to the :class:`~snowkit.servicenow.pipeline.RequestPipeline`:

    hibernation wait → retry → per attempt: pacing → circuit breaker → auth fallback → HTTP
      └─ metrics, a ``request`` log line, and an error context for anything not a success

Where each part lives (follow the data flow): ``tables`` (paths, read parameters, the result
envelope), ``paging`` (page planning), ``query`` (encoded queries), ``batch`` (Batch API
encoding), ``pipeline`` (the request path), ``auth`` (credential fallback), ``failures``
(errors and ambiguous writes), ``hibernation``, ``limiter``, ``transport`` (the session),
``auditing`` (before/after images of every write).

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
- **DELETE retried after a lost answer** may find the record gone: a 404 on a retry of a
  DELETE counts as success when an earlier attempt may have run (sent without an answer, or
  a 5xx), not after a 429 or a refused connection; the same holds for DELETE items of a
  retried Batch API request.
- **Authentication.** The methods from ``credentials.auth_methods()`` (API key → OAuth → basic,
  as configured) are tried in order; a 401 refreshes the method once (``refresh()``: a new
  OAuth token), then moves to the next method, logs which one is in use (never its value) and
  re-sends (a 401 means nothing ran). When all are rejected: :class:`AuthenticationError`
  with guidance.
- **Thread safety.** One pooled ``requests.Session``; per-call state lives in locals; the auth
  state is an immutable snapshot swapped under a lock. Settings and collaborators are fixed at
  construction (the settings are read-only properties).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson
import requests

from snowkit.ops.breaker import CircuitBreaker
from snowkit.ops.errors import (
    AmbiguousWriteError,
    ConfigurationError,
    ErrorCategory,
    ErrorHandler,
    ErrorSeverity,
    OperationalError,
    make_context,
)
from snowkit.ops.logging import StructuredLogger, correlation_scope, current_correlation_id
from snowkit.ops.metrics import MetricsCollector
from snowkit.ops.retry import RetryBudget, RetryManager, RetryPolicy
from snowkit.servicenow import batch as batch_api
from snowkit.servicenow.auditing import WriteAudit
from snowkit.servicenow.auth import AuthChain
from snowkit.servicenow.batch import BatchRequest, BatchResult
from snowkit.servicenow.failures import FailureMapper
from snowkit.servicenow.hibernation import HibernationWait
from snowkit.servicenow.limiter import RateLimitPacer
from snowkit.servicenow.paging import KEY_FIELD, Pager, PagingMode, choose_mode, order_of
from snowkit.servicenow.pipeline import (
    Attempts,
    BackoffListener,
    RequestPipeline,
    RequestSpec,
)
from snowkit.servicenow.query import Query, plain_value
from snowkit.servicenow.tables import (
    WRITE_PARAMS,
    check_table,
    fields_for,
    json_body,
    parse_result,
    read_params,
    table_path,
    total_count,
)
from snowkit.servicenow.transport import (
    IDEMPOTENT_METHODS,
    Timeouts,
    build_session,
    normalize_instance_url,
    resolve_proxies,
    resolve_verify,
)

DEFAULT_PAGE_SIZE = 500
_PING_POLICY = RetryPolicy(max_attempts=1)


def _cfg(obj: Any, name: str, default: Any = None) -> Any:
    """``obj.name`` unless ``obj`` or the value is None (config sections are optional)."""
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
        chosen_verify = verify if verify is not None else _cfg(sn, "verify", None)
        self.verify = resolve_verify(chosen_verify, _cfg(sn, "ca_bundle", None))
        self.proxies = resolve_proxies(self.instance_url, _cfg(sn, "proxies", None))
        self._session = build_session(
            self.instance_url, workers=self.workers, verify=self.verify, proxies=self.proxies
        )

        self.metrics = metrics if metrics is not None else MetricsCollector()
        self.logger = logger or StructuredLogger("snowkit.servicenow")
        self.audit = audit
        self._writes = WriteAudit(audit)
        self.error_handler = error_handler or ErrorHandler()
        self.retry_manager = retry_manager or RetryManager(
            RetryPolicy.from_config(_cfg(config, "retry")) if config is not None else None,
            budget=RetryBudget(clock=clock),
            sleep=sleep,
            clock=clock,
            wall_clock=wall_clock,
        )
        cb = _cfg(config, "circuit_breaker")
        self.circuit_breaker = circuit_breaker or CircuitBreaker(
            failure_threshold=int(_cfg(cb, "failure_threshold", 5)),
            recovery_timeout_seconds=float(_cfg(cb, "recovery_timeout_seconds", 60)),
            clock=clock,
        )
        if hasattr(self.metrics, "watch_breaker"):
            self.metrics.watch_breaker(self.circuit_breaker)
        self.pacer = RateLimitPacer(wall_clock=wall_clock)

        self._auth = AuthChain(
            _auth_methods(credentials, self.instance_url),
            instance_url=self.instance_url,
            verify=self.verify,
            proxies=self.proxies,
            logger=self.logger,
        )
        self._pipeline = RequestPipeline(
            session=self._session,
            auth=self._auth,
            timeouts=Timeouts(
                connect=float(_cfg(sn, "connect_timeout", 10.0)),
                read=float(_cfg(sn, "read_timeout", 60.0)),
            ),
            retry_manager=self.retry_manager,
            circuit_breaker=self.circuit_breaker,
            pacer=self.pacer,
            hibernation=HibernationWait(
                wait_seconds=float(hibernation_wait_seconds),
                poll_seconds=max(0.001, float(hibernation_poll_seconds)),
            ),
            failures=FailureMapper(
                instance_url=self.instance_url,
                error_handler=self.error_handler,
                logger=self.logger,
                retry_write_statuses=frozenset(int(s) for s in retry_write_statuses),
            ),
            metrics=self.metrics,
            logger=self.logger,
            sleep=sleep,
            clock=clock,
        )

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

    # ------------------------------------------------------------------ settings (read-only)
    @property
    def timeouts(self) -> Timeouts:
        """Connect/read timeouts of the first attempt, growing on each retry."""
        return self._pipeline.timeouts

    @property
    def hibernation_wait_seconds(self) -> float:
        return self._pipeline.hibernation.wait_seconds

    @property
    def hibernation_poll_seconds(self) -> float:
        return self._pipeline.hibernation.poll_seconds

    @property
    def retry_write_statuses(self) -> frozenset[int]:
        return self._pipeline.failures.retry_write_statuses

    @property
    def auth_method(self) -> str | None:
        """The name of the auth method in use (``api_key``, ``oauth``, ``basic``)."""
        state = self._auth.current
        return state.name if state is not None else None

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the pooled connections (and any token session)."""
        self._session.close()
        self._auth.close()

    def __enter__(self) -> ServiceNowAPIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServiceNowAPIClient({self.instance_url!r})"

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
            table_path(table, sys_id),
            params=read_params(fields, display_value),
            table=table,
            operation="get",
            ok_statuses=frozenset({404}),  # "not there" is an answer, not an error
        )
        return None if response.status_code == 404 else parse_result(response)

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
        check_table(table)
        encoded = str(query or "")
        descending = order_by.startswith("-")
        order_field = order_by.lstrip("-")
        ordering = query.ordering if isinstance(query, Query) else order_of(encoded)
        if paging is None:
            mode = choose_mode(ordering, order_field, descending)
        else:
            mode = PagingMode(paging)
        pager = Pager(
            encoded,
            page_size or self.page_size,
            mode=mode,
            order_by=order_field,
            descending=descending,
            limit=limit,
            table=table,
        )
        wanted = fields_for(fields, query)
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
        base = read_params(fields, display_value)  # the same for every page
        while (request := pager.next_request()) is not None:
            params = {
                **base,
                "sysparm_query": request.query,
                "sysparm_limit": request.limit,
                "sysparm_suppress_pagination_header": "true",
            }
            if pager.mode is PagingMode.OFFSET or request.offset:
                params["sysparm_offset"] = request.offset
            response = self._execute_request(
                "GET", table_path(table), params=params, table=table, operation="query"
            )
            rows = parse_result(response) or []
            pager.advance(request, rows, total_count(response))
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
            "GET", table_path(table), params=params, table=table, operation="count"
        )
        total = total_count(response)
        if total is None:
            sent = response.headers.get("X-Total-Count")
            what = "no X-Total-Count" if sent is None else "an X-Total-Count that is not a count"
            raise OperationalError(
                f"the instance sent {what} for {table}; cannot count",
                operation="count",
                details={"table": table, "x_total_count": None if sent is None else sent[:40]},
                guidance=(
                    "Something between snowkit and the instance strips or rewrites response "
                    "headers (a proxy or gateway): let X-Total-Count through unchanged, or count "
                    "with sum(1 for _ in client.query(table, query, fields=['sys_id']))."
                ),
            )
        return total

    def create(
        self, table: str, values: Mapping[str, Any], *, source_id: str | None = None
    ) -> dict[str, Any]:
        """Insert one record; returns it as stored. Audited (outcome ambiguous if unknown)."""
        values = dict(values)
        with _scope():
            try:
                response = self._execute_request(
                    "POST",
                    table_path(table),
                    params=WRITE_PARAMS,
                    json=values,
                    table=table,
                    operation="create",
                    source_id=source_id,
                )
            except OperationalError as exc:
                self._writes.record("create", table, None, source_id, None, values, exc)
                raise
            record = parse_result(response) or {}
            self._writes.record(
                "create", table, plain_value(record.get(KEY_FIELD)), source_id, None, record
            )
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
            if before is None and self._writes.enabled:
                before = self.get(table, sys_id)
            try:
                response = self._execute_request(
                    "PATCH",
                    table_path(table, sys_id),
                    params=WRITE_PARAMS,
                    json=dict(values),
                    table=table,
                    operation="update",
                    source_id=source_id or sys_id,
                )
            except OperationalError as exc:
                self._writes.record("update", table, sys_id, source_id, before, dict(values), exc)
                raise
            record = parse_result(response) or {}
            self._writes.record("update", table, sys_id, source_id, before, record)
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
            if before is None and self._writes.enabled:
                before = self.get(table, sys_id)
            try:
                self._execute_request(
                    "DELETE",
                    table_path(table, sys_id),
                    table=table,
                    operation="delete",
                    source_id=source_id or sys_id,
                    allow_404_on_retry=True,
                    expect=None,  # 204 No Content
                )
            except OperationalError as exc:
                self._writes.record("delete", table, sys_id, source_id, before, None, exc)
                raise
            self._writes.record("delete", table, sys_id, source_id, before, None)

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
            with self._writes.batch():  # one fsync and checkpoint per chunk, not per record
                for result in chunk_results:
                    results[result.id] = result
                    self._writes.record_batch_item(result)
        return [results[item.id] for item in items]

    def _run_chunk(
        self, chunk_items: list[batch_api.EncodedItem], max_rounds: int
    ) -> list[BatchResult]:
        done_all: list[BatchResult] = []
        pending = chunk_items
        rounds = 0
        while pending and rounds < max_rounds:
            rounds += 1
            attempts = Attempts()  # this round's sends (earlier rounds' items were answered)
            try:
                response = self._execute_request(
                    "POST",
                    batch_api.BATCH_PATH,
                    json=batch_api.envelope(pending),
                    operation="batch_read" if batch_api.is_read_only(pending) else "batch",
                    idempotent=batch_api.is_idempotent(pending),
                    source_id=",".join(str(i.request.source_id or i.id) for i in pending[:20]),
                    expect="serviced_requests",
                    attempts=attempts,
                )
            except OperationalError as exc:
                ambiguous = isinstance(exc, AmbiguousWriteError)
                return done_all + [
                    batch_api.failed_result(item, exc.context, ambiguous=ambiguous)
                    for item in pending
                ]
            try:
                body = json_body(response)
                if not isinstance(body, dict):
                    raise ValueError("the batch answer is not a JSON object")
                done, pending = batch_api.decode_response(body, pending)
            except (ValueError, TypeError, AttributeError) as exc:
                return done_all + self._unreadable_batch(pending, exc)
            if attempts.may_have_run:
                batch_api.accept_gone_deletes(done)
            for result in done:
                if not result.ok:
                    result.error = self._pipeline.failures.batch_item(result)
            done_all.extend(done)
            if pending:
                self.logger.event(
                    "batch_unserviced", level="WARNING", count=len(pending), round=rounds
                )
        return done_all + [batch_api.unserviced_result(item, rounds) for item in pending]

    def _unreadable_batch(
        self, pending: list[batch_api.EncodedItem], exc: Exception
    ) -> list[BatchResult]:
        """A batch answer we cannot read (cut off, cancelled transaction) settles nothing.

        Its writes may or may not have been applied, so non-idempotent items come back as
        ambiguous: the caller looks them up by their own key before any retry.
        """
        writes = not batch_api.is_idempotent(pending)
        context = make_context(
            f"the Batch API answer could not be read ({type(exc).__name__})",
            operation="batch",
            category=ErrorCategory.AMBIGUOUS_WRITE if writes else ErrorCategory.SERVICENOW_API,
            severity=ErrorSeverity.HIGH,
            details={"items": len(pending)},
            guidance=(
                "The instance cut the batch answer short (often a transaction cancelled at its "
                "time limit). Look the records up by their source key before retrying, and "
                "use a smaller --batch-size."
            ),
        )
        self.error_handler.record(context)
        return [batch_api.failed_result(item, context, ambiguous=writes) for item in pending]

    def add_throttle_listener(self, listener: Callable[[float | None], None]) -> None:
        """Call ``listener(retry_after_s)`` whenever the instance answers 429.

        The client retries a throttled request itself, so a caller that only sees the final
        result never learns it was throttled; an adaptive limiter registers here instead.
        """
        self._pipeline.throttle_listeners.append(listener)

    def remove_throttle_listener(self, listener: Callable[[float | None], None]) -> None:
        """Stop calling ``listener`` (a no-op if it was never added)."""
        with contextlib.suppress(ValueError):
            self._pipeline.throttle_listeners.remove(listener)

    def add_backoff_listener(self, listener: BackoffListener) -> None:
        """Tell ``listener`` when a request starts waiting to be retried and when it goes again
        (in that request's thread): a concurrency limiter lends the request's slot out."""
        self._pipeline.backoff_listeners.append(listener)

    def remove_backoff_listener(self, listener: BackoffListener) -> None:
        """Stop telling ``listener`` (a no-op if it was never added)."""
        with contextlib.suppress(ValueError):
            self._pipeline.backoff_listeners.remove(listener)

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
        return parse_result(response) or {}

    def ping(self) -> float:
        """One cheap authenticated GET; its round trip in milliseconds.

        Raises HibernatingInstanceError / AuthenticationError / NetworkError for the health check.
        """
        started = time.perf_counter()
        self._execute_request(
            "GET",
            table_path("sys_user"),
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
        expect: str | None = "result",
        attempts: Attempts | None = None,
    ) -> requests.Response:
        """The single path every request takes: retry → breaker → auth → HTTP → observe.

        ``idempotent`` defaults to the method's HTTP semantics; pass it for POST endpoints
        that are safe to resend (IRE) or batches of reads. ``expect``: the JSON member a 2xx
        answer must carry (a 202 or an empty body is not an empty result).
        """
        verb = method.upper()
        spec = RequestSpec(
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
            expect=expect,
        )
        return self._pipeline.execute(spec, policy, attempts)


def _scope() -> contextlib.AbstractContextManager[Any]:
    """A correlation scope for one client operation, unless the caller already opened one."""
    return contextlib.nullcontext() if current_correlation_id() else correlation_scope()


def _auth_methods(credentials: Any, instance_url: str) -> list[Any]:
    """The credentials' methods for this instance (an OAuth token comes from *its* endpoint);
    credentials written against the older ``auth_methods()`` still work."""
    if credentials is None:
        return []
    methods = credentials.auth_methods
    if "instance_url" in inspect.signature(methods).parameters:
        return list(methods(instance_url=instance_url))
    return list(methods())
