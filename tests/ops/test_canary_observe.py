"""Canary: a registered secret pushed through audit, metrics and health never reaches a sink."""

from __future__ import annotations

import asyncio
import base64
import uuid
from pathlib import Path

import orjson
import pytest

from snowkit.cli import main
from snowkit.ops.audit import AuditTrail, read_audit, verify_audit
from snowkit.ops.errors import AuthenticationError
from snowkit.ops.health import HealthCheck, HealthMonitor, HealthStatus
from snowkit.ops.metrics import MetricsCollector
from snowkit.ops.redaction import secrets


@pytest.fixture
def canary() -> str:
    value = f"canary-{uuid.uuid4().hex}"
    secrets.register(value)
    secrets.register_basic("admin", value)
    return value


def _forms(canary: str) -> list[str]:
    return [canary, base64.b64encode(f"admin:{canary}".encode()).decode()]


def _assert_clean(blob: bytes | str, canary: str) -> None:
    text = blob.decode() if isinstance(blob, bytes) else blob
    for form in _forms(canary):
        assert form not in text


def test_canary_never_reaches_the_audit_file(tmp_path: Path, canary: str) -> None:
    path = tmp_path / "audit.jsonl"
    key = b"audit-key-for-canary-test"
    with AuditTrail(path, key=key, fsync=False, max_bytes=4_000) as trail:
        for i in range(20):
            trail.record(
                "update",
                f"cmdb_ci_{canary}" if i == 0 else "cmdb_ci",
                f"{i:032x}",
                source_id=f"unifi:{canary}",
                before={"description": f"note with {canary} inside", "password": "x" * 8},
                after={"nested": [{"comment": canary}], "auth": f"Basic {_forms(canary)[1]}"},
                correlation_id=None,
            )
    for segment in tmp_path.iterdir():
        _assert_clean(segment.read_bytes(), canary)
    assert verify_audit(path, key).ok  # redaction happens before hashing
    _assert_clean(orjson.dumps(list(read_audit(path))), canary)


def test_canary_never_reaches_metrics(
    tmp_path: Path, canary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    m = MetricsCollector()
    url = f"GET https://admin:{canary}@dev1.service-now.com/api/now/table/cmdb_ci?token={canary}"
    m.record_request("GET", url, 200, 10.0)
    m.record_request("POST", f"create {canary}", 201, 12.0, table=f"t_{canary}")
    m.record_error("GET", f"op {canary}", RuntimeError(f"boom {canary}"), table="cmdb_ci")
    m.record_error("GET", "op", f"failure text {canary}")
    m.record_retry(f"retry {canary}", reason=f"because {canary}")
    m.record_rate_limit(f"rl {canary}", retry_after_s=5)
    m.set_breaker_state(f"breaker-{canary}", "open")
    _assert_clean(m.exposition(), canary)
    _assert_clean(orjson.dumps(m.snapshot()), canary)
    _assert_clean(m.to_frame().to_csv(), canary)
    _assert_clean(m.samples_frame().to_csv(), canary)
    run_dir = tmp_path / "runs" / "20261129T000000Z-cafe00"
    snapshot = m.write_snapshot(run_dir / "metrics.json")
    textfile = m.write_textfile(run_dir / "metrics.prom")
    _assert_clean(snapshot.read_bytes(), canary)
    _assert_clean(textfile.read_bytes(), canary)
    assert main(["metrics", "--textfile", str(textfile)]) == 0
    _assert_clean(capsys.readouterr().out, canary)


def test_canary_never_reaches_health_output(tmp_path: Path, canary: str) -> None:
    from snowkit.ops.logging import configure_logging

    log_file = tmp_path / "health.jsonl"
    configure_logging(file_path=log_file, console=False)

    class LeakyClient:
        instance_url = f"https://admin:{canary}@dev1.service-now.com"

        def ping(self) -> float:
            raise AuthenticationError(f"401 for password {canary}")

    class Credentials:
        def availability(self) -> dict[str, bool]:
            return {"basic": True, "api_key": False}

    def leaky_check() -> HealthCheck:
        return HealthCheck(
            name="custom",
            status=HealthStatus.DEGRADED,
            message=f"saw {canary}",
            details={"value": canary, "token": "plain"},
            observed_value=canary,
        )

    def raising_check() -> bool:
        raise ValueError(f"secret {canary} in an exception")

    alerts: list[HealthCheck] = []
    monitor = HealthMonitor(client=LeakyClient(), credentials=Credentials(), on_alert=alerts.append)
    monitor.register_check("custom", leaky_check)
    monitor.register_check("raising", raising_check)
    checks = asyncio.run(monitor.run_all_checks(timeout_seconds=2))
    document = monitor.to_health_json(checks)
    assert document["status"] == "fail"
    _assert_clean(orjson.dumps(document), canary)
    _assert_clean(orjson.dumps([c.to_dict() for c in checks.values()]), canary)
    _assert_clean(orjson.dumps([(a.message, a.details) for a in alerts]), canary)
    _assert_clean(log_file.read_bytes(), canary)
    configure_logging()
