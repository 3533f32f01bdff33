"""The one path every ServiceNow request takes, wrapped once by each resilience layer.

    hibernation wait (optional, bounded)
      └─ retry (RetryManager: full jitter, Retry-After, deadline, shared budget)
           └─ per attempt: rate-limit pacing → circuit breaker → auth fallback → HTTP
                └─ metrics, one ``request`` log line, and an error (failures.py) for anything
                   that is not an expected answer

Like requests' ``Session`` vs its adapter: the client holds the state and the public methods,
this module holds the mechanics of one exchange. Per-call state lives in a :class:`RequestSpec`
and locals, so one pipeline serves any number of threads; the only shared mutable state is the
auth chain (swapped under its lock), the pacer and the collaborators' own (locked) counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from snowkit.ops.breaker import CircuitBreaker
from snowkit.ops.classify import request_was_sent
from snowkit.ops.errors import AuthenticationError, OperationalError, RateLimitError
from snowkit.ops.logging import StructuredLogger
from snowkit.ops.metrics import MetricsCollector
from snowkit.ops.retry import RetryManager, RetryPolicy, deadline_spent_error
from snowkit.servicenow.auth import JSON_CONTENT, AuthChain, is_invalid_value
from snowkit.servicenow.failures import FailureMapper
from snowkit.servicenow.hibernation import HibernationWait, is_unexpected_html
from snowkit.servicenow.limiter import RateLimitPacer
from snowkit.servicenow.tables import carries
from snowkit.servicenow.transport import Timeouts


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """Everything about one logical request, shared by its attempts (never stored on a client).

    ``idempotent`` decides whether a failure after sending may be retried; ``source_id`` is the
    caller's key for the record, named in an ambiguous-write error; ``ok_statuses`` are answers
    that are results, not errors (a 404 for ``get``); ``allow_404_on_retry``: a DELETE whose
    first answer was lost may find the record already gone; ``expect`` is the member a 2xx
    JSON answer must carry to count as one (None: no body expected, e.g. a DELETE's 204).
    """

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
    expect: str | None = "result"

    @property
    def target(self) -> str:
        """``METHOD table`` (or the URL for calls outside the Table API), for messages."""
        return f"{self.method} {self.table or self.url}"


@dataclass(slots=True)
class Attempts:
    """What the attempts of one logical request have done so far (one per execute call).

    ``may_have_run``: an attempt may have reached the instance's database (sent without an
    answer, or answered 5xx / without a body). Only then does a later 404 on a DELETE mean
    "already deleted"; after a 429 or a refused connection it means the record was never there.
    """

    count: int = 0
    may_have_run: bool = False


class BackoffListener(Protocol):
    """Told around a retry's wait (``AdaptiveLimiter`` is one)."""

    def step_out(self) -> bool:
        """The calling thread's request starts waiting; True if there is a step back in."""
        ...

    def step_in(self) -> None: ...


class RequestPipeline:
    """Runs :class:`RequestSpec`s through retry → pacing → breaker → auth → HTTP → observe."""

    def __init__(
        self,
        *,
        session: requests.Session,
        auth: AuthChain,
        timeouts: Timeouts,
        retry_manager: RetryManager,
        circuit_breaker: CircuitBreaker,
        pacer: RateLimitPacer,
        hibernation: HibernationWait,
        failures: FailureMapper,
        metrics: MetricsCollector,
        logger: StructuredLogger,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        self.session = session
        self.auth = auth
        self.timeouts = timeouts
        self.retry_manager = retry_manager
        self.circuit_breaker = circuit_breaker
        self.pacer = pacer
        #: Called with the Retry-After seconds (or None) the moment a 429 arrives, before the
        #: retry waits: bulk callers cut their concurrency on the signal, not a retry later.
        self.throttle_listeners: list[Callable[[float | None], None]] = []
        #: Told when a request waits to be retried and when it is about to go again (in the
        #: waiting thread): a concurrency limiter lends the request's slot out meanwhile.
        self.backoff_listeners: list[BackoffListener] = []
        self.hibernation = hibernation
        self.failures = failures
        self.metrics = metrics
        self.logger = logger
        self._sleep = sleep
        self._clock = clock
        retry_manager.add_hook(self._on_retry)

    def execute(
        self, spec: RequestSpec, policy: RetryPolicy | None = None, attempts: Attempts | None = None
    ) -> requests.Response:
        """The response to ``spec`` (2xx, or a status in ``ok_statuses``), else raise.
        ``attempts`` (optional) is filled in for a caller that needs to know (a batch)."""
        tally = attempts if attempts is not None else Attempts()
        return self.hibernation.run(
            lambda: self._with_retry(spec, policy, tally),
            clock=self._clock,
            sleep=self._sleep,
            on_wait=lambda seconds: self.logger.event(
                "hibernation_wait",
                level="WARNING",
                operation=spec.operation,
                recheck_in_s=seconds,
            ),
        )

    def _with_retry(
        self, spec: RequestSpec, policy: RetryPolicy | None, attempts: Attempts
    ) -> requests.Response:
        deadline = (policy or self.retry_manager.default_policy).deadline_seconds
        ends_at = None if deadline is None else self._clock() + deadline

        def one_attempt() -> requests.Response:
            attempts.count += 1
            self._pace()
            timeout = self._attempt_timeout(spec, attempts.count, deadline, ends_at)
            return self.circuit_breaker.call(
                lambda: self._attempt(spec, attempts, timeout), spec.operation
            )

        try:
            return self.retry_manager.execute_with_retry(
                one_attempt, policy, spec.operation, sleep=self._backoff
            )
        except RateLimitError as exc:
            self._close_the_window(exc)
            raise

    def _close_the_window(self, exc: RateLimitError) -> None:
        """A rate-limit window closed for longer than snowkit waits: open the breaker until it
        resets, so the other workers stop at once (CircuitOpenError, their writes queued)
        instead of each sending a request certain to get the same 429."""
        wait = exc.asked_wait
        if exc.context.retryable or wait is None or wait <= 0:
            return
        self.circuit_breaker.force_open(wait, reason=f"RateLimitError: {exc.context.error_message}")
        self.logger.event("breaker_opened_for_rate_limit", level="WARNING",
                          operation=exc.context.operation, seconds=round(wait, 1))  # fmt: skip

    def _backoff(self, seconds: float) -> None:
        """The wait before a retry (the retry manager's sleep); listeners that stepped out
        step back in after it, whatever happened meanwhile."""
        stepped: list[BackoffListener] = []
        try:
            for listener in list(self.backoff_listeners):
                if listener.step_out():
                    stepped.append(listener)
            self.retry_manager.sleep(seconds)
        finally:
            for listener in reversed(stepped):
                listener.step_in()

    def _attempt_timeout(
        self, spec: RequestSpec, attempt: int, deadline: float | None, ends_at: float | None
    ) -> tuple[float, float]:
        """This attempt's (connect, read) timeouts, cut to the time left of the deadline; an
        attempt with no time left is not started (it could only overrun the deadline)."""
        if deadline is None or ends_at is None:
            return self.timeouts.for_attempt(attempt)
        left = ends_at - self._clock()
        if left <= 0:
            raise deadline_spent_error(
                spec.operation, deadline, f"{attempt - 1} attempt(s) used it up"
            )
        return self.timeouts.for_attempt(attempt, left)

    def _pace(self) -> None:
        delay = self.pacer.delay()
        if delay > 0:
            self.logger.event("rate_limit_pacing", delay_s=round(delay, 3))
            self._sleep(delay)

    def _attempt(
        self, spec: RequestSpec, attempts: Attempts, timeout: tuple[float, float]
    ) -> requests.Response:
        """One HTTP exchange (with auth fallback), observed and classified."""
        attempt = attempts.count
        started = time.perf_counter()
        try:
            response = self._send_authenticated(spec, timeout)
        except requests.RequestException as exc:
            attempts.may_have_run |= request_was_sent(exc)
            duration = (time.perf_counter() - started) * 1000.0
            self.metrics.record_error(spec.method, spec.operation, exc, spec.table, duration)
            self._log_request(spec, attempt, None, duration, error=type(exc).__name__)
            raise self.failures.network(spec, exc, attempt) from exc
        duration = (time.perf_counter() - started) * 1000.0
        status = response.status_code
        self._observe(
            "metrics",
            lambda: self.metrics.record_request(
                spec.method, spec.operation, status, duration, spec.table
            ),
        )
        self._observe("rate_limit_pacer", lambda: self.pacer.observe(response.headers))
        ok = status < 300 or status in spec.ok_statuses
        self._log_request(spec, attempt, status, duration, ok=ok)
        if status < 300:
            if is_unexpected_html(response):
                raise self.failures.html(spec, response)
            if spec.expect is not None and not carries(response, spec.expect):
                attempts.may_have_run = True  # queued (202) or answered for: unknown
                raise self.failures.no_body(spec, response)
            return response
        if status < 400:
            raise self.failures.redirect(spec, response)
        if status in spec.ok_statuses:
            return response
        if status == 404 and spec.allow_404_on_retry and attempts.may_have_run:
            return response  # an earlier attempt did the delete; its answer was lost
        attempts.may_have_run |= status >= 500
        error = self.failures.response(spec, response)
        if status == 429:
            retry_after = error.context.details.get("retry_after")
            self._observe(
                "metrics",
                lambda: self.metrics.record_rate_limit(spec.operation, retry_after, spec.table),
            )
            for listener in list(self.throttle_listeners):
                self._observe("throttle_listener", lambda: listener(retry_after))  # noqa: B023
        raise error

    def _observe(self, observer: str, observe: Callable[[], object]) -> None:
        """Run a bookkeeping step that must not change the outcome: the instance has already
        answered (a write may have been applied), so an observer that fails is logged, and the
        answer still reaches the caller."""
        try:
            observe()
        except Exception as exc:
            self.logger.event(
                "observer_failed", level="WARNING", observer=observer, error=type(exc).__name__
            )

    def _send_authenticated(
        self, spec: RequestSpec, timeout: tuple[float, float]
    ) -> requests.Response:
        """Send; on 401 refresh (OAuth, once) or fall back to the next method and re-send."""
        state = self.auth.current
        refreshed: set[int] = set()
        while True:
            if state is None:
                headers = JSON_CONTENT if spec.body is not None else None
                auth = None
            else:
                headers = (state.json_headers if spec.body is not None else state.headers) or None
                auth = state.auth
            try:
                response: requests.Response | None = self.session.request(
                    spec.method,
                    spec.url,
                    params=spec.params,
                    data=spec.body,
                    headers=headers,
                    auth=auth,
                    timeout=timeout,
                    allow_redirects=False,  # see FailureMapper.redirect
                )
            except AuthenticationError as exc:  # e.g. a lazy OAuth token fetch was refused
                if state is None or is_invalid_value(exc):
                    raise  # a credential value that cannot be sent: the user fixes it
                self.logger.log_credential_access(state.name, False, exc.context.error_message)
                response = None
            if response is not None and (response.status_code != 401 or state is None):
                if state is not None and response.status_code < 300:
                    self.auth.confirm(state)
                return response
            assert state is not None
            if response is not None:
                elapsed_ms = response.elapsed.total_seconds() * 1000.0
                self.metrics.record_request(
                    spec.method, spec.operation, 401, elapsed_ms, spec.table
                )
                self.logger.log_credential_access(state.name, False, "rejected with HTTP 401")
                response.close()
            refresh = state.index not in refreshed and self.auth.can_refresh(state)
            refreshed.add(state.index)
            next_state = self.auth.advance(state, refresh=refresh)
            if next_state is None:
                raise self.auth.exhausted(spec.operation, self.failures.error_handler)
            state = next_state

    def _log_request(
        self,
        spec: RequestSpec,
        attempt: int,
        status: int | None,
        duration_ms: float,
        error: str | None = None,
        ok: bool = False,
    ) -> None:
        fields: dict[str, Any] = {
            "method": spec.method,
            "table": spec.table,
            "operation": spec.operation,
            "status_code": status,
            "duration_ms": round(duration_ms, 3),
            "attempt": attempt,
        }
        if error:
            fields["error"] = error
        self.logger.event("request", level="INFO" if ok else "WARNING", **fields)

    def _on_retry(self, attempt: int, delay: float, exc: BaseException, operation: str) -> None:
        """Count a retry against the table of the request being retried: the hook is shared
        by every request, and each error this pipeline raises names its table."""
        if isinstance(exc, OperationalError):
            reason, table = exc.category.value, exc.context.details.get("table")
        else:
            reason, table = type(exc).__name__, None
        self.metrics.record_retry(operation, reason, table if isinstance(table, str) else None)
