"""Health checks from a notebook: run them, keep a history, decide the exit code.

The history is one ``application/health+json`` document a line in
``<state>/health/health.jsonl``, so the chart shows the trend across scheduled runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from snowkit import paths
from snowkit.notebook.session import EMBEDDED, connect

HEALTH_HISTORY = "health.jsonl"


def check_health(instance: str = EMBEDDED, timeout_seconds: float = 15.0) -> dict[str, Any]:
    """The health checks for ``instance``; a client that cannot even be built (a bad URL,
    an unusable CA bundle) is reported as a failed ``servicenow`` check, not raised, so the
    health report and its history still record the failure."""
    from snowkit.credentials import CredentialManager
    from snowkit.ops.health import HealthCheck, HealthMonitor, HealthStatus
    from snowkit.ops.redaction import redact_text

    try:
        session = connect(instance)
    except Exception as exc:
        credentials = CredentialManager() if instance != EMBEDDED else None
        monitor = HealthMonitor(credentials=credentials)
        checks = {
            "servicenow": HealthCheck(
                name="servicenow",
                status=HealthStatus.UNHEALTHY,
                message=redact_text(f"cannot connect to {instance}: {exc}"),
            )
        }
        checks.update(monitor.run_all_checks_sync(timeout_seconds=timeout_seconds))
        return checks
    return session.health(timeout_seconds=timeout_seconds)


def health_status_rank(status: str) -> int:
    return {"pass": 0, "warn": 1, "fail": 2}.get(str(status).lower(), 2)


class UnhealthyError(RuntimeError):
    """Raised at the end of the health notebook so a scheduler sees a non-zero exit."""


def raise_for_health(document: Mapping[str, Any], fail_on: str = "fail") -> None:
    """Fail the notebook when the overall status is ``fail_on`` or worse ("never": don't)."""
    if fail_on == "never":
        return
    if fail_on not in ("warn", "fail"):
        raise ValueError(f"fail_on must be 'warn', 'fail' or 'never', not {fail_on!r}")
    status = str(document.get("status"))
    if health_status_rank(status) >= health_status_rank(fail_on):
        raise UnhealthyError(f"health is {status}: {document.get('output') or 'see the checks'}")


def health_history_path() -> Path:
    """Where health results accumulate: ``<state>/health/health.jsonl``."""
    return paths.state_dir() / "health" / HEALTH_HISTORY


def record_health(document: Mapping[str, Any], path: Path | None = None) -> Path:
    """Append one ``application/health+json`` document (already redacted) to the history."""
    import orjson

    from snowkit.ops.redaction import redact

    target = path or health_history_path()
    paths.ensure_dir(target.parent)
    line = orjson.dumps(redact(dict(document)), default=str) + b"\n"
    with open(target, "a+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell():  # a torn last line (a killed writer) must not swallow this one
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = b"\n" + line
        handle.write(line)
    return target
