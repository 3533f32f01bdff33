"""Circuit breaker: transitions on a fake clock, what counts as failure, one trial under a race."""

from __future__ import annotations

import threading
import time

import pytest

from snowkit.ops.breaker import CircuitBreaker, CircuitOpenError, CircuitState
from snowkit.ops.errors import (
    AuthenticationError,
    ErrorCategory,
    HibernatingInstanceError,
    NetworkError,
    OperationalError,
    RateLimitError,
    RecordNotFoundError,
    TransientServerError,
)


def fail(exc: BaseException):
    def op():
        raise exc

    return op


def trip(breaker: CircuitBreaker, n: int, exc: BaseException | None = None) -> None:
    for _ in range(n):
        with pytest.raises(type(exc) if exc else NetworkError):
            breaker.call(fail(exc or NetworkError("down")))


@pytest.fixture
def breaker(fake_clock) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, recovery_timeout_seconds=30, clock=fake_clock)


def test_opens_after_threshold_and_fails_fast(breaker) -> None:
    trip(breaker, 2)
    assert breaker.state is CircuitState.CLOSED and breaker.failure_count == 2
    trip(breaker, 1)
    assert breaker.state is CircuitState.OPEN
    called = []
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: called.append(1), "GET cmdb_ci")
    assert called == []
    message = str(info.value)
    assert "'servicenow'" in message and "3 failures" in message and "30.0 s" in message
    assert info.value.context.category is ErrorCategory.CIRCUIT_OPEN
    assert isinstance(info.value, OperationalError)
    assert info.value.retry_in_seconds == 30.0 and info.value.breaker_name == "servicenow"


def test_success_resets_consecutive_count(breaker) -> None:
    trip(breaker, 2)
    assert breaker.call(lambda: "ok") == "ok"
    trip(breaker, 2)
    assert breaker.state is CircuitState.CLOSED


def test_half_open_trial_success_closes(breaker, fake_clock) -> None:
    trip(breaker, 3)
    fake_clock.advance(29.9)
    with pytest.raises(CircuitOpenError, match=r"0\.1 s"):
        breaker.call(lambda: "x")
    fake_clock.advance(0.1)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.call(lambda: "trial") == "trial"
    assert breaker.state is CircuitState.CLOSED and breaker.failure_count == 0


def test_half_open_trial_failure_reopens_for_a_full_timeout(breaker, fake_clock) -> None:
    trip(breaker, 3)
    fake_clock.advance(31)
    trip(breaker, 1)
    assert breaker.state is CircuitState.OPEN
    fake_clock.advance(29)
    assert breaker.state is CircuitState.OPEN
    fake_clock.advance(1)
    assert breaker.state is CircuitState.HALF_OPEN


@pytest.mark.parametrize(
    "error",
    [
        RecordNotFoundError("404"),
        AuthenticationError("401"),
        RateLimitError("429"),
        OperationalError("400 bad request", retryable=False),
    ],
)
def test_client_errors_and_rate_limits_do_not_count(breaker, error) -> None:
    trip(breaker, 5, error)
    assert breaker.state is CircuitState.CLOSED and breaker.failure_count == 0


@pytest.mark.parametrize(
    "error",
    [TransientServerError("503"), HibernatingInstanceError("html"), RuntimeError("unclassified")],
)
def test_transient_failures_count(breaker, error) -> None:
    trip(breaker, 3, error)
    assert breaker.state is CircuitState.OPEN


def test_expected_exception_and_custom_predicate(fake_clock) -> None:
    b = CircuitBreaker(failure_threshold=1, expected_exception=OSError, clock=fake_clock)
    with pytest.raises(ValueError):
        b.call(fail(ValueError("not an OSError")))
    assert b.state is CircuitState.CLOSED
    b2 = CircuitBreaker(
        failure_threshold=1, clock=fake_clock, is_failure=lambda e: "count" in str(e)
    )
    with pytest.raises(RuntimeError):
        b2.call(fail(RuntimeError("ignore")))
    assert b2.state is CircuitState.CLOSED
    with pytest.raises(RuntimeError):
        b2.call(fail(RuntimeError("count me")))
    assert b2.state is CircuitState.OPEN


def test_listeners_called_once_per_transition(breaker, fake_clock) -> None:
    changes = []
    breaker.add_listener(lambda b, old, new: changes.append((b.name, old, new)))
    breaker.add_listener(lambda *a: 1 / 0)  # a broken listener does not break calls
    trip(breaker, 3)
    fake_clock.advance(30)
    breaker.call(lambda: None)
    assert changes == [
        ("servicenow", CircuitState.CLOSED, CircuitState.OPEN),
        ("servicenow", CircuitState.OPEN, CircuitState.HALF_OPEN),
        ("servicenow", CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]


def test_transition_is_logged(breaker, log_capture) -> None:
    trip(breaker, 3)
    [event] = log_capture.events("breaker_state_change")
    assert (event["breaker"], event["old"], event["new"]) == ("servicenow", "closed", "open")


def test_failure_rate_rule(fake_clock) -> None:
    b = CircuitBreaker(
        failure_threshold=100,
        failure_rate_threshold=0.5,
        window_size=10,
        minimum_calls=6,
        clock=fake_clock,
    )
    for _ in range(2):
        b.call(lambda: None)
        with pytest.raises(NetworkError):
            b.call(fail(NetworkError("x")))
    assert b.state is CircuitState.CLOSED  # 4 calls < minimum_calls
    b.call(lambda: None)
    with pytest.raises(NetworkError):
        b.call(fail(NetworkError("x")))
    assert b.state is CircuitState.OPEN  # 3 of 6 failed = 50 %


def test_reset_and_force_open(breaker, fake_clock) -> None:
    breaker.force_open(seconds=120)
    with pytest.raises(CircuitOpenError, match=r"120\.0 s"):
        breaker.call(lambda: None)
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED and breaker.call(lambda: 1) == 1


def test_keyboard_interrupt_in_trial_releases_it(breaker, fake_clock) -> None:
    trip(breaker, 3)
    fake_clock.advance(30)
    with pytest.raises(KeyboardInterrupt):
        breaker.call(fail(KeyboardInterrupt()))
    assert breaker.call(lambda: "next trial") == "next trial"


def test_exactly_one_trial_call_under_a_race(breaker, fake_clock) -> None:
    trip(breaker, 3)
    fake_clock.advance(30)
    threads_n = 20
    barrier = threading.Barrier(threads_n)
    trial_entered = threading.Event()
    release_trial = threading.Event()
    trial_calls = []
    outcomes: list[str] = []
    lock = threading.Lock()

    def trial() -> str:
        trial_calls.append(threading.get_ident())
        trial_entered.set()
        release_trial.wait(5)
        return "trial"

    def worker() -> None:
        barrier.wait()
        try:
            result = breaker.call(trial, "probe")
        except CircuitOpenError:
            result = "rejected"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    assert trial_entered.wait(5)
    deadline = time.monotonic() + 5
    while len(outcomes) < threads_n - 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert outcomes.count("rejected") == threads_n - 1  # all others failed fast meanwhile
    release_trial.set()
    for t in threads:
        t.join(5)
    assert len(trial_calls) == 1
    assert sorted(outcomes) == ["rejected"] * (threads_n - 1) + ["trial"]
    assert breaker.state is CircuitState.CLOSED


def test_no_lock_is_held_during_the_call(breaker) -> None:
    inside = threading.Event()
    release = threading.Event()

    def slow() -> str:
        inside.set()
        release.wait(5)
        return "slow"

    results = []
    t = threading.Thread(target=lambda: results.append(breaker.call(slow)))
    t.start()
    assert inside.wait(5)
    started = time.monotonic()
    assert breaker.call(lambda: "fast") == "fast"  # not serialised behind the slow call
    assert time.monotonic() - started < 1
    release.set()
    t.join(5)
    assert results == ["slow"]


def test_the_open_breaker_says_what_failed(breaker) -> None:
    """An unreachable instance had ended a run with only "Circuit 'servicenow' is open"."""
    trip(breaker, 3, NetworkError("connection refused by https://127.0.0.1:1"))
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: None, "GET cmdb_ci")
    message = str(info.value)
    assert "Last failure: NetworkError: connection refused by https://127.0.0.1:1" in message
    assert message.count("What to do:") == 1  # the breaker's advice, not the failure's too
