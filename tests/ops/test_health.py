"""HealthMonitor with fake clients: statuses, timeouts, running loops, health+json shape, alerts."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import orjson
import pytest

from snowkit.ops.errors import AuthenticationError, HibernatingInstanceError, NetworkError
from snowkit.ops.health import (
    HealthCheck,
    HealthMonitor,
    HealthStatus,
    HealthThresholds,
    to_health_json,
)
from snowkit.ops.metrics import MetricsCollector


class FakeClient:
    instance_url = "https://admin:hunter22@dev12345.service-now.com/"

    def __init__(self, result: float | BaseException | threading.Event) -> None:
        self.result = result

    def ping(self) -> float:
        if isinstance(self.result, BaseException):
            raise self.result
        if isinstance(self.result, threading.Event):
            self.result.wait(5)
            return 1.0
        return self.result


class FakeCredentials:
    def __init__(self, availability: dict[str, bool]) -> None:
        self._availability = availability

    def availability(self) -> dict[str, bool]:
        return self._availability


def _run(monitor: HealthMonitor, timeout: float = 2.0) -> dict[str, HealthCheck]:
    return asyncio.run(monitor.run_all_checks(timeout_seconds=timeout))


def test_fast_instance_is_healthy() -> None:
    checks = _run(HealthMonitor(client=FakeClient(12.0)))
    check = checks["servicenow"]
    assert check.status is HealthStatus.HEALTHY
    assert check.response_time_ms == 12.0
    assert check.component_id == "dev12345.service-now.com"


def test_slow_instance_is_degraded_by_threshold() -> None:
    monitor = HealthMonitor(
        client=FakeClient(2500.0), thresholds=HealthThresholds(response_time_degraded_ms=2000)
    )
    check = _run(monitor)["servicenow"]
    assert check.status is HealthStatus.DEGRADED
    assert "2500" in check.message


def test_hibernating_instance_says_how_to_wake_it() -> None:
    client = FakeClient(HibernatingInstanceError("instance is hibernating"))
    check = _run(HealthMonitor(client=client))["servicenow"]
    assert check.status is HealthStatus.UNHEALTHY
    assert "developer.servicenow.com" in check.message
    assert check.details["reason"] == "hibernating"


def test_auth_error_carries_its_guidance() -> None:
    client = FakeClient(AuthenticationError("401 User Not Authenticated"))
    check = _run(HealthMonitor(client=client))["servicenow"]
    assert check.status is HealthStatus.UNHEALTHY
    assert "SERVICENOW_" in check.message  # the error's guidance names the variables to set
    assert check.details["reason"] == "authentication"


def test_network_error_is_unhealthy() -> None:
    check = _run(HealthMonitor(client=FakeClient(NetworkError("connection refused"))))["servicenow"]
    assert check.status is HealthStatus.UNHEALTHY
    assert "connection refused" in check.message


def test_hanging_check_times_out_without_crashing() -> None:
    release = threading.Event()
    try:
        monitor = HealthMonitor(client=FakeClient(release))
        checks = _run(monitor, timeout=0.2)
        check = checks["servicenow"]
        assert check.status is HealthStatus.UNHEALTHY
        assert check.details["reason"] == "timeout"
        assert checks["system"].status in set(HealthStatus)  # the others still ran
    finally:
        release.set()


def test_raising_and_async_and_odd_checks() -> None:
    monitor = HealthMonitor()

    def boom() -> HealthCheck:
        raise RuntimeError("kaput")

    async def async_ok() -> HealthStatus:
        await asyncio.sleep(0)
        return HealthStatus.HEALTHY

    async def async_hang() -> bool:
        await asyncio.sleep(30)
        return True

    monitor.register_check("boom", boom)
    monitor.register_check("async_ok", async_ok)
    monitor.register_check("async_hang", async_hang)
    monitor.register_check("flag", lambda: False)
    checks = _run(monitor, timeout=0.2)
    assert checks["boom"].status is HealthStatus.UNHEALTHY
    assert "kaput" in checks["boom"].message
    assert checks["async_ok"].status is HealthStatus.HEALTHY
    assert checks["async_hang"].details["reason"] == "timeout"
    assert checks["flag"].status is HealthStatus.UNHEALTHY
    assert monitor.get_overall_status(checks) is HealthStatus.UNHEALTHY


def test_checks_run_concurrently() -> None:
    monitor = HealthMonitor()
    barrier = threading.Barrier(3, timeout=2)

    def waits() -> bool:
        barrier.wait()  # only passes if all three run at the same time
        return True

    for name in ("a", "b", "c"):
        monitor.register_check(name, waits)
    checks = _run(monitor)
    assert all(checks[n].status is HealthStatus.HEALTHY for n in "abc")


def test_credentials_never_reveal_values() -> None:
    none = _run(HealthMonitor(credentials=FakeCredentials({"api_key": False, "basic": False})))
    assert none["credentials"].status is HealthStatus.UNHEALTHY
    some = _run(HealthMonitor(credentials=FakeCredentials({"api_key": True, "basic": False})))
    check = some["credentials"]
    assert check.status is HealthStatus.HEALTHY
    assert check.details["available_methods"] == ["api_key"]
    assert check.details["unavailable_methods"] == ["basic"]


def test_credentials_judged_on_auth_methods_not_sources() -> None:
    report = {
        "instance_configured": True,
        "op_installed": True,
        "op_signed_in": False,
        "op_references": True,
        "env_username": True,
        "api_key": False,
        "oauth": False,
        "basic": False,
    }
    check = _run(HealthMonitor(credentials=FakeCredentials(report)))["credentials"]
    assert check.status is HealthStatus.UNHEALTHY
    assert "op signin" in check.message
    assert "instance_configured" in check.details["sources_available"]


def test_with_a_real_credential_manager() -> None:
    from snowkit.credentials import CredentialManager

    manager = CredentialManager.static(basic=("admin", "s3cret-pass"))
    check = _run(HealthMonitor(credentials=manager))["credentials"]
    assert check.status is HealthStatus.HEALTHY
    assert check.details["available_methods"] == ["basic"]
    assert "s3cret-pass" not in orjson.dumps(check.to_dict()).decode()


def test_system_resources_thresholds(tmp_path: Path) -> None:
    strict = HealthThresholds(memory_degraded_mb=0.001, memory_unhealthy_mb=1e9)
    check = HealthMonitor(thresholds=strict, state_dir=tmp_path).check_system_resources()
    assert check.status is HealthStatus.DEGRADED
    assert check.details["measurements"]["memoryRss"]["status"] == "degraded"
    lax = HealthThresholds(disk_free_degraded_mb=0, disk_free_unhealthy_mb=0)
    ok = HealthMonitor(thresholds=lax, state_dir=tmp_path / "missing").check_system_resources()
    assert ok.details["measurements"]["diskFree"]["status"] == "healthy"


def test_breaker_check_and_metrics_health_gauge() -> None:
    metrics = MetricsCollector()
    metrics.set_breaker_state("servicenow", "open")
    monitor = HealthMonitor(metrics=metrics)
    checks = _run(monitor)
    assert checks["circuit_breaker"].status is HealthStatus.UNHEALTHY
    assert metrics.system_metrics().health_status == "unhealthy"


def test_run_all_checks_sync_inside_a_running_loop() -> None:
    monitor = HealthMonitor(client=FakeClient(3.0))

    async def notebook_cell() -> dict[str, HealthCheck]:
        return monitor.run_all_checks_sync(timeout_seconds=2)

    checks = asyncio.run(notebook_cell())
    assert checks["servicenow"].status is HealthStatus.HEALTHY
    assert monitor.run_all_checks_sync(timeout_seconds=2)["servicenow"].response_time_ms == 3.0


def test_health_json_shape() -> None:
    monitor = HealthMonitor(client=FakeClient(2500.0), credentials=FakeCredentials({"basic": True}))
    checks = _run(monitor)
    doc = monitor.to_health_json(checks)
    assert doc["status"] == "warn"
    assert doc["serviceId"] == "snowkit"
    assert {"version", "releaseId", "checks", "output"} <= set(doc)
    entry = doc["checks"]["servicenow:responseTime"][0]
    assert entry["componentType"] == "datastore"
    assert entry["observedValue"] == 2500.0 and entry["observedUnit"] == "ms"
    assert entry["status"] == "warn" and "output" in entry and entry["time"]
    assert doc["checks"]["credentials:available"][0]["status"] == "pass"
    assert {"system:memoryRss", "system:cpuUtilization", "system:diskFree"} <= set(doc["checks"])
    orjson.dumps(doc)  # serializable as is
    assert to_health_json({})["status"] == "pass"
    assert HealthStatus.UNHEALTHY.health_json == "fail"


def test_alerts_reach_the_callback_and_the_log(tmp_path: Path) -> None:
    from snowkit.ops.logging import configure_logging

    log_file = tmp_path / "log.jsonl"
    configure_logging(file_path=log_file, console=False)
    alerts: list[HealthCheck] = []
    # Thresholds the machine cannot trip: only the sleeping instance may raise an alert here,
    # however busy the test machine is.
    calm = HealthThresholds(
        cpu_degraded_percent=1000.0,
        memory_degraded_mb=1e9,
        memory_unhealthy_mb=1e9,
        disk_free_degraded_mb=0.0,
        disk_free_unhealthy_mb=0.0,
    )
    monitor = HealthMonitor(
        client=FakeClient(HibernatingInstanceError("asleep")),
        on_alert=alerts.append,
        thresholds=calm,
    )
    monitor.register_check("broken_hook_is_fine", lambda: True)
    _run(monitor)
    assert [a.name for a in alerts] == ["servicenow"]
    events = [orjson.loads(line) for line in log_file.read_bytes().splitlines()]
    alert_lines = [e for e in events if e["event"] == "health_alert"]
    assert alert_lines and alert_lines[0]["check"] == "servicenow"
    assert any(e["event"] == "health_check" for e in events)
    configure_logging()


def test_alert_hook_failure_does_not_break_the_monitor() -> None:
    def hook(_check: HealthCheck) -> None:
        raise RuntimeError("pager down")

    monitor = HealthMonitor(client=FakeClient(NetworkError("down")), on_alert=hook)
    checks = _run(monitor)
    assert checks["servicenow"].status is HealthStatus.UNHEALTHY


@pytest.mark.parametrize("value", [True, HealthStatus.DEGRADED])
def test_simple_return_values_are_accepted(value: object) -> None:
    monitor = HealthMonitor()
    monitor.register_check("custom", lambda: value)
    assert _run(monitor)["custom"].status in {HealthStatus.HEALTHY, HealthStatus.DEGRADED}


def test_against_the_embedded_instance() -> None:
    """Black-box over loopback HTTP: the real client, the sandbox, hibernation, a bad password."""
    from snowkit.credentials import CredentialManager
    from snowkit.sandbox import Sandbox
    from snowkit.servicenow import ServiceNowAPIClient

    with Sandbox.start(https=False) as sandbox:
        credentials = CredentialManager.static(basic=("admin", sandbox.users["admin"]))
        metrics = MetricsCollector()
        client = ServiceNowAPIClient(
            sandbox.url, credentials, metrics=metrics, sleep=lambda _: None
        )
        monitor = HealthMonitor(client=client, credentials=credentials, metrics=metrics)
        checks = monitor.run_all_checks_sync(timeout_seconds=10)
        assert checks["servicenow"].status is HealthStatus.HEALTHY, checks["servicenow"].message
        assert checks["servicenow"].component_id == "127.0.0.1"
        assert monitor.to_health_json(checks)["checks"]["servicenow:responseTime"][0]["status"] in {
            "pass",
            "warn",
        }

        sandbox.set_faults({"hibernating": True})
        asleep = monitor.run_all_checks_sync(timeout_seconds=10)["servicenow"]
        assert asleep.status is HealthStatus.UNHEALTHY
        assert "developer.servicenow.com" in asleep.message
        sandbox.set_faults(None)

        wrong = CredentialManager.static(basic=("admin", "wrong-password-1"))
        rejected_client = ServiceNowAPIClient(sandbox.url, wrong, sleep=lambda _: None)
        rejected = HealthMonitor(client=rejected_client).run_all_checks_sync(timeout_seconds=10)
        check = rejected["servicenow"]
        assert check.status is HealthStatus.UNHEALTHY
        assert check.details["reason"] == "authentication"
        assert "SERVICENOW_PASSWORD" in check.message
        assert "wrong-password-1" not in orjson.dumps(check.to_dict()).decode()


def test_a_busy_loader_process_does_not_degrade_the_system_check(monkeypatch) -> None:
    # One process keeping a core or two busy is a loader doing its job; only a saturated
    # machine is a health problem.
    import psutil

    monitor = HealthMonitor()
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: 20.0)
    monkeypatch.setattr(monitor._process, "cpu_percent", lambda interval=None: 270.0)
    check = monitor.check_system_resources()
    measurements = check.details["measurements"]
    assert measurements["cpuUtilization"]["status"] == "healthy"
    assert measurements["processCpu"]["value"] == 270.0


def test_a_saturated_machine_degrades_the_system_check(monkeypatch) -> None:
    import psutil

    monitor = HealthMonitor()
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: 99.0)
    check = monitor.check_system_resources()
    assert check.details["measurements"]["cpuUtilization"]["status"] == "degraded"


def test_a_breaker_past_its_recovery_timeout_is_reported_half_open_without_a_call() -> None:
    from snowkit.ops.breaker import CircuitBreaker

    now = [0.0]
    breaker = CircuitBreaker(
        failure_threshold=1,
        recovery_timeout_seconds=60,
        clock=lambda: now[0],
        log_transitions=False,
    )
    metrics = MetricsCollector()
    metrics.watch_breaker(breaker)
    with pytest.raises(ConnectionError):
        breaker.call(lambda: (_ for _ in ()).throw(ConnectionError("down")))
    monitor = HealthMonitor(metrics=metrics)
    assert monitor.check_circuit_breakers().status is HealthStatus.UNHEALTHY
    now[0] = 3600.0  # an hour later: a trial call would be let through
    check = monitor.check_circuit_breakers()
    assert check.status is HealthStatus.DEGRADED and "half-open" in check.message
    assert b'snowkit_circuit_breaker_state{breaker="servicenow"} 2.0' in metrics.exposition()
