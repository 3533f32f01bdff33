"""Fault injection: profile parsing, and each fault observed over real HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from snowkit.sandbox import FaultProfile, Sandbox
from snowkit.sandbox.faults import FaultInjector
from tests.helpers.clocks import FakeClock

from .conftest import session_for


class GatedSleep:
    """Records requested sleeps; blocks while ``gate`` is cleared (to hold a request in flight)."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.gate.wait(5)


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock(start=1_700_000_000.0)


@pytest.fixture(scope="module")
def sleeper() -> GatedSleep:
    return GatedSleep()


@pytest.fixture(scope="module")
def sb(
    tmp_path_factory: pytest.TempPathFactory, clock: FakeClock, sleeper: GatedSleep
) -> Iterator[Sandbox]:
    with Sandbox.start(
        state_dir=tmp_path_factory.mktemp("faults-state"), clock=clock, sleep=sleeper
    ) as sandbox:
        yield sandbox


@pytest.fixture
def admin(sb: Sandbox) -> Iterator[requests.Session]:
    with session_for(sb) as session:
        yield session
    sb.set_faults(None)


def _list(session: requests.Session, sb: Sandbox) -> requests.Response:
    return session.get(f"{sb.url}/api/now/table/incident", params={"sysparm_limit": "1"})


# -- profile parsing --------------------------------------------------------------------------


def test_profile_validation_says_what_is_wrong(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown fault profile keys"):
        FaultProfile.from_dict({"latency": 5})
    with pytest.raises(ValueError, match="error_rate"):
        FaultProfile.from_dict({"error_rate": 1.5})
    with pytest.raises(ValueError, match="rate_limit"):
        FaultProfile.from_dict({"rate_limit": {"window_seconds": 5}})
    with pytest.raises(ValueError, match="not found"):
        FaultProfile.load(tmp_path / "missing.json")
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"seed": 3, "outage": {"after_seconds": 1, "duration_seconds": 2}}))
    profile = FaultProfile.load(path)
    assert profile.outage is not None and profile.outage.duration_seconds == 2.0


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "seed": st.integers(0, 2**31),
            "latency_ms": st.floats(0, 1e4),
            "error_rate": st.floats(0, 1),
            "reset_rate": st.floats(0, 1),
            "max_concurrency": st.integers(1, 64),
            "hibernating": st.booleans(),
            "missing_tables": st.lists(st.from_regex(r"[a-z_]{1,12}", fullmatch=True)),
            "rate_limit": st.fixed_dictionaries(
                {"requests": st.integers(0, 1000), "window_seconds": st.floats(0.5, 7200)}
            ),
        },
    )
)
def test_profile_round_trips_through_json(data: dict):
    profile = FaultProfile.from_dict(data)
    assert FaultProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


def test_same_seed_same_fault_sequence():
    profile = FaultProfile.from_dict({"seed": 42, "error_rate": 0.5, "reset_rate": 0.3})

    def sequence() -> list:
        injector = FaultInjector(profile)
        return [(injector.should_reset(), injector.error_status()) for _ in range(50)]

    assert sequence() == sequence()
    assert any(status for _, status in sequence())


# -- faults over HTTP ---------------------------------------------------------------------------


def test_error_rate_answers_5xx_with_the_envelope(sb: Sandbox, admin: requests.Session):
    sb.set_faults({"seed": 1, "error_rate": 1.0})
    statuses = set()
    for _ in range(12):
        response = _list(admin, sb)
        assert response.json()["status"] == "failure"
        statuses.add(response.status_code)
    assert statuses <= {500, 502, 503} and len(statuses) > 1


def test_reset_drops_the_connection_and_the_server_survives(sb: Sandbox, admin: requests.Session):
    sb.set_faults({"reset_rate": 1.0})
    with pytest.raises(requests.ConnectionError):
        _list(admin, sb)
    sb.set_faults({})
    assert _list(admin, sb).status_code == 200


def test_ambiguous_write_commits_then_drops(sb: Sandbox, admin: requests.Session):
    tag = uuid.uuid4().hex
    sb.set_faults({"ambiguous_write_rate": 1.0})
    with pytest.raises(requests.ConnectionError):
        admin.post(f"{sb.url}/api/now/table/incident", json={"short_description": tag})
    assert _list(admin, sb).status_code == 200  # reads are not affected
    sb.set_faults(None)
    found = admin.get(f"{sb.url}/api/now/table/incident", params={"short_description": tag}).json()[
        "result"
    ]
    assert len(found) == 1  # the write happened although the client never heard back


def test_rate_limit_per_user_with_headers(sb: Sandbox, admin: requests.Session, clock: FakeClock):
    clock.now = 1_700_000_000.0  # 2000 s into an hourly window
    sb.set_faults({"rate_limit": {"requests": 2, "window_seconds": 3600}})
    allowed = [_list(admin, sb) for _ in range(2)]
    assert all(r.status_code == 200 for r in allowed)
    assert allowed[0].headers["X-RateLimit-Limit"] == "2"
    reset = int(allowed[0].headers["X-RateLimit-Reset"])
    assert reset == 1_700_000_000 - 1_700_000_000 % 3600 + 3600
    denied = _list(admin, sb)
    assert denied.status_code == 429
    assert denied.json()["error"]["message"] == "Rate limit exceeded"
    assert int(denied.headers["Retry-After"]) == reset - 1_700_000_000
    assert denied.headers["X-RateLimit-Rule"]
    with session_for(sb, "readonly") as other:
        assert _list(other, sb).status_code == 200  # counted per user
    clock.now = reset + 1
    assert _list(admin, sb).status_code == 200


def test_latency_uses_the_injected_sleep(sb: Sandbox, admin: requests.Session, sleeper: GatedSleep):
    sleeper.calls.clear()
    sb.set_faults({"latency_ms": 250, "latency_jitter_ms": 100, "seed": 5})
    _list(admin, sb)
    assert len(sleeper.calls) == 1
    assert 0.25 <= sleeper.calls[0] <= 0.35


def test_concurrency_cap_queues_then_429(sb: Sandbox, admin: requests.Session, sleeper: GatedSleep):
    sleeper.calls.clear()
    sb.set_faults({"max_concurrency": 1, "queue_timeout_ms": 50, "latency_ms": 1})
    sleeper.gate.clear()  # the first request holds the only slot inside its latency sleep
    results: list[int] = []
    holder = threading.Thread(target=lambda: results.append(_list(admin, sb).status_code))
    holder.start()
    try:
        deadline = time.monotonic() + 5
        while not sleeper.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        with session_for(sb) as second:
            blocked = _list(second, sb)
        assert blocked.status_code == 429
        assert blocked.headers["Retry-After"] == "1"
    finally:
        sleeper.gate.set()
        holder.join(5)
    assert results == [200]


def test_hibernating_instance_serves_the_html_page(sb: Sandbox, admin: requests.Session):
    sb.set_faults({"hibernating": True})
    response = _list(admin, sb)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Instance Hibernating page" in response.text
    assert "Your instance is hibernating" in response.text


def test_missing_tables_look_like_a_missing_plugin(sb: Sandbox, admin: requests.Session):
    sb.set_faults({"missing_tables": ["incident"]})
    response = _list(admin, sb)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Invalid table incident"
    sb.set_faults(None)
    assert _list(admin, sb).status_code == 200


def test_oauth_endpoint_is_exempt_from_faults(sb: Sandbox):
    sb.set_faults({"error_rate": 1.0, "hibernating": True})
    try:
        response = requests.post(
            f"{sb.url}/oauth_token.do",
            data={"grant_type": "client_credentials"},
            auth=(sb.oauth_client.client_id, sb.oauth_client.client_secret),
            verify=str(sb.ca_path),
            timeout=10,
        )
    finally:
        sb.set_faults(None)
    assert response.status_code == 200


def test_outage_window_refuses_connections_then_recovers(
    sb: Sandbox, admin: requests.Session, clock: FakeClock
):
    sb.set_faults({"outage": {"after_seconds": 10, "duration_seconds": 30}})
    assert _list(admin, sb).status_code == 200  # before the window
    clock.now += 15
    _wait_until(lambda: not sb.accepting)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", sb.port), timeout=2).close()
    with pytest.raises(requests.ConnectionError):
        _list(admin, sb)  # an open keep-alive connection is dropped too
    clock.now += 30
    _wait_until(lambda: sb.accepting)
    assert _list(admin, sb).status_code == 200  # same port again


def _wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)
