"""Health checks for a batch loader: can we reach ServiceNow, have credentials, is the host OK.

No maintained Python library fits a CLI/notebook loader (health libraries assume a web server),
so this is small and ours. Checks run concurrently with a per-check timeout; a check that hangs
or raises becomes UNHEALTHY with the reason instead of taking the monitor down. The output
follows the ``application/health+json`` draft (draft-inadarei-api-health-check): status
pass/warn/fail and per-component checks keyed ``"component:measurement"``. Everything that
leaves the monitor (messages, details, alerts) passes through :func:`redact`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from snowkit import paths
from snowkit.ops.redaction import redact


def _logger() -> Any:
    from snowkit.ops.logging import get_logger

    return get_logger("snowkit.health")


class HealthStatus(Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @property
    def health_json(self) -> str:
        """The ``application/health+json`` word: pass, warn or fail."""
        return _HEALTH_JSON[self]

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_HEALTH_JSON = {
    HealthStatus.HEALTHY: "pass",
    HealthStatus.DEGRADED: "warn",
    HealthStatus.UNHEALTHY: "fail",
}
_SEVERITY = {HealthStatus.HEALTHY: 0, HealthStatus.DEGRADED: 1, HealthStatus.UNHEALTHY: 2}

#: The auth methods a ``CredentialManager.availability()`` reports, in fallback order.
AUTH_METHODS = ("api_key", "oauth", "basic")

HIBERNATION_GUIDANCE = (
    "The ServiceNow developer instance is hibernating: wake it at developer.servicenow.com "
    "(sign in, open 'Manage instance' and press 'Wake up'), wait a few minutes, then retry."
)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class HealthCheck:
    """One check's result: the seed's fields plus what health+json needs."""

    name: str
    status: HealthStatus
    message: str
    response_time_ms: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    component_type: str = "component"
    observed_value: Any = None
    observed_unit: str | None = None
    time: datetime = field(default_factory=_now)
    measurement: str = "status"
    component_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return redact(
            {
                "name": self.name,
                "status": self.status.value,
                "message": self.message,
                "response_time_ms": self.response_time_ms,
                "details": self.details,
                "component_type": self.component_type,
                "observed_value": self.observed_value,
                "observed_unit": self.observed_unit,
                "time": self.time.isoformat(),
                "measurement": self.measurement,
                "component_id": self.component_id,
            }
        )


@dataclass(frozen=True)
class HealthThresholds:
    """Where a measurement turns from healthy to degraded (and to unhealthy)."""

    response_time_degraded_ms: float = 2_000.0
    memory_degraded_mb: float = 1_024.0
    memory_unhealthy_mb: float = 4_096.0
    cpu_degraded_percent: float = 90.0
    disk_free_degraded_mb: float = 1_024.0
    disk_free_unhealthy_mb: float = 100.0


CheckFunction = Callable[[], "HealthCheck | HealthStatus | bool | Awaitable[Any]"]


class HealthMonitor:
    """Runs registered checks concurrently and reports in health+json shape.

    Built-in checks are registered for what was given: ``servicenow`` (a client with
    ``ping() -> ms``), ``credentials`` (an object with ``availability() -> dict[str, bool]``),
    ``circuit_breaker`` (a metrics collector that knows breaker states) and always ``system``.
    """

    def __init__(
        self,
        client: Any = None,
        credentials: Any = None,
        metrics: Any = None,
        thresholds: HealthThresholds | None = None,
        clock: Callable[[], float] = time.perf_counter,
        on_alert: Callable[[HealthCheck], None] | None = None,
        *,
        state_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.credentials = credentials
        self.metrics = metrics
        self.thresholds = thresholds or HealthThresholds()
        self.on_alert = on_alert
        self._clock = clock
        self._state_dir = state_dir
        self.checks: dict[str, CheckFunction] = {}
        self._process = psutil.Process()
        # Prime both CPU meters: psutil's first reading is always 0.0.
        self._process.cpu_percent(None)
        psutil.cpu_percent(None)
        if client is not None:
            self.register_check("servicenow", self.check_servicenow_connectivity)
        if credentials is not None:
            self.register_check("credentials", self.check_credential_availability)
        if metrics is not None and hasattr(metrics, "breaker_states"):
            self.register_check("circuit_breaker", self.check_circuit_breakers)
        self.register_check("system", self.check_system_resources)

    def register_check(self, name: str, check_func: CheckFunction) -> None:
        """Add or replace a check; ``check_func`` may be sync or async."""
        self.checks[name] = check_func

    # ------------------------------------------------------------------ running

    async def run_all_checks(self, timeout_seconds: float = 10.0) -> dict[str, HealthCheck]:
        """Run every check concurrently; each gets ``timeout_seconds``.

        A sync check runs in its own daemon thread; if it times out the thread is abandoned
        (Python cannot cancel it; being a daemon it never blocks the event loop's shutdown or
        the interpreter's exit) and the result is UNHEALTHY saying so.
        """
        names = list(self.checks)
        results = await asyncio.gather(
            *(self._run_one(name, self.checks[name], timeout_seconds) for name in names)
        )
        checks = dict(zip(names, results, strict=True))
        self._publish(checks)
        return checks

    def run_all_checks_sync(self, timeout_seconds: float = 10.0) -> dict[str, HealthCheck]:
        """Blocking form; works inside a running event loop too (Jupyter) via a worker thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run_all_checks(timeout_seconds))
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="snowkit-health") as ex:
            return ex.submit(asyncio.run, self.run_all_checks(timeout_seconds)).result()

    async def _run_one(self, name: str, func: CheckFunction, timeout: float) -> HealthCheck:
        started = self._clock()
        try:
            if inspect.iscoroutinefunction(func):
                outcome = await asyncio.wait_for(func(), timeout)
            else:
                outcome = await asyncio.wait_for(_in_daemon_thread(func, name), timeout)
                if inspect.isawaitable(outcome):
                    outcome = await asyncio.wait_for(outcome, timeout)
        except TimeoutError:
            return HealthCheck(
                name=name,
                status=HealthStatus.UNHEALTHY,
                message=f"check '{name}' did not finish within {timeout:g} s",
                response_time_ms=(self._clock() - started) * 1000.0,
                details={"reason": "timeout", "timeout_seconds": timeout},
            )
        except Exception as exc:
            return HealthCheck(
                name=name,
                status=HealthStatus.UNHEALTHY,
                message=redact(f"check '{name}' failed: {type(exc).__name__}: {exc}"),
                response_time_ms=(self._clock() - started) * 1000.0,
                details={"reason": "exception", "error_type": type(exc).__name__},
            )
        return _coerce(name, outcome, (self._clock() - started) * 1000.0)

    def _publish(self, checks: dict[str, HealthCheck]) -> None:
        overall = self.get_overall_status(checks)
        _log = _logger()
        if self.metrics is not None and hasattr(self.metrics, "set_health"):
            self.metrics.set_health(overall)
        for check in checks.values():
            _log.info(
                "health_check",
                check=check.name,
                status=check.status.value,
                response_time_ms=check.response_time_ms,
                message=redact(check.message),
            )
            if check.status is HealthStatus.HEALTHY:
                continue
            _log.warning(
                "health_alert",
                check=check.name,
                status=check.status.value,
                message=redact(check.message),
                details=redact(check.details),
            )
            if self.on_alert is not None:
                try:
                    self.on_alert(check)
                except Exception as exc:  # an alert hook must never break the monitor
                    _log.error("health_alert_hook_failed", error_type=type(exc).__name__)

    # ------------------------------------------------------------------ built-in checks

    def check_servicenow_connectivity(self) -> HealthCheck:
        """One cheap authenticated request (``client.ping()``), timed; detects hibernation."""
        component_id = _instance_host(self.client)
        base = {
            "name": "servicenow",
            "measurement": "responseTime",
            "component_type": "datastore",
            "component_id": component_id,
            "observed_unit": "ms",
        }
        if self.client is None:
            return HealthCheck(
                status=HealthStatus.UNHEALTHY, message="no ServiceNow client configured", **base
            )
        started = self._clock()
        try:
            ping_ms = self.client.ping()
        except Exception as exc:
            elapsed = (self._clock() - started) * 1000.0
            status, message, reason = _classify_connectivity_error(exc)
            return HealthCheck(
                status=status,
                message=redact(message),
                response_time_ms=elapsed,
                details={"reason": reason, "error_type": type(exc).__name__},
                **base,
            )
        elapsed = float(ping_ms) if ping_ms is not None else (self._clock() - started) * 1000.0
        limit = self.thresholds.response_time_degraded_ms
        slow = elapsed > limit
        return HealthCheck(
            status=HealthStatus.DEGRADED if slow else HealthStatus.HEALTHY,
            message=(
                f"ServiceNow answered in {elapsed:.0f} ms (slower than {limit:.0f} ms)"
                if slow
                else f"ServiceNow answered in {elapsed:.0f} ms"
            ),
            response_time_ms=elapsed,
            observed_value=round(elapsed, 1),
            details={"threshold_ms": limit},
            **base,
        )

    def check_credential_availability(self) -> HealthCheck:
        """Which auth methods have credentials; names only, never a value.

        With a ``CredentialManager`` the verdict rests on its auth methods (api_key, oauth,
        basic); its other keys (sources such as ``op_signed_in``) are reported alongside.
        Any other ``availability()`` mapping is judged on all of its entries.
        """
        base = {"name": "credentials", "measurement": "available", "component_type": "component"}
        if self.credentials is None:
            return HealthCheck(
                status=HealthStatus.UNHEALTHY, message="no credential manager configured", **base
            )
        availability = {str(k): bool(v) for k, v in dict(self.credentials.availability()).items()}
        methods = [m for m in AUTH_METHODS if m in availability] or sorted(availability)
        available = [m for m in methods if availability[m]]
        details = {
            "available_methods": available,
            "unavailable_methods": [m for m in methods if not availability[m]],
            "sources_available": sorted(
                k for k, v in availability.items() if v and k not in methods
            ),
            "sources_unavailable": sorted(
                k for k, v in availability.items() if not v and k not in methods
            ),
        }
        if not available:
            message = (
                "no ServiceNow credentials available: set SERVICENOW_API_KEY, "
                "SERVICENOW_OAUTH_TOKEN or SERVICENOW_USERNAME/SERVICENOW_PASSWORD "
                "(or their *_OP_REF 1Password references)"
            )
            if availability.get("op_references") and not availability.get("op_installed"):
                message += "; 1Password references are set but the 1Password CLI `op` is not "
                message += "installed or not on PATH: install it, or set the values directly"
            elif availability.get("op_references") and not availability.get("op_signed_in"):
                message += "; 1Password references are set but `op` is not signed in: run "
                message += "`op signin` or set OP_SERVICE_ACCOUNT_TOKEN"
            return HealthCheck(
                status=HealthStatus.UNHEALTHY,
                message=message,
                observed_value=0,
                observed_unit="methods",
                details=details,
                **base,
            )
        return HealthCheck(
            status=HealthStatus.HEALTHY,
            message=f"credentials available for: {', '.join(available)}",
            observed_value=len(available),
            observed_unit="methods",
            details=details,
            **base,
        )

    def check_system_resources(self) -> HealthCheck:
        """Process memory (RSS), machine CPU and free disk where snowkit keeps its state.

        CPU is graded machine-wide (0-100 across all cores): a loader keeping one core busy is
        doing its job, a saturated machine is a problem. The process's own share is reported
        alongside, ungraded.
        """
        t = self.thresholds
        memory_mb = self._process.memory_info().rss / (1024 * 1024)
        cpu = psutil.cpu_percent(None)
        process_cpu = self._process.cpu_percent(None)
        disk_free_mb = psutil.disk_usage(str(_existing(self._state_dir or paths.state_dir())))
        free_mb = disk_free_mb.free / (1024 * 1024)

        def grade(value: float, degraded: float, unhealthy: float | None, low: bool) -> str:
            worse = (lambda a, b: a < b) if low else (lambda a, b: a > b)
            if unhealthy is not None and worse(value, unhealthy):
                return HealthStatus.UNHEALTHY.value
            return HealthStatus.DEGRADED.value if worse(value, degraded) else "healthy"

        measurements = {
            "memoryRss": {
                "value": round(memory_mb, 1),
                "unit": "MiB",
                "status": grade(memory_mb, t.memory_degraded_mb, t.memory_unhealthy_mb, False),
            },
            "cpuUtilization": {
                "value": round(cpu, 1),
                "unit": "percent",
                "status": grade(cpu, t.cpu_degraded_percent, None, False),
            },
            "processCpu": {
                "value": round(process_cpu, 1),
                "unit": "percent of one core",
                "status": HealthStatus.HEALTHY.value,
            },
            "diskFree": {
                "value": round(free_mb, 1),
                "unit": "MiB",
                "status": grade(free_mb, t.disk_free_degraded_mb, t.disk_free_unhealthy_mb, True),
            },
        }
        status = max(
            (HealthStatus(m["status"]) for m in measurements.values()), key=lambda s: s.severity
        )
        problems = [f"{k}={m['value']} {m['unit']}" for k, m in measurements.items()]
        return HealthCheck(
            name="system",
            status=status,
            message="; ".join(problems),
            observed_value=round(memory_mb, 1),
            observed_unit="MiB",
            measurement="memoryRss",
            component_type="system",
            details={"measurements": measurements},
        )

    def check_circuit_breakers(self) -> HealthCheck:
        """Open breaker: UNHEALTHY (calls are refused); half-open: DEGRADED."""
        states = dict(getattr(self.metrics, "breaker_states", {}) or {})
        opened = sorted(n for n, s in states.items() if s == "open")
        probing = sorted(n for n, s in states.items() if s == "half_open")
        if opened:
            status, message = HealthStatus.UNHEALTHY, f"circuit open: {', '.join(opened)}"
        elif probing:
            status, message = HealthStatus.DEGRADED, f"circuit half-open: {', '.join(probing)}"
        else:
            status = HealthStatus.HEALTHY
            message = "all circuits closed" if states else "no circuit breakers known"
        return HealthCheck(
            name="circuit_breaker",
            status=status,
            message=message,
            measurement="state",
            observed_value=states,
            details={"states": states},
        )

    # ------------------------------------------------------------------ reporting

    def get_overall_status(self, checks: dict[str, HealthCheck]) -> HealthStatus:
        """The worst status wins; no checks means HEALTHY."""
        return max(
            (c.status for c in checks.values()),
            key=lambda s: s.severity,
            default=HealthStatus.HEALTHY,
        )

    def to_health_json(self, checks: dict[str, HealthCheck]) -> dict[str, Any]:
        """The ``application/health+json`` document for these results (redacted)."""
        return to_health_json(checks)


def to_health_json(checks: dict[str, HealthCheck]) -> dict[str, Any]:
    """Render check results as ``application/health+json`` (module-level for reuse)."""
    from snowkit import __version__

    overall = max(
        (c.status for c in checks.values()), key=lambda s: s.severity, default=HealthStatus.HEALTHY
    )
    rendered: dict[str, list[dict[str, Any]]] = {}
    for check in checks.values():
        stamp = check.time.isoformat()
        measurements = check.details.get("measurements")
        if isinstance(measurements, dict) and measurements:
            for key, m in measurements.items():
                rendered.setdefault(f"{check.name}:{key}", []).append(
                    _entry(
                        check,
                        HealthStatus(m["status"]),
                        m.get("value"),
                        m.get("unit"),
                        stamp,
                        check.message,
                    )
                )
            continue
        rendered.setdefault(f"{check.name}:{check.measurement}", []).append(
            _entry(
                check, check.status, check.observed_value, check.observed_unit, stamp, check.message
            )
        )
    failing = [c.name for c in checks.values() if c.status is not HealthStatus.HEALTHY]
    document = {
        "status": overall.health_json,
        "version": "1",
        "releaseId": __version__,
        "serviceId": "snowkit",
        "description": "snowkit loader health",
        "output": f"not healthy: {', '.join(failing)}" if failing else "",
        "checks": rendered,
    }
    return redact(document)


def _entry(
    check: HealthCheck,
    status: HealthStatus,
    value: Any,
    unit: str | None,
    stamp: str,
    output: str,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "componentId": check.component_id or check.name,
        "componentType": check.component_type,
        "observedValue": value,
        "status": status.health_json,
        "time": stamp,
    }
    if unit:
        entry["observedUnit"] = unit
    if status is not HealthStatus.HEALTHY or output:
        entry["output"] = output
    return entry


def _in_daemon_thread(func: Callable[[], Any], name: str) -> asyncio.Future[Any]:
    """Run ``func`` in a daemon thread (with the caller's contextvars); await its result.

    Not ``asyncio.to_thread``: the default executor is joined when ``asyncio.run`` ends, so
    one hanging check would hold up the whole monitor long after its timeout.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def target() -> None:
        try:
            result = context.run(func)
        except BaseException as exc:
            outcome = (False, exc)
        else:
            outcome = (True, result)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=target, name=f"snowkit-health-{name}", daemon=True).start()
    return future


def _coerce(name: str, outcome: Any, elapsed_ms: float) -> HealthCheck:
    """Accept a HealthCheck, a HealthStatus or a bool from a registered check."""
    if isinstance(outcome, HealthCheck):
        outcome.name = name
        if outcome.response_time_ms is None:
            outcome.response_time_ms = elapsed_ms
        outcome.message = redact(outcome.message)
        outcome.details = redact(outcome.details)
        return outcome
    if isinstance(outcome, HealthStatus):
        return HealthCheck(name, outcome, outcome.value, elapsed_ms)
    if isinstance(outcome, bool):
        status = HealthStatus.HEALTHY if outcome else HealthStatus.UNHEALTHY
        return HealthCheck(name, status, "ok" if outcome else "check returned False", elapsed_ms)
    return HealthCheck(
        name,
        HealthStatus.UNHEALTHY,
        f"check '{name}' returned {type(outcome).__name__}, expected a HealthCheck",
        elapsed_ms,
    )


def _classify_connectivity_error(exc: BaseException) -> tuple[HealthStatus, str, str]:
    """Map a ping failure to (status, message a person can act on, reason)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    guidance = getattr(exc, "guidance", "") or ""
    if "HibernatingInstanceError" in names:
        return HealthStatus.UNHEALTHY, HIBERNATION_GUIDANCE, "hibernating"
    if "AuthenticationError" in names:
        text = f"ServiceNow rejected the credentials: {_message(exc)}"
        if guidance and guidance not in text:
            text = f"{text} What to do: {guidance}"
        return HealthStatus.UNHEALTHY, text, "authentication"
    if "OperationalError" in names:
        return HealthStatus.UNHEALTHY, f"ServiceNow unreachable: {exc}", "operational"
    return (
        HealthStatus.UNHEALTHY,
        f"ServiceNow check failed: {type(exc).__name__}: {exc}",
        "unexpected",
    )


def _message(exc: BaseException) -> str:
    context = getattr(exc, "context", None)
    return getattr(context, "error_message", None) or str(exc)


def _instance_host(client: Any) -> str | None:
    """The instance host for componentId; never the userinfo or path."""
    url = getattr(client, "instance_url", None) or getattr(client, "base_url", None)
    if not url:
        return None
    try:
        return urlsplit(str(url)).hostname
    except ValueError:
        return None


def _existing(path: Path) -> Path:
    """The nearest existing ancestor (the state dir may not exist yet)."""
    current = Path(path)
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


__all__ = [
    "HIBERNATION_GUIDANCE",
    "HealthCheck",
    "HealthMonitor",
    "HealthStatus",
    "HealthThresholds",
    "to_health_json",
]
