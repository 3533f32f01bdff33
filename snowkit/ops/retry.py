"""Retries that do not storm a sick or rate-limited ServiceNow instance.

tenacity runs the loop (attempts, waits, predicates, hooks). What it does not offer, and what
we add here: error classification through ``OperationalError.context.retryable``, full jitter
(``wait_random_exponential``, whose spread survives the cap unlike ``wait_exponential_jitter``),
``Retry-After`` in seconds or HTTP-date with a cap, a total deadline that fails at once instead
of sleeping past it, and a retry budget shared by a client (no Python library ships one).
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

import requests
import tenacity

from snowkit.ops.classify import classify
from snowkit.ops.errors import (
    AmbiguousWriteError,
    DeadlineExceededError,
    OperationalError,
    RateLimitError,
    RetryBudgetExhaustedError,
)
from snowkit.ops.redaction import redact_text

T = TypeVar("T")

#: ``on_retry(attempt, delay_seconds, exception, operation_name)``; attempt is the one that failed.
RetryHook = Callable[[int, float, BaseException, str], None]

DEFAULT_RATE_LIMIT_WAIT_SECONDS = 60.0

DEFAULT_RETRYABLE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    ConnectionError,
    TimeoutError,
)


@dataclass
class RetryPolicy:
    """How often and how long to retry one operation."""

    max_attempts: int = 3
    base_delay_seconds: float = 1.0
    max_delay_seconds: float = 60.0
    exponential_base: float = 2.0
    jitter: bool = True
    deadline_seconds: float | None = None
    max_retry_after_seconds: float = 120.0
    retryable_exceptions: tuple[type[BaseException], ...] = field(
        default=DEFAULT_RETRYABLE_EXCEPTIONS
    )

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay_seconds < 0 or self.max_delay_seconds < 0:
            raise ValueError("delays must be >= 0")
        if self.exponential_base < 1:
            raise ValueError("exponential_base must be >= 1")

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> RetryPolicy:
        """Build from ``snowkit.config.RetryConfig`` (or anything with the same attributes)."""
        names = (
            "max_attempts",
            "base_delay_seconds",
            "max_delay_seconds",
            "exponential_base",
            "jitter",
            "deadline_seconds",
            "max_retry_after_seconds",
        )
        values = {n: getattr(config, n) for n in names if hasattr(config, n)}
        values.update(overrides)
        return cls(**values)

    def backoff(self) -> tenacity.wait.wait_base:
        """The tenacity wait strategy: full jitter, or plain capped exponential without jitter."""
        if self.jitter:
            return tenacity.wait_random_exponential(
                multiplier=self.base_delay_seconds,
                max=self.max_delay_seconds,
                exp_base=self.exponential_base,
            )
        return tenacity.wait_exponential(
            multiplier=self.base_delay_seconds,
            max=self.max_delay_seconds,
            exp_base=self.exponential_base,
        )


def parse_retry_after(
    value: str | float | None, now: float | datetime | None = None, maximum: float | None = None
) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP-date).

    Never raises and never returns a negative number: invalid or negative values give None,
    a date in the past gives 0.0; ``maximum`` caps the result.
    """
    try:
        seconds = _parse_retry_after(value, now)
    except Exception:
        return None
    if seconds is None or not math.isfinite(seconds):
        return None
    seconds = max(0.0, seconds)
    return min(seconds, maximum) if maximum is not None else seconds


def _parse_retry_after(value: str | float | None, now: float | datetime | None) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    text = str(value).strip()
    if not text:
        return None
    if text[0].isdigit():
        try:
            return float(text)
        except ValueError:
            pass  # maybe a date such as "06 Nov 1994 ..." (no weekday)
    parsed = email.utils.parsedate_tz(text)
    if parsed is None:
        return None
    if parsed[9] is None:  # a date without zone is read as UTC
        parsed = (*parsed[:9], 0)
    target = email.utils.mktime_tz(parsed)
    if now is None:
        reference = time.time()
    elif isinstance(now, datetime):
        reference = (now if now.tzinfo else now.replace(tzinfo=UTC)).timestamp()
    else:
        reference = float(now)
    return max(0.0, target - reference)


@overload
def rate_limit_wait(
    response: Any, clock: Callable[[], float] = ..., default: float = ...
) -> float: ...


@overload
def rate_limit_wait(
    response: Any, clock: Callable[[], float] = ..., *, default: None
) -> float | None: ...


def rate_limit_wait(
    response: Any,
    clock: Callable[[], float] = time.time,
    default: float | None = DEFAULT_RATE_LIMIT_WAIT_SECONDS,
) -> float | None:
    """Seconds a 429 asks to wait: Retry-After, else X-RateLimit-Reset − now, else ``default``."""
    headers = getattr(response, "headers", None) or {}
    now = clock()
    seconds = parse_retry_after(headers.get("Retry-After"), now)
    if seconds is not None:
        return seconds
    reset = headers.get("X-RateLimit-Reset")
    if reset is not None:
        try:
            reset_at = float(str(reset).strip())
        except ValueError:
            reset_at = math.nan
        if math.isfinite(reset_at):
            return max(0.0, reset_at - now)
    return default


class RetryBudget:
    """A token bucket limiting retries to ``ratio`` × recent requests + ``min_retries``.

    Shared by every call of one client so a sick server is not hit with a retry storm: once the
    budget is spent the retry manager fails instead of retrying (Finagle's retry budget).
    """

    def __init__(
        self,
        ratio: float = 0.2,
        min_retries: int = 10,
        window_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ratio < 0 or min_retries < 0 or window_seconds <= 0:
            raise ValueError("ratio, min_retries must be >= 0 and window_seconds > 0")
        self.ratio = ratio
        self.min_retries = min_retries
        self.window_seconds = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _prune(self, now: float) -> None:
        horizon = now - self.window_seconds
        for stamps in (self._requests, self._retries):
            while stamps and stamps[0] <= horizon:
                stamps.popleft()

    def record_request(self) -> None:
        """Count one original (non-retry) request."""
        with self._lock:
            now = self._clock()
            self._prune(now)
            self._requests.append(now)

    def allowed(self) -> float:
        """How many retries the current window permits in total."""
        with self._lock:
            self._prune(self._clock())
            return self.min_retries + self.ratio * len(self._requests)

    def try_acquire_retry(self) -> bool:
        """Take one retry token; False when the budget is spent."""
        with self._lock:
            now = self._clock()
            self._prune(now)
            if len(self._retries) >= self.min_retries + self.ratio * len(self._requests):
                return False
            self._retries.append(now)
            return True


class _AttemptNumber:
    """The one attribute tenacity's wait strategies read from a RetryCallState."""

    __slots__ = ("attempt_number",)

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


class RetryManager:
    """Runs operations with retries, back-off, Retry-After, a deadline and a shared budget."""

    def __init__(
        self,
        default_policy: RetryPolicy | None = None,
        budget: RetryBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_retry: RetryHook | Iterable[RetryHook] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.default_policy = default_policy or RetryPolicy()
        self.budget = budget
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        if on_retry is None:
            self._hooks: list[RetryHook] = []
        elif callable(on_retry):
            self._hooks = [on_retry]
        else:
            self._hooks = list(on_retry)

    def add_hook(self, hook: RetryHook) -> None:
        self._hooks.append(hook)

    def sleep(self, seconds: float) -> None:
        """The wait between attempts (injected for tests; a caller that wraps it calls this)."""
        self._sleep(seconds)

    # -- the seed's API ----------------------------------------------------------------------
    def execute_with_retry(
        self,
        operation: Callable[[], T],
        policy: RetryPolicy | None = None,
        operation_name: str = "unknown",
        *,
        sleep: Callable[[float], None] | None = None,
    ) -> T:
        """Call ``operation`` until it succeeds, fails for good, or time/budget runs out.
        ``sleep``: this call's wait between attempts (default: the manager's)."""
        policy = policy or self.default_policy
        if self.budget is not None:
            self.budget.record_request()
        started = self._clock()
        try:  # fast path: no tenacity machinery when the first attempt succeeds
            return operation()
        except Exception as exc:
            if policy.max_attempts <= 1 or not self.is_retryable_error(exc, policy):
                raise
            first_failure: list[BaseException] = [exc]
        operation_name = redact_text(operation_name)  # it reaches hooks, logs and messages

        def attempt() -> T:
            if first_failure:  # replay the failure we already have as tenacity's attempt 1
                raise first_failure.pop()
            return operation()

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(policy.max_attempts),
            wait=lambda rs: self._wait(rs, policy),
            retry=tenacity.retry_if_exception(lambda e: self.is_retryable_error(e, policy)),
            before_sleep=lambda rs: self._before_sleep(rs, policy, operation_name, started),
            sleep=sleep or self._sleep,
            reraise=True,
        )
        return retrying(attempt)

    def is_retryable_error(
        self, exception: BaseException, policy: RetryPolicy | None = None
    ) -> bool:
        """Classified errors decide through ``context.retryable``; others by type."""
        policy = policy or self.default_policy
        if isinstance(exception, AmbiguousWriteError):
            return False
        if isinstance(exception, OperationalError):
            return exception.context.retryable
        if not isinstance(exception, policy.retryable_exceptions):
            return False
        if isinstance(exception, requests.RequestException) and exception.request is not None:
            # A raw requests error knows its method: never resend a POST/PATCH that was sent.
            return classify(exception).retryable
        return True

    def calculate_delay(self, attempt: int, policy: RetryPolicy | None = None) -> float:
        """Back-off after failed attempt ``attempt`` (1-based).

        Within [0, min(max_delay, base · exponential_base^(attempt − 1))] (full jitter).
        """
        policy = policy or self.default_policy
        return float(policy.backoff()(_AttemptNumber(max(1, attempt))))  # type: ignore[arg-type]

    def handle_rate_limit(self, response: Any) -> float:
        """Seconds a 429 response asks for (Retry-After, X-RateLimit-Reset, else a default),
        capped at the default policy's ``max_retry_after_seconds``: a caller that sleeps on it
        never sleeps longer than the retry loop itself would."""
        wait = rate_limit_wait(response, clock=self._wall_clock)
        return min(wait, self.default_policy.max_retry_after_seconds)

    # -- tenacity callbacks ------------------------------------------------------------------
    def _wait(self, retry_state: tenacity.RetryCallState, policy: RetryPolicy) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, RateLimitError) and exc.retry_after is not None:
            return min(max(0.0, exc.retry_after), policy.max_retry_after_seconds)
        return float(policy.backoff()(retry_state))

    def _before_sleep(
        self,
        retry_state: tenacity.RetryCallState,
        policy: RetryPolicy,
        operation_name: str,
        started: float,
    ) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        assert exc is not None  # tenacity only sleeps after a failure
        delay = retry_state.upcoming_sleep
        attempt = retry_state.attempt_number
        asked = exc.asked_wait if isinstance(exc, RateLimitError) else None
        # the wait the instance asks for, not the capped one: re-sending before it would only
        # meet the same closed window
        needed = delay if asked is None else max(delay, asked)
        if policy.deadline_seconds is not None:
            remaining = policy.deadline_seconds - (self._clock() - started)
            if needed > remaining:
                raise self._deadline_error(exc, needed, remaining, operation_name, policy) from exc
        if asked is not None and asked > policy.max_retry_after_seconds:
            raise self._wait_too_long_error(exc, asked, policy, operation_name) from exc
        if self.budget is not None and not self.budget.try_acquire_retry():
            raise RetryBudgetExhaustedError(
                f"Retry budget exhausted: not retrying {operation_name} after attempt {attempt} "
                f"(last error: {type(exc).__name__}: {_message(exc)}). The server is "
                "failing many requests; snowkit stops adding load. Try again later.",
                operation=operation_name,
                details={"attempt": attempt, "last_error": type(exc).__name__},
            ) from exc
        reason = _reason(exc)
        from snowkit.ops.logging import get_logger

        log = get_logger("snowkit.retry")
        if isinstance(exc, RateLimitError):
            log.warning("rate_limited", operation=operation_name, retry_after_s=round(delay, 3))
        log.info(
            "retry_scheduled",
            operation=operation_name,
            attempt=attempt,
            delay_s=round(delay, 3),
            reason=reason,
        )
        for hook in self._hooks:
            # a broken metrics hook must not change the outcome
            with contextlib.suppress(Exception):
                hook(attempt, delay, exc, operation_name)

    def _wait_too_long_error(
        self, exc: BaseException, asked: float, policy: RetryPolicy, operation_name: str
    ) -> RateLimitError:
        """The instance's rate limit resets later than snowkit is allowed to wait: stop now
        rather than send requests into a window that is still closed."""
        reset_at = datetime.fromtimestamp(self._wall_clock() + asked, UTC)
        return RateLimitError(
            f"Rate limited on {operation_name}: ServiceNow asks to wait {asked:.1f} s (until "
            f"{reset_at.isoformat(timespec='seconds')}), longer than max_retry_after_seconds "
            f"({policy.max_retry_after_seconds:g} s). Stopping now instead of re-sending "
            "into the closed window.",
            operation=operation_name,
            retryable=False,
            details={
                "retry_after": round(asked, 3),
                "reset_at": reset_at.isoformat(),
                "max_retry_after_seconds": policy.max_retry_after_seconds,
                "last_error": type(exc).__name__,
            },
            guidance=(
                "Run again after the reset time, or raise retry.max_retry_after_seconds to "
                "let snowkit wait that long (an hourly rate-limit rule is spent)."
            ),
        )

    def _deadline_error(
        self,
        exc: BaseException,
        delay: float,
        remaining: float,
        operation_name: str,
        policy: RetryPolicy,
    ) -> DeadlineExceededError:
        deadline = policy.deadline_seconds or 0.0
        last = f"last error: {type(exc).__name__}"
        if remaining <= 0:
            return deadline_spent_error(operation_name, deadline, last)
        reset_at = datetime.fromtimestamp(self._wall_clock() + delay, UTC)
        what = (
            "ServiceNow asks to wait" if isinstance(exc, RateLimitError) else "the next retry is in"
        )
        return DeadlineExceededError(
            f"Deadline exceeded for {operation_name}: {what} {delay:.1f} s (until "
            f"{reset_at.isoformat(timespec='seconds')}), more than the {remaining:.1f} s left "
            f"of its {deadline:g} s deadline ({last}). Stopping now instead of sleeping.",
            operation=operation_name,
            details={
                "wait_seconds": round(delay, 3),
                "remaining_seconds": round(remaining, 3),
                "deadline_seconds": deadline,
                "reset_at": reset_at.isoformat(),
                "last_error": type(exc).__name__,
            },
            guidance=_deadline_guidance(deadline),
        )


def deadline_spent_error(
    operation_name: str, deadline_seconds: float, why: str
) -> DeadlineExceededError:
    """The error for an operation whose whole deadline is used up (no attempt is started)."""
    return DeadlineExceededError(
        f"Deadline exceeded for {operation_name}: its {deadline_seconds:g} s deadline is spent "
        f"({why}); no further attempt was started.",
        operation=operation_name,
        details={"deadline_seconds": deadline_seconds, "reason": why},
        guidance=_deadline_guidance(deadline_seconds),
    )


def _deadline_guidance(deadline_seconds: float) -> str:
    """What to do about a spent deadline: it is our limit, not an instance error."""
    return (
        f"retry.deadline_seconds ({deadline_seconds:g} s) bounds each operation with all its "
        "retries. The instance was slow or failing throughout: run again later, or raise "
        "retry.deadline_seconds (or servicenow.read_timeout) if it is simply slow."
    )


def _message(exc: BaseException) -> str:
    if isinstance(exc, OperationalError):
        return exc.context.error_message
    return redact_text(str(exc))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OperationalError):
        status = exc.context.http_status
        return f"{exc.context.category.value}" + (f" {status}" if status else "")
    return type(exc).__name__


__all__ = [
    "DEFAULT_RETRYABLE_EXCEPTIONS",
    "RetryBudget",
    "RetryHook",
    "RetryManager",
    "RetryPolicy",
    "deadline_spent_error",
    "parse_retry_after",
    "rate_limit_wait",
]
