"""The resilience stack against a misbehaving embedded instance (faults, fake sleeps, fake clocks).

No test waits out a back-off: sleeps are recorded by FakeSleep, whose hook "heals" the server
at the first back-off, so the retry that follows meets a healthy instance.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from snowkit.credentials import CredentialManager
from snowkit.ops.audit import AuditTrail, read_audit
from snowkit.ops.breaker import CircuitBreaker, CircuitOpenError, CircuitState
from snowkit.ops.errors import (
    AmbiguousWriteError,
    HibernatingInstanceError,
    NetworkError,
    TransientServerError,
)
from snowkit.ops.retry import RetryManager, RetryPolicy
from snowkit.sandbox import Sandbox
from snowkit.servicenow import AdaptiveLimiter, Query, ServiceNowAPIClient

from .conftest import FakeClock, FakeSleep, requests_sent


def heal_on_first_sleep(sb: Sandbox, fake_sleep: FakeSleep) -> None:
    fake_sleep.hook = lambda n: sb.set_faults(None) if n == 1 else None


def throttled_once(sb: Sandbox, fake_sleep: FakeSleep, *, requests: int) -> CredentialManager:
    """Rate-limit ``sb`` to ``requests`` a minute until the first back-off sleep; returns
    admin credentials for it."""
    sb.set_faults({"rate_limit": {"requests": requests, "window_seconds": 60}})
    heal_on_first_sleep(sb, fake_sleep)
    return CredentialManager.static(basic=("admin", sb.users["admin"]))


def test_server_errors_on_reads_are_retried_and_recovered(
    sb: Sandbox, client: ServiceNowAPIClient, fake_sleep: FakeSleep
) -> None:
    sb.set_faults({"error_rate": 1.0, "seed": 1})
    heal_on_first_sleep(sb, fake_sleep)
    assert client.count("incident") >= 0
    assert len(fake_sleep.calls) == 1 and 0 <= fake_sleep.calls[0] <= 1.0  # full jitter, base 1
    assert requests_sent(client, "GET", "count") == 2
    retries = {m.operation_name: m.retries for m in client.metrics.all_operation_metrics()}
    assert retries["count"] == 1


def test_server_errors_exhaust_the_attempts_then_raise(
    sb: Sandbox, client: ServiceNowAPIClient, fake_sleep: FakeSleep
) -> None:
    sb.set_faults({"error_rate": 1.0})
    with pytest.raises(TransientServerError) as info:
        client.get("incident", "a" * 32)
    assert info.value.context.http_status in (500, 502, 503)
    assert requests_sent(client, "GET", "get") == 3 and len(fake_sleep.calls) == 2


def test_server_error_on_a_create_is_ambiguous_and_not_resent(
    sb: Sandbox, client: ServiceNowAPIClient, fake_sleep: FakeSleep
) -> None:
    sb.set_faults({"error_rate": 1.0})
    with pytest.raises(AmbiguousWriteError) as info:
        client.create("incident", {"short_description": "5xx"}, source_id="src-5xx")
    assert requests_sent(client, "POST", "create") == 1 and fake_sleep.calls == []
    assert "src-5xx" in str(info.value) and "incident" in str(info.value)


def test_write_statuses_can_be_opted_back_into_retry(
    sb: Sandbox, make_client, fake_sleep: FakeSleep
) -> None:
    sb.set_faults({"error_rate": 1.0})
    heal_on_first_sleep(sb, fake_sleep)
    with make_client(sleep=fake_sleep, retry_write_statuses=(500, 502, 503)) as c:
        created = c.create("incident", {"short_description": "opt-in"})
    assert created["short_description"] == "opt-in" and len(fake_sleep.calls) == 1


@pytest.fixture
def fixed_clock_sandbox(tmp_path) -> Iterator[Sandbox]:
    """A plain-http sandbox whose clock stands still at t=1000 (rate windows are exact)."""
    with Sandbox.start(https=False, state_dir=tmp_path, clock=lambda: 1000.0) as sb:
        yield sb


def test_429_waits_exactly_what_retry_after_says(
    fixed_clock_sandbox: Sandbox, fake_sleep: FakeSleep
) -> None:
    sb = fixed_clock_sandbox
    creds = throttled_once(sb, fake_sleep, requests=2)
    with ServiceNowAPIClient(sb.url, creds, sleep=fake_sleep) as c:
        for _ in range(2):
            c.count("incident")
        c.create("incident", {"short_description": "after 429"})  # a POST: 429 is safe to resend
    # window [960, 1020) at t=1000: Retry-After = 20
    assert fake_sleep.calls == [20.0]
    limited = {m.operation_name: m.rate_limited for m in c.metrics.all_operation_metrics()}
    assert limited["create"] == 1


def test_a_429_reaches_throttle_listeners_before_the_retry_waits(
    fixed_clock_sandbox: Sandbox, fake_sleep: FakeSleep
) -> None:
    # The client retries a 429 itself, so a bulk caller only sees the final success: an
    # adaptive limiter must hear of the throttle when it happens, not a latency spike later.
    sb = fixed_clock_sandbox
    creds = throttled_once(sb, fake_sleep, requests=1)
    heard: list[tuple[float | None, int]] = []
    with ServiceNowAPIClient(sb.url, creds, sleep=fake_sleep) as c:
        c.add_throttle_listener(
            lambda retry_after: heard.append((retry_after, len(fake_sleep.calls)))
        )
        c.count("incident")
        c.count("incident")
    assert heard == [(20.0, 0)]  # told once, with Retry-After, before the client slept


def test_a_429_retry_waits_with_its_slot_lent_out(
    fixed_clock_sandbox: Sandbox, fake_sleep: FakeSleep
) -> None:
    """Sleeping out a Retry-After, a request is not at the instance: a concurrency limiter
    (told in the request's own thread) lends its slot out and takes one again to resend."""
    sb = fixed_clock_sandbox
    sb.set_faults({"rate_limit": {"requests": 1, "window_seconds": 60}})
    limiter = AdaptiveLimiter(initial=1, minimum=1, maximum=1)
    seen: list[int] = []

    def during_the_wait(n: int) -> None:
        seen.append(limiter.in_flight)
        sb.set_faults(None)

    fake_sleep.hook = during_the_wait
    creds = CredentialManager.static(basic=("admin", sb.users["admin"]))
    with ServiceNowAPIClient(sb.url, creds, sleep=fake_sleep) as c:
        c.add_backoff_listener(limiter)
        c.count("incident")
        with limiter:
            c.count("incident")  # 429, then the retry
            assert limiter.in_flight == 1  # its slot again
        c.remove_backoff_listener(limiter)
    assert fake_sleep.calls == [20.0] and seen == [0]
    assert limiter.in_flight == 0


def test_a_retry_waits_with_the_retry_managers_sleep_when_a_listener_is_told(
    fixed_clock_sandbox: Sandbox, fake_sleep: FakeSleep
) -> None:
    sb = fixed_clock_sandbox
    creds = throttled_once(sb, fake_sleep, requests=1)

    def client_sleep(seconds: float) -> None:
        raise AssertionError("the client's own sleep is not the retry manager's")

    manager = RetryManager(sleep=fake_sleep)
    with ServiceNowAPIClient(sb.url, creds, sleep=client_sleep, retry_manager=manager) as c:
        c.add_backoff_listener(AdaptiveLimiter(initial=1, minimum=1, maximum=1))
        c.count("incident")
        c.count("incident")
    assert fake_sleep.calls == [20.0]


def test_rate_limit_headers_slow_the_client_down_before_the_429(
    fixed_clock_sandbox: Sandbox, fake_sleep: FakeSleep
) -> None:
    sb = fixed_clock_sandbox
    sb.set_faults({"rate_limit": {"requests": 10, "window_seconds": 60}})
    creds = CredentialManager.static(basic=("admin", sb.users["admin"]))
    with ServiceNowAPIClient(sb.url, creds, sleep=fake_sleep, wall_clock=lambda: 1000.0) as c:
        for _ in range(10):
            c.count("incident")
    # 9 used of 10 (reserve 10%): the 10th request is spread over the 20 s left in the window
    assert fake_sleep.calls == [20.0]


def test_breaker_opens_at_threshold_and_a_half_open_trial_closes_it(
    sb: Sandbox, make_client, fake_sleep: FakeSleep, fake_clock: FakeClock
) -> None:
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout_seconds=30, clock=fake_clock)
    no_retry = RetryManager(RetryPolicy(max_attempts=1), sleep=fake_sleep, clock=fake_clock)
    with make_client(
        circuit_breaker=breaker,
        retry_manager=no_retry,
        sleep=fake_sleep,
        clock=fake_clock,
    ) as c:
        sb.set_faults({"error_rate": 1.0})
        for _ in range(3):
            with pytest.raises(TransientServerError):
                c.count("incident")
        assert breaker.state is CircuitState.OPEN
        with pytest.raises(CircuitOpenError) as info:
            c.count("incident")
        assert requests_sent(c, "GET", "count") == 3  # the open breaker sent nothing
        assert "servicenow" in str(info.value)
        sb.set_faults(None)
        fake_clock.now += 31
        assert c.count("incident") >= 0  # the half-open trial
        assert breaker.state is CircuitState.CLOSED


def test_reset_connections_are_retried_for_reads(
    sb: Sandbox, client: ServiceNowAPIClient, fake_sleep: FakeSleep
) -> None:
    sb.set_faults({"reset_rate": 1.0})
    heal_on_first_sleep(sb, fake_sleep)
    assert client.get("incident", "b" * 32) is None  # reached the server on the retry
    assert len(fake_sleep.calls) == 1
    assert [c.category.value for c in client.error_handler.contexts] == ["network"]


def test_reset_connection_on_a_write_is_ambiguous(
    sb: Sandbox, client: ServiceNowAPIClient, fake_sleep: FakeSleep
) -> None:
    sb.set_faults({"reset_rate": 1.0})
    with pytest.raises(AmbiguousWriteError):
        client.create("incident", {"short_description": "reset"}, source_id="src-reset")
    assert fake_sleep.calls == []


def test_ambiguous_write_is_flagged_audited_and_not_duplicated(
    sb: Sandbox, make_client, fake_sleep: FakeSleep, trail: AuditTrail, audit_path
) -> None:
    with make_client(sleep=fake_sleep, audit=trail) as c:
        sb.set_faults({"ambiguous_write_rate": 1.0})
        with pytest.raises(AmbiguousWriteError) as info:
            c.create(
                "cmdb_ci_ip_switch", {"name": "amb-1", "serial_number": "AMB1"}, source_id="AMB1"
            )
        sb.set_faults(None)
        err = info.value
        assert not err.retryable and fake_sleep.calls == []
        assert "AMB1" in str(err) and "cmdb_ci_ip_switch" in str(err)
        assert "look the record up" in err.guidance.lower()
        # the write did happen on the server; the client did not send it twice
        assert c.count("cmdb_ci_ip_switch", Query().eq("serial_number", "AMB1")) == 1
    trail.close()
    (entry,) = [e for e in read_audit(audit_path) if e.get("action") == "create"]
    assert entry["outcome"] == "ambiguous" and entry["source_id"] == "AMB1"


def test_read_timeout_on_a_write_is_ambiguous_and_timeouts_grow_on_read_retries(
    sb: Sandbox, admin: CredentialManager, fake_sleep: FakeSleep
) -> None:
    class Cfg:
        class servicenow:
            connect_timeout = 2.0
            read_timeout = 0.05

        class retry:
            max_attempts = 8

    with ServiceNowAPIClient(sb.url, admin, Cfg(), verify=str(sb.ca_path), sleep=fake_sleep) as c:
        sb.set_faults({"latency_ms": 150})
        with pytest.raises(AmbiguousWriteError):
            c.create("incident", {"short_description": "slow"}, source_id="slow-1")
        # a read is retried with 0.05, 0.075, 0.11, 0.17, 0.25, 0.38 ... s read timeouts
        assert c.count("incident", "short_description=slow") >= 0
        assert 1 <= len(fake_sleep.calls) <= 7
        sb.set_faults(None)


def test_hibernating_instance_is_detected_with_what_to_do(
    sb: Sandbox, client: ServiceNowAPIClient
) -> None:
    sb.set_faults({"hibernating": True})
    with pytest.raises(HibernatingInstanceError) as info:
        client.ping()
    assert "developer.servicenow.com" in str(info.value)
    assert "wake" in info.value.guidance.lower()


def test_hibernation_wait_is_bounded_and_rechecks(
    sb: Sandbox, make_client, fake_clock: FakeClock
) -> None:
    sleep = FakeSleep()
    sleep.clock = fake_clock
    sb.set_faults({"hibernating": True})
    with make_client(
        sleep=sleep,
        clock=fake_clock,
        hibernation_wait_seconds=60,
        hibernation_poll_seconds=20,
    ) as c:
        with pytest.raises(HibernatingInstanceError):
            c.ping()
        assert sleep.calls == [20, 20, 20]  # then gave up: the next check would pass 60 s
        sleep.calls.clear()
        sleep.hook = lambda n: sb.set_faults(None) if n == 2 else None
        assert c.ping() > 0  # woke up during the wait (the breaker opened meanwhile: waited too)
        assert sleep.calls in ([20, 20], [20, 20, 20])


def test_unreachable_instance_is_a_network_error(admin: CredentialManager, fake_sleep) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ServiceNowAPIClient(f"http://127.0.0.1:{port}", admin, sleep=fake_sleep) as c:
        with pytest.raises(NetworkError) as info:
            c.ping()
        assert info.value.context.details["request_sent"] is False
        with pytest.raises(NetworkError):  # refused before sending: even a POST is retried
            c.create("incident", {"short_description": "x"})
        assert len(fake_sleep.calls) == 2


def test_concurrent_use_of_one_client(client: ServiceNowAPIClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        ids = list(
            pool.map(
                lambda i: client.create("incident", {"short_description": f"conc-{i}"})["sys_id"],
                range(80),
            )
        )
    assert len(set(ids)) == 80
    assert client.count("incident", "short_descriptionSTARTSWITHconc-") == 80
