"""Retry manager: back-off bounds, Retry-After, deadline, budget, hooks (fake clock and sleep)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from snowkit.ops.errors import (
    AmbiguousWriteError,
    AuthenticationError,
    DeadlineExceededError,
    NetworkError,
    RateLimitError,
    RetryBudgetExhaustedError,
    TransientServerError,
)
from snowkit.ops.retry import RetryBudget, RetryManager, RetryPolicy, parse_retry_after

from .conftest import CannedResponse, FakeClock


class Flaky:
    """Fails with the given exceptions, then returns "ok"."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def manager(clock: FakeClock, **kwargs) -> RetryManager:
    return RetryManager(sleep=clock.sleep, clock=clock, **kwargs)


def test_success_needs_no_sleep(fake_clock) -> None:
    op = Flaky()
    assert manager(fake_clock).execute_with_retry(op) == "ok"
    assert op.calls == 1 and fake_clock.sleeps == []


def test_retries_transient_errors_then_succeeds(fake_clock) -> None:
    op = Flaky(TransientServerError("503"), NetworkError("reset"))
    policy = RetryPolicy(max_attempts=3, base_delay_seconds=1.0, max_delay_seconds=10)
    assert manager(fake_clock).execute_with_retry(op, policy, "get") == "ok"
    assert op.calls == 3
    assert len(fake_clock.sleeps) == 2
    assert 0 <= fake_clock.sleeps[0] <= 1.0 and 0 <= fake_clock.sleeps[1] <= 2.0


def test_gives_up_after_max_attempts_with_the_last_error(fake_clock) -> None:
    op = Flaky(*(TransientServerError(f"503 #{i}") for i in range(5)))
    with pytest.raises(TransientServerError, match="#2"):
        manager(fake_clock).execute_with_retry(op, RetryPolicy(max_attempts=3))
    assert op.calls == 3


@pytest.mark.parametrize(
    "error",
    [
        AmbiguousWriteError("POST outcome unknown"),
        AuthenticationError("401"),
        ValueError("bug"),
    ],
)
def test_non_retryable_errors_fail_at_once(fake_clock, error) -> None:
    op = Flaky(error)
    with pytest.raises(type(error)):
        manager(fake_clock).execute_with_retry(op, RetryPolicy(max_attempts=5))
    assert op.calls == 1 and fake_clock.sleeps == []


def test_ambiguous_write_is_never_retried_even_if_marked_retryable(fake_clock) -> None:
    error = AmbiguousWriteError("x", retryable=True)
    op = Flaky(error)
    with pytest.raises(AmbiguousWriteError):
        manager(fake_clock).execute_with_retry(op, RetryPolicy(max_attempts=5))
    assert op.calls == 1


def test_raw_requests_errors_are_retried_by_type(fake_clock) -> None:
    op = Flaky(requests.ConnectionError("refused"))
    assert manager(fake_clock).execute_with_retry(op) == "ok"
    assert op.calls == 2


def test_rate_limit_waits_retry_after(fake_clock) -> None:
    op = Flaky(RateLimitError("429", details={"retry_after": 7}))
    assert manager(fake_clock).execute_with_retry(op) == "ok"
    assert fake_clock.sleeps == [7.0]


def test_a_retry_after_beyond_the_cap_fails_at_once_with_the_reset_time(
    fake_clock, wall_clock
) -> None:
    op = Flaky(RateLimitError("429", details={"retry_after": 3600}))
    mgr = RetryManager(sleep=fake_clock.sleep, clock=fake_clock, wall_clock=wall_clock)
    with pytest.raises(RateLimitError) as info:
        mgr.execute_with_retry(op, RetryPolicy(max_retry_after_seconds=30), "query")
    assert fake_clock.sleeps == [] and op.calls == 1  # no request into the closed window
    assert info.value.retry_after == 3600 and not info.value.context.retryable
    assert "2026-01-01T01:00:00+00:00" in str(info.value)  # when it resets: now + 3600 s
    assert "max_retry_after_seconds" in info.value.context.guidance


def test_a_bare_429_waits_the_cap_not_a_default_taken_for_the_instances_word(
    fake_clock, wall_clock
) -> None:
    """A 429 naming no wait got snowkit's own 60 s default judged as "ServiceNow asks 60 s",
    beyond a 30 s cap: the call failed at once instead of waiting 30 s and succeeding."""
    bare = RateLimitError("429", details={"retry_after": 60.0, "retry_after_default": True})
    op = Flaky(bare)
    mgr = RetryManager(sleep=fake_clock.sleep, clock=fake_clock, wall_clock=wall_clock)
    assert mgr.execute_with_retry(op, RetryPolicy(max_retry_after_seconds=30), "get") == "ok"
    assert fake_clock.sleeps == [30.0] and op.calls == 2


def test_a_bare_429_from_the_instance_is_marked_as_naming_no_wait() -> None:
    from types import SimpleNamespace

    from snowkit.ops.classify import classify_response

    bare = SimpleNamespace(status_code=429, headers={}, text="", content=b"")
    named = SimpleNamespace(status_code=429, headers={"Retry-After": "7"}, text="", content=b"")
    assert RateLimitError(classify_response(bare)).asked_wait is None
    assert RateLimitError(classify_response(bare)).retry_after == 60.0  # when no cap is set
    assert RateLimitError(classify_response(named)).asked_wait == 7.0


def test_a_retry_after_beyond_the_deadline_is_judged_uncapped(fake_clock, wall_clock) -> None:
    op = Flaky(RateLimitError("429", details={"retry_after": 3600}))
    policy = RetryPolicy(max_attempts=4, deadline_seconds=600)  # the cap (120 s) fits in 600
    mgr = RetryManager(sleep=fake_clock.sleep, clock=fake_clock, wall_clock=wall_clock)
    with pytest.raises(DeadlineExceededError) as info:
        mgr.execute_with_retry(op, policy, "query")
    assert fake_clock.sleeps == [] and op.calls == 1
    assert "3600.0 s" in str(info.value)


def test_retry_after_beyond_deadline_fails_at_once(fake_clock, wall_clock) -> None:
    op = Flaky(RateLimitError("429", details={"retry_after": 90}))
    policy = RetryPolicy(max_attempts=5, deadline_seconds=60, max_retry_after_seconds=600)
    mgr = RetryManager(sleep=fake_clock.sleep, clock=fake_clock, wall_clock=wall_clock)
    with pytest.raises(DeadlineExceededError) as info:
        mgr.execute_with_retry(op, policy, "load cmdb_ci")
    assert fake_clock.sleeps == [] and op.calls == 1
    message = str(info.value)
    assert "load cmdb_ci" in message and "90.0 s" in message
    assert "2026-01-01T00:01:30+00:00" in message  # the reset time: now + 90 s
    assert isinstance(info.value.__cause__, RateLimitError)
    assert not info.value.context.retryable


def test_deadline_counts_time_already_spent(fake_clock) -> None:
    calls = []

    def op() -> str:
        calls.append(fake_clock.now)
        fake_clock.advance(20)  # each attempt takes 20 s
        raise TransientServerError("503")

    policy = RetryPolicy(max_attempts=10, base_delay_seconds=1, deadline_seconds=45, jitter=False)
    with pytest.raises(DeadlineExceededError):
        manager(fake_clock).execute_with_retry(op, policy)
    # attempts at 0, 21 and 43 s; after the third (63 s) nothing is left: no further sleep
    assert [c - 1_000 for c in calls] == [0, 21, 43]
    assert fake_clock.sleeps == [1.0, 2.0]


def test_retry_budget_exhaustion_wraps_the_last_error(fake_clock) -> None:
    budget = RetryBudget(ratio=0.0, min_retries=1, window_seconds=10, clock=fake_clock)
    mgr = manager(fake_clock, budget=budget)
    assert mgr.execute_with_retry(Flaky(NetworkError("a"))) == "ok"  # uses the only token
    with pytest.raises(RetryBudgetExhaustedError) as info:
        mgr.execute_with_retry(Flaky(NetworkError("b")), operation_name="get x")
    assert isinstance(info.value.__cause__, NetworkError)
    assert "get x" in str(info.value)
    fake_clock.advance(11)  # the window slides: tokens come back
    assert mgr.execute_with_retry(Flaky(NetworkError("c"))) == "ok"


def test_retry_budget_ratio_and_floor(fake_clock) -> None:
    budget = RetryBudget(ratio=0.5, min_retries=2, window_seconds=10, clock=fake_clock)
    for _ in range(10):
        budget.record_request()
    granted = sum(budget.try_acquire_retry() for _ in range(20))
    assert granted == 7  # 2 + 0.5 * 10
    fake_clock.advance(10.5)
    assert budget.allowed() == 2


def test_hooks_and_log_event(fake_clock, log_capture) -> None:
    seen = []
    mgr = manager(fake_clock, on_retry=lambda *args: seen.append(args))
    mgr.add_hook(lambda *args: 1 / 0)  # a broken hook must not change the outcome
    err = TransientServerError("503", http_status=503)
    assert mgr.execute_with_retry(Flaky(err), operation_name="query cmdb_ci") == "ok"
    assert len(seen) == 1
    attempt, delay, exc, name = seen[0]
    assert (attempt, exc, name) == (1, err, "query cmdb_ci") and delay == fake_clock.sleeps[0]
    [event] = log_capture.events("retry_scheduled")
    assert event["operation"] == "query cmdb_ci" and event["attempt"] == 1
    assert event["reason"] == "servicenow_api 503" and event["delay_s"] >= 0


def test_rate_limited_event_is_logged(fake_clock, log_capture) -> None:
    manager(fake_clock).execute_with_retry(Flaky(RateLimitError("429", details={"retry_after": 3})))
    [event] = log_capture.events("rate_limited")
    assert event["retry_after_s"] == 3.0


def test_handle_rate_limit(wall_clock) -> None:
    mgr = RetryManager(wall_clock=wall_clock)
    assert mgr.handle_rate_limit(SimpleNamespace(headers={"Retry-After": "12"})) == 12.0
    reset = str(int(wall_clock.now) + 300)
    assert mgr.handle_rate_limit(SimpleNamespace(headers={"X-RateLimit-Reset": reset})) == 120.0
    assert mgr.handle_rate_limit(SimpleNamespace(headers={})) == 60.0
    wider = RetryManager(RetryPolicy(max_retry_after_seconds=600), wall_clock=wall_clock)
    assert wider.handle_rate_limit(SimpleNamespace(headers={"X-RateLimit-Reset": reset})) == 300.0


def test_policy_from_config() -> None:
    from snowkit.config import RetryConfig

    policy = RetryPolicy.from_config(RetryConfig(max_attempts=4, deadline_seconds=30))
    assert policy.max_attempts == 4 and policy.deadline_seconds == 30


def test_no_jitter_is_exponential() -> None:
    mgr = RetryManager()
    policy = RetryPolicy(base_delay_seconds=0.5, max_delay_seconds=3, jitter=False)
    assert [mgr.calculate_delay(n, policy) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 3, 3]


@settings(max_examples=300, deadline=None)
@given(
    attempt=st.integers(min_value=1, max_value=200),
    base=st.floats(min_value=0.01, max_value=10),
    cap=st.floats(min_value=0.01, max_value=300),
    exp_base=st.floats(min_value=1.0, max_value=4.0),
)
def test_backoff_within_full_jitter_bounds(attempt, base, cap, exp_base) -> None:
    policy = RetryPolicy(base_delay_seconds=base, max_delay_seconds=cap, exponential_base=exp_base)
    delay = RetryManager().calculate_delay(attempt, policy)
    try:
        ceiling = min(cap, base * exp_base ** (attempt - 1))
    except OverflowError:
        ceiling = cap
    assert 0 <= delay <= ceiling + 1e-9


def test_jitter_keeps_spread_at_the_cap() -> None:
    policy = RetryPolicy(base_delay_seconds=1, max_delay_seconds=30)
    delays = {round(RetryManager().calculate_delay(20, policy), 6) for _ in range(50)}
    assert len(delays) > 40  # not everyone waits exactly the cap


NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        (30, 30.0),
        ("Thu, 01 Jan 2026 00:00:45 GMT", 45.0),  # IMF-fixdate
        ("Thursday, 01-Jan-26 00:00:45 GMT", 45.0),  # RFC 850
        ("Thu Jan  1 00:00:45 2026", 45.0),  # asctime, read as UTC
        ("Wed, 31 Dec 2025 23:00:00 GMT", 0.0),  # in the past
        ("-1", None),
        ("+5", None),
        ("soon", None),
        ("", None),
        (None, None),
        (-3, None),
    ],
)
def test_parse_retry_after(value, expected) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_with_float_now() -> None:
    later = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, NOW.timestamp()) == 90.0
    assert parse_retry_after("100000", NOW, maximum=120) == 120


@settings(max_examples=500, deadline=None)
@given(
    value=st.one_of(
        st.none(),
        st.text(max_size=60),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.floats(allow_nan=True, allow_infinity=True),
        st.datetimes(timezones=st.just(UTC)).map(lambda d: format_datetime(d, usegmt=True)),
    ),
    cap=st.one_of(st.none(), st.floats(min_value=0, max_value=10_000)),
)
def test_parse_retry_after_never_raises_never_negative_capped(value, cap) -> None:
    result = parse_retry_after(value, NOW, maximum=cap)
    if result is not None:
        assert result >= 0
        if cap is not None:
            assert result <= cap


def test_raw_requests_timeouts_follow_the_method(canned_server, fake_clock) -> None:
    url = canned_server.route("/slow", CannedResponse(200, delay=0.4))

    def call(method: str):
        return lambda: requests.request(method, url, json={"a": 1}, timeout=(2, 0.05))

    mgr = manager(fake_clock)
    with pytest.raises(requests.ReadTimeout):
        mgr.execute_with_retry(call("POST"), RetryPolicy(max_attempts=3))
    posts = [r for r in canned_server.received if r["method"] == "POST"]
    assert len(posts) == 1  # the ambiguous write was not sent again
    with pytest.raises(requests.ReadTimeout):
        mgr.execute_with_retry(call("GET"), RetryPolicy(max_attempts=3))
    gets = [r for r in canned_server.received if r["method"] == "GET"]
    assert len(gets) == 3


def test_a_spent_deadline_says_so_with_its_own_guidance(fake_clock) -> None:
    def op() -> str:
        fake_clock.advance(30)  # the attempt alone uses the whole deadline
        raise NetworkError("ReadTimeout", retryable=True)

    policy = RetryPolicy(max_attempts=3, base_delay_seconds=0, deadline_seconds=30)
    with pytest.raises(DeadlineExceededError) as info:
        manager(fake_clock).execute_with_retry(op, policy, "query")
    assert "30 s deadline is spent" in str(info.value) and "0.0 s left" not in str(info.value)
    assert "retry.deadline_seconds" in info.value.context.guidance
