"""Circuit breaker: stop calling a sick ServiceNow instance, then probe it with one trial call.

Written here rather than taken from pybreaker because pybreaker holds a lock around the wrapped
call (serialising a thread pool) and uses the wall clock; `circuitbreaker` has no locking at
all. This one locks only around state transitions, admits exactly one trial call while
half-open, takes an injectable monotonic clock, and only counts transient failures (network,
5xx, ambiguous writes, hibernation), never client errors or rate limits.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import TypeVar

from snowkit.ops.errors import ErrorCategory, ErrorSeverity, OperationalError
from snowkit.ops.redaction import redact_text

T = TypeVar("T")

Listener = Callable[["CircuitBreaker", "CircuitState", "CircuitState"], None]

_COUNTED_CATEGORIES = frozenset(
    {ErrorCategory.NETWORK, ErrorCategory.AMBIGUOUS_WRITE, ErrorCategory.HIBERNATING}
)


class CircuitState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(OperationalError):
    """Raised without calling the operation while the breaker is open (or a trial is running)."""

    default_category = ErrorCategory.CIRCUIT_OPEN
    default_severity = ErrorSeverity.MEDIUM
    default_retryable = False

    @property
    def breaker_name(self) -> str:
        return str(self.context.details.get("breaker", ""))

    @property
    def retry_in_seconds(self) -> float:
        return float(self.context.details.get("retry_in_seconds", 0.0))


def default_is_failure(exc: BaseException) -> bool:
    """Does this exception say the dependency is unhealthy?

    Transient server errors, network errors, ambiguous writes and hibernation count; client
    errors (4xx), authentication, rate limits and our own deadline/budget errors do not.
    Exceptions that carry no classification count (the seed's behaviour).
    """
    if isinstance(exc, OperationalError):
        category = exc.context.category
        if category in _COUNTED_CATEGORIES:
            return True
        return category is ErrorCategory.SERVICENOW_API and exc.context.retryable
    return True


class CircuitBreaker:
    """CLOSED → OPEN after ``failure_threshold`` consecutive failures (or a failure rate);
    OPEN → HALF_OPEN after ``recovery_timeout_seconds``; one trial call closes or re-opens it.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_timeout_seconds: float = 60,
        expected_exception: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        name: str = "servicenow",
        clock: Callable[[], float] = time.monotonic,
        is_failure: Callable[[BaseException], bool] | None = None,
        failure_rate_threshold: float | None = None,
        window_size: int = 20,
        minimum_calls: int = 10,
        log_transitions: bool = True,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if failure_rate_threshold is not None and not 0 < failure_rate_threshold <= 1:
            raise ValueError("failure_rate_threshold must be in (0, 1]")
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout_seconds = float(recovery_timeout_seconds)
        self.expected_exception = expected_exception
        self.failure_rate_threshold = failure_rate_threshold
        self.minimum_calls = minimum_calls
        self._clock = clock
        self._is_failure = is_failure or default_is_failure
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._failure_count = 0
        self._last_failure = ""  #: the newest counted failure, for the open breaker's message
        self._opened_at: float | None = None
        self._open_for = self.recovery_timeout_seconds
        self._trial_in_flight = False
        self._window: deque[bool] = deque(maxlen=window_size)
        self._listeners: list[Listener] = []
        if log_transitions:
            self._listeners.append(_log_transition)

    # -- introspection -----------------------------------------------------------------------
    @property
    def state(self) -> CircuitState:
        """The current state; an OPEN breaker whose timeout passed reports HALF_OPEN."""
        with self._lock:
            if self._state is CircuitState.OPEN and self._seconds_to_trial() <= 0:
                return CircuitState.HALF_OPEN
            return self._state

    @property
    def failure_count(self) -> int:
        return self._failure_count

    def seconds_until_trial(self) -> float:
        with self._lock:
            return self._seconds_to_trial() if self._state is CircuitState.OPEN else 0.0

    def add_listener(self, listener: Listener) -> None:
        """``listener(breaker, old_state, new_state)``, called outside the lock on each change."""
        self._listeners.append(listener)

    # -- control -----------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to CLOSED with clean counters."""
        with self._lock:
            old = self._state
            self._state = CircuitState.CLOSED
            self._failure_count = 0
            self._opened_at = None
            self._trial_in_flight = False
            self._window.clear()
        self._notify(old, CircuitState.CLOSED)

    def force_open(self, seconds: float | None = None, reason: str | None = None) -> None:
        """Open now for ``seconds`` (default the recovery timeout), e.g. for a long Retry-After;
        ``reason`` is named by the calls it refuses (as a last failure is)."""
        with self._lock:
            old = self._state
            if reason:
                self._last_failure = reason
            self._open(seconds)
        self._notify(old, CircuitState.OPEN)

    # -- the call ----------------------------------------------------------------------------
    def call(self, operation: Callable[[], T], operation_name: str = "unknown") -> T:
        """Run ``operation`` unless the breaker is open; no lock is held while it runs."""
        transition: tuple[CircuitState, CircuitState] | None = None
        with self._lock:
            is_trial = False
            if self._state is CircuitState.OPEN:
                if self._seconds_to_trial() > 0:
                    raise self._open_error(operation_name)
                transition = (CircuitState.OPEN, CircuitState.HALF_OPEN)
                self._state = CircuitState.HALF_OPEN
            if self._state is CircuitState.HALF_OPEN:
                if self._trial_in_flight:
                    raise self._open_error(operation_name, trial_running=True)
                self._trial_in_flight = True
                is_trial = True
        if transition:
            self._notify(*transition)
        try:
            result = operation()
        except BaseException as exc:
            counted = isinstance(exc, self.expected_exception) and self._is_failure(exc)
            if counted:
                self._on_failure(is_trial, exc)
            elif isinstance(exc, Exception):
                # The dependency answered (a 4xx, a rate limit): it is alive.
                self._on_success(is_trial)
            else:
                self._release_trial(is_trial)
            raise
        self._on_success(is_trial)
        return result

    __call__ = call

    # -- internals (callers hold no lock unless stated) --------------------------------------
    def _seconds_to_trial(self) -> float:  # lock held
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._open_for - self._clock())

    def _open(self, seconds: float | None = None) -> None:  # lock held
        self._state = CircuitState.OPEN
        self._opened_at = self._clock()
        self._open_for = max(self.recovery_timeout_seconds, float(seconds or 0.0))
        self._trial_in_flight = False

    def _open_error(self, operation_name: str, trial_running: bool = False) -> CircuitOpenError:
        wait = self._seconds_to_trial()
        if trial_running:
            message = (
                f"Circuit '{self.name}' is half-open and its trial call is running; "
                f"{operation_name} was not attempted ({self._failure_count} failures so far)."
            )
        else:
            message = (
                f"Circuit '{self.name}' is open after {self._failure_count} failures; "
                f"{operation_name} was not attempted. Next trial in {wait:.1f} s."
            )
        if self._last_failure:  # the cause, not only the breaker (it had hidden "refused")
            message += f" Last failure: {self._last_failure}"
        return CircuitOpenError(
            message,
            operation=operation_name,
            details={
                "breaker": self.name,
                "failure_count": self._failure_count,
                "retry_in_seconds": round(wait, 3),
                "trial_running": trial_running,
            },
        )

    def _on_success(self, is_trial: bool) -> None:
        with self._lock:
            old = self._state
            self._failure_count = 0
            self._window.append(True)
            if is_trial:
                self._trial_in_flight = False
                if self._state is CircuitState.HALF_OPEN:
                    self._state = CircuitState.CLOSED
                    self._opened_at = None
                    self._window.clear()
            new = self._state
        if old is not new:
            self._notify(old, new)

    def _on_failure(self, is_trial: bool, exc: BaseException | None = None) -> None:
        with self._lock:
            old = self._state
            self._failure_count += 1
            if exc is not None:
                self._last_failure = _first_line(exc)
            self._window.append(False)
            if is_trial or (old is CircuitState.CLOSED and self._should_trip()):
                self._open()
            new = self._state
        if old is not new:
            self._notify(old, new)

    def _release_trial(self, is_trial: bool) -> None:
        if is_trial:
            with self._lock:
                self._trial_in_flight = False

    def _should_trip(self) -> bool:  # lock held
        if self._failure_count >= self.failure_threshold:
            return True
        if self.failure_rate_threshold is None or len(self._window) < self.minimum_calls:
            return False
        failures = sum(1 for ok in self._window if not ok)
        return failures / len(self._window) >= self.failure_rate_threshold

    def _notify(self, old: CircuitState, new: CircuitState) -> None:
        if old is new:
            return
        for listener in list(self._listeners):
            # a broken listener must not break the call path
            with contextlib.suppress(Exception):
                listener(self, old, new)

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self._state.value})"


def _log_transition(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
    from snowkit.ops.logging import get_logger

    get_logger("snowkit.breaker").warning(
        "breaker_state_change",
        breaker=breaker.name,
        old=old.value,
        new=new.value,
        failure_count=breaker.failure_count,
    )


__all__ = ["CircuitBreaker", "CircuitOpenError", "CircuitState", "default_is_failure"]


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (its advice follows on the breaker's own)."""
    text = redact_text(str(exc)).split(" What to do:", 1)[0].splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
