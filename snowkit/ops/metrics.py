"""Request metrics for a load run: exact run-report numbers plus a Prometheus exposition.

Two consumers with different needs: an operator's Prometheus (counters and a histogram whose
buckets reach ServiceNow's 60 s transaction timeout, served through ``prometheus_client``) and
the run report / notebooks, which want *exact* p50/p95/p99 rather than bucket interpolation.
``prometheus_client`` cannot give the latter (its Summary has no quantiles), so we keep the raw
latencies ourselves, bounded: a ring buffer per (operation, table) whose sizes share one global
cap (``max_samples``; each key keeps at least 100, so the cap holds up to 1,000 keys). Counts
stay exact when old samples roll out; percentiles then describe the most recent window.

Label values never carry secrets or unbounded ids: every label passes through
:func:`snowkit.ops.redaction.redact`, URLs are reduced to their path, numeric segments and any
32-hex ``sys_id`` become ``{id}`` (bounded cardinality), and the table is parsed from
``/api/now/table/<table>`` when not given.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import orjson
import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import write_to_textfile as _prom_write_textfile

from snowkit.files import write_atomic
from snowkit.ops.redaction import redact

#: Histogram buckets in seconds; ServiceNow cancels transactions at 60 s (and some at 300 s).
DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

#: Gauge encodings (documented in docs/architecture.md and the exposition HELP text).
BREAKER_STATE_VALUES: dict[str, int] = {"closed": 0, "open": 1, "half_open": 2}
HEALTH_STATUS_VALUES: dict[str, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}

_NO_TABLE = ""
_MAX_LABEL_LENGTH = 120
_TABLE_IN_PATH = re.compile(r"/api/now/(?:v\d+/)?table/([A-Za-z0-9_]+)")
_ID_SEGMENT = re.compile(r"/(?:[0-9a-fA-F]{32}|\d+)(?=/|$)")
_SYS_ID = re.compile(r"\b[0-9a-fA-F]{32}\b")
_MIN_SAMPLES_PER_KEY = 100


@dataclass
class OperationMetrics:
    """Aggregates for one (operation, table); seed fields plus p50/p99/max and retry counts."""

    operation_name: str
    total_requests: int
    successful_requests: int
    failed_requests: int
    average_response_time_ms: float
    p95_response_time_ms: float
    error_rate_percent: float
    last_updated: datetime | None
    table: str | None = None
    p50_response_time_ms: float = 0.0
    p99_response_time_ms: float = 0.0
    max_response_time_ms: float = 0.0
    retries: int = 0
    rate_limited: int = 0
    samples_retained: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_updated"] = self.last_updated.isoformat() if self.last_updated else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OperationMetrics:
        values = dict(data)
        stamp = values.get("last_updated")
        values["last_updated"] = datetime.fromisoformat(stamp) if stamp else None
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


def open_sockets(proc: psutil.Process) -> int | None:
    """How many sockets the process holds open; None when the OS refuses to say.

    Why not ``net_connections`` alone: it has the kernel render every socket table of the
    host (``/proc/net/tcp`` and friends) and took ~3 ms per call, measured at the end of a
    0.11 s no-change load. On Linux the process's own descriptors tell it in microseconds: a
    loader's sockets are its connections to the instance (a local socket would count too).
    """
    fd_dir = "/proc/self/fd" if proc.pid == os.getpid() else f"/proc/{proc.pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        names = None
    if names is None:
        try:
            return len(proc.net_connections(kind="inet"))
        except (psutil.AccessDenied, psutil.NoSuchProcess, OSError):
            return None
    count = 0
    for name in names:
        try:
            count += os.readlink(f"{fd_dir}/{name}").startswith("socket:")
        except OSError:  # closed since it was listed (or the listing's own descriptor)
            continue
    return count


@dataclass
class SystemMetrics:
    """Process-level view (seed fields). ``active_connections`` (the sockets the process holds,
    :func:`open_sockets`) is None when the OS refuses."""

    memory_usage_mb: float
    cpu_usage_percent: float
    active_connections: int | None
    circuit_breaker_states: dict[str, str]
    health_status: str
    uptime_seconds: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SystemMetrics:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class MetricsSnapshot:
    """A ``metrics.json`` read back for analysis (see :meth:`MetricsCollector.load_snapshot`)."""

    operations: list[OperationMetrics]
    system: SystemMetrics | None
    samples: list[dict[str, Any]]
    generated_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> Any:
        import pandas as pd

        frame = pd.DataFrame([op.to_dict() for op in self.operations], columns=_FRAME_COLUMNS)
        frame["last_updated"] = pd.to_datetime(frame["last_updated"], utc=True, format="ISO8601")
        return frame

    def samples_frame(self) -> Any:
        return _samples_to_frame(self.samples)


@dataclass
class _Stats:
    """Mutable per-(operation, table) accumulator; guarded by the collector's lock."""

    operation: str
    table: str
    samples: deque[float]
    total: int = 0
    ok: int = 0
    failed: int = 0
    timed: int = 0
    duration_sum_ms: float = 0.0
    max_ms: float = 0.0
    retries: int = 0
    rate_limited: int = 0
    last_updated: float = 0.0


@dataclass(frozen=True)
class _Route:
    """What one raw (method, operation, table, status) resolves to: cached label children."""

    stats: _Stats
    counter: Any
    histogram: Any
    ok: bool
    operation: str
    table: str
    method: str
    status: str


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default ``method="linear"``)."""
    if not sorted_values:
        return 0.0
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    frac = rank - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * frac


def _clean_label(value: object) -> str:
    """A label value safe to export: redacted, URL reduced to a path, ids folded, bounded."""
    if value is None:
        return _NO_TABLE
    text = value.value if isinstance(value, Enum) else value
    text = str(text)
    if "://" in text or text.startswith("/"):
        text = _url_to_route(text)
    text = _SYS_ID.sub("{id}", redact(text))
    if len(text) > _MAX_LABEL_LENGTH:
        text = text[:_MAX_LABEL_LENGTH]
    return text


def _url_to_route(text: str) -> str:
    """Reduce ``GET https://u:pw@h/api/now/table/x/<id>?q=1`` to ``GET /api/now/table/x/{id}``."""
    scheme = text.find("://")
    if scheme >= 0:
        start = text.rfind(" ", 0, scheme) + 1
        prefix, rest = text[:start].strip(), text[scheme + 3 :]
        slash = rest.find("/")
        rest = rest[slash:] if slash >= 0 else "/"
    else:
        prefix, rest = "", text
    rest = re.split(r"[?#\s]", rest, maxsplit=1)[0]
    rest = _ID_SEGMENT.sub("/{id}", rest)
    return f"{prefix} {rest}" if prefix else rest


def _table_from(operation: str) -> str | None:
    match = _TABLE_IN_PATH.search(operation)
    return match.group(1) if match else None


def _state_name(state: object) -> str:
    raw = state.value if isinstance(state, Enum) else state
    return str(raw).lower().replace("-", "_")


_FRAME_COLUMNS = [
    "operation_name",
    "table",
    "total_requests",
    "successful_requests",
    "failed_requests",
    "error_rate_percent",
    "average_response_time_ms",
    "p50_response_time_ms",
    "p95_response_time_ms",
    "p99_response_time_ms",
    "max_response_time_ms",
    "retries",
    "rate_limited",
    "samples_retained",
    "last_updated",
]
_SAMPLE_COLUMNS = ["timestamp", "operation", "table", "method", "status_code", "duration_ms", "ok"]


def _samples_to_frame(samples: Iterable[dict[str, Any]]) -> Any:
    import pandas as pd

    frame = pd.DataFrame(list(samples), columns=_SAMPLE_COLUMNS)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    return frame


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


class MetricsCollector:
    """Counts, latencies, retries, 429s, breaker states and health for one process or run.

    Thread-safe: one lock around the in-memory aggregates (a few dict/deque operations); the
    Prometheus children have their own locks. Label children are cached per raw input so the
    hot path never builds label tuples.
    """

    def __init__(
        self,
        max_samples: int = 100_000,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        max_label_sets: int = 2_000,
    ) -> None:
        if max_samples < 1:
            raise ValueError("max_samples must be at least 1")
        self.max_samples = max_samples
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._wall = wall_clock
        self._started = clock()
        self._max_label_sets = max_label_sets
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str], _Stats] = {}
        self._routes: dict[tuple[object, ...], _Route] = {}
        self._sample_log: deque[tuple[float, str, str, str, int | None, float | None, bool]] = (
            deque(maxlen=max_samples)
        )
        self._per_key_cap = max_samples
        self._breakers: dict[str, str] = {}
        self._watched: dict[str, Any] = {}  #: breakers whose state is read live (watch_breaker)
        self._health = "unknown"
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # prime: the first reading is always 0.0

        self._requests = Counter(
            "snowkit_requests",
            "Requests to ServiceNow by method, operation, table and HTTP status.",
            ["method", "operation", "table", "status"],
            registry=self.registry,
        )
        self._errors = Counter(
            "snowkit_request_errors",
            "Requests that ended without a usable response, by error type.",
            ["method", "operation", "table", "error_type"],
            registry=self.registry,
        )
        self._durations = Histogram(
            "snowkit_request_duration_seconds",
            "Request latency in seconds (buckets reach ServiceNow's 60 s timeout and beyond).",
            ["method", "operation", "table"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._retries = Counter(
            "snowkit_retries",
            "Retries scheduled, by operation and reason.",
            ["operation", "reason"],
            registry=self.registry,
        )
        self._rate_limited = Counter(
            "snowkit_rate_limited",
            "429 Too Many Requests responses received, by operation.",
            ["operation"],
            registry=self.registry,
        )
        self._retry_after = Gauge(
            "snowkit_last_retry_after_seconds",
            "The most recent Retry-After the server asked for, by operation.",
            ["operation"],
            registry=self.registry,
        )
        self._breaker_gauge = Gauge(
            "snowkit_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
            ["breaker"],
            registry=self.registry,
        )
        self._health_gauge = Gauge(
            "snowkit_health_status",
            "Overall health: 0 healthy (pass), 1 degraded (warn), 2 unhealthy (fail).",
            registry=self.registry,
        )
        self._last_request = Gauge(
            "snowkit_last_request_timestamp_seconds",
            "Unix time of the last recorded request.",
            registry=self.registry,
        )

    # ------------------------------------------------------------------ recording

    def record_request(
        self,
        method: str,
        operation: str,
        status_code: int | None,
        duration_ms: float,
        table: str | None = None,
    ) -> None:
        """Count one request that got an HTTP response; < 400 counts as success."""
        route = self._routes.get((method, operation, table, status_code))
        if route is None:
            route = self._route(method, operation, table, status_code)
        self._store(route, status_code, duration_ms)
        route.counter.inc()
        route.histogram.observe(duration_ms / 1000.0)

    def record_error(
        self,
        method: str,
        operation: str,
        error: BaseException | str,
        table: str | None = None,
        duration_ms: float | None = None,
    ) -> None:
        """Count one request that ended without an HTTP response (timeout, reset, ...).

        Counts as one failed request. Do not also call :meth:`record_request` for the same
        request. ``error_type`` is the error category or class name, never the message.
        """
        route = self._routes.get((method, operation, table, None))
        if route is None:
            route = self._route(method, operation, table, None)
        error_type = _error_type(error)
        self._store(route, None, duration_ms)
        route.counter.inc()
        if duration_ms is not None:
            route.histogram.observe(duration_ms / 1000.0)
        self._errors.labels(route.method, route.operation, route.table, error_type).inc()

    def record_retry(
        self, operation: str, reason: str | BaseException = "unknown", table: str | None = None
    ) -> None:
        """Count one scheduled retry (credited to ``table``, else the operation's first table)."""
        op = _clean_label(operation)
        why = _error_type(reason) if isinstance(reason, BaseException) else _clean_label(reason)
        with self._lock:
            self._stats_for_count(op, table).retries += 1
        self._retries.labels(op, why).inc()

    def record_rate_limit(
        self, operation: str, retry_after_s: float | None = None, table: str | None = None
    ) -> None:
        """Count one 429 and remember the server's Retry-After."""
        op = _clean_label(operation)
        with self._lock:
            self._stats_for_count(op, table).rate_limited += 1
        self._rate_limited.labels(op).inc()
        if retry_after_s is not None:
            self._retry_after.labels(op).set(float(retry_after_s))

    def retry_hook(
        self, attempt: int, delay_s: float, error: BaseException, operation_name: str
    ) -> None:
        """A ``RetryManager`` ``on_retry`` hook: counts the retry, and the 429 if it was one."""
        self.record_retry(operation_name, error)
        if _is_rate_limit(error):
            retry_after = getattr(error, "retry_after", None)
            self.record_rate_limit(operation_name, retry_after if retry_after else delay_s)

    def set_breaker_state(self, name: str, state: object) -> None:
        """Publish a breaker's state (a ``CircuitState`` or its value)."""
        label = _clean_label(name)
        value = _state_name(state)
        with self._lock:
            self._breakers[label] = value
        self._breaker_gauge.labels(label).set(BREAKER_STATE_VALUES.get(value, -1))

    def watch_breaker(self, breaker: Any) -> None:
        """Follow a ``CircuitBreaker``: publish its state now, on every transition, and again
        whenever states are read (:meth:`refresh_breakers`)."""
        with self._lock:
            self._watched[_clean_label(breaker.name)] = breaker
        self.set_breaker_state(breaker.name, breaker.state)
        breaker.add_listener(lambda b, _old, new: self.set_breaker_state(b.name, new))

    def refresh_breakers(self) -> None:
        """Publish each watched breaker's state as it is now. An open breaker becomes half-open
        when its recovery timeout passes, lazily, without a transition: listeners only hear of
        it at the next call, so a quiet client had kept reporting "open" (and unhealthy)."""
        with self._lock:
            watched = list(self._watched.values())
        for breaker in watched:
            self.set_breaker_state(breaker.name, breaker.state)

    def set_health(self, status: object) -> None:
        """Publish the overall health (a ``HealthStatus`` or healthy/degraded/unhealthy)."""
        value = _state_name(status)
        with self._lock:
            self._health = value
        self._health_gauge.set(HEALTH_STATUS_VALUES.get(value, -1))

    @property
    def breaker_states(self) -> dict[str, str]:
        """Each breaker's state, read live from the watched breakers."""
        self.refresh_breakers()
        with self._lock:
            return dict(self._breakers)

    # ------------------------------------------------------------------ reading

    def get_operation_metrics(
        self, operation: str, table: str | None = None
    ) -> OperationMetrics | None:
        """Aggregates for one operation; summed across tables unless ``table`` is given."""
        op = _clean_label(operation)
        with self._lock:
            if table is not None:
                stats = self._stats.get((op, _clean_label(table)))
                group = [stats] if stats else []
            else:
                group = list(self._stats_for_operation(op))
            if not group:
                return None
            tables = {s.table for s in group}
            label = _clean_label(table) if table is not None else None
            if label is None and len(tables) == 1:
                label = next(iter(tables))
            return _aggregate(group, op, label)

    def all_operation_metrics(self) -> list[OperationMetrics]:
        """One entry per (operation, table), sorted by operation then table."""
        with self._lock:
            return [
                _aggregate([s], s.operation, s.table or None)
                for _, s in sorted(self._stats.items())
            ]

    def system_metrics(self) -> SystemMetrics:
        """Memory (RSS), CPU since the last call, connections, breaker states, health, uptime."""
        proc = self._process
        connections = open_sockets(proc)
        self.refresh_breakers()
        with self._lock:
            breakers = dict(self._breakers)
            health = self._health
        return SystemMetrics(
            memory_usage_mb=round(proc.memory_info().rss / (1024 * 1024), 2),
            cpu_usage_percent=proc.cpu_percent(None),
            active_connections=connections,
            circuit_breaker_states=breakers,
            health_status=health,
            uptime_seconds=int(self._clock() - self._started),
        )

    def samples(self) -> list[dict[str, Any]]:
        """The retained raw samples, oldest first (the ``samples`` of ``metrics.json``)."""
        with self._lock:
            rows = list(self._sample_log)
        return [
            {
                "timestamp": _iso(ts),
                "operation": op,
                "table": table or None,
                "method": method,
                "status_code": status,
                "duration_ms": duration,
                "ok": ok,
            }
            for ts, op, table, method, status, duration, ok in rows
        ]

    def to_frame(self) -> Any:
        """pandas DataFrame, one row per (operation, table)."""
        import pandas as pd

        rows = [m.to_dict() for m in self.all_operation_metrics()]
        frame = pd.DataFrame(rows, columns=_FRAME_COLUMNS)
        frame["last_updated"] = pd.to_datetime(frame["last_updated"], utc=True, format="ISO8601")
        return frame

    def samples_frame(self) -> Any:
        """pandas DataFrame of the retained samples (timestamp as UTC datetime)."""
        return _samples_to_frame(self.samples())

    # ------------------------------------------------------------------ export

    def exposition(self) -> bytes:
        """The Prometheus text exposition of this collector's registry."""
        self.refresh_breakers()
        return generate_latest(self.registry)

    def write_textfile(self, path: str | os.PathLike[str]) -> Path:
        """Write ``*.prom`` for node_exporter's textfile collector (temp file + rename)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.refresh_breakers()
        _prom_write_textfile(str(target), self.registry)
        return target

    def snapshot(self) -> dict[str, Any]:
        """The ``metrics.json`` document (docs/architecture.md), redacted."""
        document = {
            "generated_at": datetime.now(UTC).isoformat(),
            "operations": [m.to_dict() for m in self.all_operation_metrics()],
            "system": self.system_metrics().to_dict(),
            "samples": self.samples(),
        }
        return redact(document)

    def write_snapshot(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`snapshot` as JSON atomically (temp file in the same dir + rename)."""
        return write_atomic(path, orjson.dumps(self.snapshot(), option=orjson.OPT_INDENT_2))

    @staticmethod
    def load_snapshot(path: str | os.PathLike[str]) -> MetricsSnapshot:
        """Read a ``metrics.json`` back as typed objects (with ``to_frame()``)."""
        data = orjson.loads(Path(path).read_bytes())
        system = data.get("system")
        return MetricsSnapshot(
            operations=[OperationMetrics.from_dict(op) for op in data.get("operations", [])],
            system=SystemMetrics.from_dict(system) if system else None,
            samples=list(data.get("samples", [])),
            generated_at=data.get("generated_at"),
            extra={
                k: v
                for k, v in data.items()
                if k not in {"operations", "system", "samples", "generated_at"}
            },
        )

    # ------------------------------------------------------------------ internals

    def _store(self, route: _Route, status_code: int | None, duration_ms: float | None) -> None:
        now = self._wall()
        stats = route.stats
        with self._lock:
            stats.total += 1
            if route.ok:
                stats.ok += 1
            else:
                stats.failed += 1
            if duration_ms is not None:
                stats.timed += 1
                stats.duration_sum_ms += duration_ms
                if duration_ms > stats.max_ms:
                    stats.max_ms = duration_ms
                stats.samples.append(duration_ms)
            stats.last_updated = now
            self._sample_log.append(
                (
                    now,
                    route.operation,
                    route.table,
                    route.method,
                    status_code,
                    duration_ms,
                    route.ok,
                )
            )
        self._last_request.set(now)

    def _route(
        self, method: str, operation: str, table: str | None, status_code: int | None
    ) -> _Route:
        """Resolve and cache the cleaned labels and Prometheus children for raw inputs."""
        op = _clean_label(operation)
        tbl = _clean_label(table) if table else (_table_from(op) or _NO_TABLE)
        meth = _clean_label(method).upper()
        status = str(status_code) if status_code is not None else "error"
        ok = status_code is not None and status_code < 400
        with self._lock:
            stats = self._ensure_stats(op, tbl)
        route = _Route(
            stats=stats,
            counter=self._requests.labels(meth, op, tbl, status),
            histogram=self._durations.labels(meth, op, tbl),
            ok=ok,
            operation=op,
            table=tbl,
            method=meth,
            status=status,
        )
        if len(self._routes) >= self._max_label_sets:
            self._routes.clear()  # a cache only; bounded even if callers pass raw URLs
        self._routes[(method, operation, table, status_code)] = route
        return route

    def _ensure_stats(self, op: str, table: str) -> _Stats:
        """Get or create the accumulator; rebalance per-key buffers under the global cap."""
        stats = self._stats.get((op, table))
        if stats is None:
            stats = _Stats(operation=op, table=table, samples=deque(maxlen=self._per_key_cap))
            self._stats[(op, table)] = stats
            cap = max(_MIN_SAMPLES_PER_KEY, self.max_samples // len(self._stats))
            cap = min(cap, self.max_samples)
            if cap != self._per_key_cap:
                self._per_key_cap = cap
                for existing in self._stats.values():
                    existing.samples = deque(existing.samples, maxlen=cap)
        return stats

    def _stats_for_count(self, op: str, table: str | None) -> _Stats:  # lock held
        if table is not None:
            return self._ensure_stats(op, _clean_label(table))
        return next(iter(self._stats_for_operation(op)), None) or self._ensure_stats(op, _NO_TABLE)

    def _stats_for_operation(self, op: str) -> Iterable[_Stats]:
        return (s for (o, _t), s in sorted(self._stats.items()) if o == op)

    def retained_sample_count(self) -> int:
        """How many latencies the per-key buffers hold in total (bounded by ``max_samples``)."""
        with self._lock:
            return sum(len(s.samples) for s in self._stats.values())


def _aggregate(group: list[_Stats], operation: str, table: str | None) -> OperationMetrics:
    total = sum(s.total for s in group)
    ok = sum(s.ok for s in group)
    failed = sum(s.failed for s in group)
    values = sorted(v for s in group for v in s.samples)
    timed = sum(len(s.samples) for s in group)
    duration_sum = sum(s.duration_sum_ms for s in group)
    # The mean uses every timed request ever seen, not just the retained window.
    timed_total = sum(s.timed for s in group)
    last = max((s.last_updated for s in group), default=0.0)
    return OperationMetrics(
        operation_name=operation,
        table=table if table else None,
        total_requests=total,
        successful_requests=ok,
        failed_requests=failed,
        average_response_time_ms=(duration_sum / timed_total) if timed_total else 0.0,
        p95_response_time_ms=_percentile(values, 95),
        error_rate_percent=(100.0 * failed / total) if total else 0.0,
        last_updated=datetime.fromtimestamp(last, UTC) if last else None,
        p50_response_time_ms=_percentile(values, 50),
        p99_response_time_ms=_percentile(values, 99),
        max_response_time_ms=max((s.max_ms for s in group), default=0.0),
        retries=sum(s.retries for s in group),
        rate_limited=sum(s.rate_limited for s in group),
        samples_retained=timed,
    )


def _is_rate_limit(error: BaseException) -> bool:
    return any(cls.__name__ == "RateLimitError" for cls in type(error).__mro__)


def _error_type(error: BaseException | str) -> str:
    """A bounded label for an error: its category, else its class name; never its message."""
    if isinstance(error, BaseException):
        context = getattr(error, "context", None)
        category = getattr(context, "category", None)
        if category is not None:
            return _clean_label(category)
        return type(error).__name__
    return _clean_label(error)[:64]


__all__ = [
    "BREAKER_STATE_VALUES",
    "DURATION_BUCKETS",
    "HEALTH_STATUS_VALUES",
    "MetricsCollector",
    "MetricsSnapshot",
    "OperationMetrics",
    "SystemMetrics",
]
