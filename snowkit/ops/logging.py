"""Structured JSON-lines logging with run/correlation ids and secret redaction on every line.

structlog builds the event dicts; we add the pieces it deliberately leaves to applications: a
redaction processor (placed last, after exception formatting, so tracebacks are covered too),
exception formatting that never includes local variables, one sink writing the same line to the
console and to a size-rotated file, and a bridge so third-party stdlib loggers (requests,
urllib3) go through the same pipeline. Our own log lines skip stdlib logging entirely: that
keeps a line well under 20 µs. ``configure_logging`` is idempotent (notebooks call it again and
again) and resolves ``sys.stderr`` at write time so pytest's capsys keeps working.
"""

from __future__ import annotations

import contextlib
import logging as stdlib_logging
import os
import secrets as _secrets
import sys
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, get_contextvars
from structlog.typing import EventDict, WrappedLogger

from snowkit.ops.redaction import redact

LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUP_COUNT = 5


# -- processors --------------------------------------------------------------------------------
_LEVEL_NAMES = {"warn": "warning", "exception": "error", "fatal": "critical", "msg": "info"}


def add_standard_fields(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """``logger``, ``level`` and ``timestamp`` (ISO 8601 UTC with offset), in one pass."""
    if "logger" not in event_dict:
        event_dict["logger"] = getattr(logger, "name", "snowkit")
    if "level" not in event_dict:
        event_dict["level"] = _LEVEL_NAMES.get(method_name, method_name)
    if "timestamp" not in event_dict:
        event_dict["timestamp"] = datetime.now(UTC).isoformat()
    return event_dict


def render_stack_info(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """``stack_info=True`` → a formatted ``stack`` field (cheap no-op otherwise)."""
    if event_dict.pop("stack_info", None):
        return structlog.processors.StackInfoRenderer()(_, __, event_dict | {"stack_info": True})
    return event_dict


def redact_event(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Mask secrets by key and by known value; must run after exception formatting."""
    return redact(event_dict)


def _to_sink(_: WrappedLogger, __: str, event_dict: EventDict) -> tuple[tuple[Any], dict]:
    return (event_dict,), {}


# format_exc_info renders tracebacks with the stdlib formatter: never local variables
# (structlog's dict_tracebacks and ConsoleRenderer would include them by default).
PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    add_standard_fields,
    render_stack_info,
    structlog.processors.format_exc_info,
    redact_event,
    _to_sink,
]


# -- output ------------------------------------------------------------------------------------
class _RotatingWriter:
    """Appends lines to a file, rotating to ``.1``..``.N`` past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int, backup_count: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] = open(path, "ab")  # noqa: SIM115 - kept open for the process
        self._size = self._fh.tell()

    def write(self, line: bytes) -> None:
        if self.max_bytes and self._size + len(line) > self.max_bytes and self._size > 0:
            self._rotate()
        self._fh.write(line)
        self._fh.flush()
        self._size += len(line)

    def _rotate(self) -> None:
        self._fh.close()
        for index in range(self.backup_count - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backup_count > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()


class _Settings:
    def __init__(self) -> None:
        self.fmt = "json"
        self.console = True
        self.stream: IO[str] | None = None
        self.file: _RotatingWriter | None = None
        self.level = 20


_settings = _Settings()
_write_lock = threading.Lock()
_configure_lock = threading.RLock()
_generation = 0


def _render_json(event_dict: Mapping[str, Any]) -> bytes:
    return orjson.dumps(event_dict, default=str, option=orjson.OPT_APPEND_NEWLINE)


def _render_console(event_dict: Mapping[str, Any]) -> str:
    fields = {k: v for k, v in event_dict.items() if k not in {"timestamp", "level", "event"}}
    exception = fields.pop("exception", None)
    parts = [
        str(event_dict.get("timestamp", "")),
        f"[{event_dict.get('level', '')!s:<8}]",
        str(event_dict.get("event", "")),
    ]
    parts += [f"{k}={v}" for k, v in fields.items()]
    line = " ".join(parts)
    return f"{line}\n{exception}\n" if exception else line + "\n"


def _emit(event_dict: dict[str, Any]) -> None:
    settings = _settings
    json_line = _render_json(event_dict)
    with _write_lock:
        if settings.file is not None:
            with contextlib.suppress(OSError, ValueError):  # a full disk must not crash the load
                settings.file.write(json_line)
        if settings.console:
            stream = settings.stream or sys.stderr  # looked up now: pytest swaps sys.stderr
            try:
                if settings.fmt == "console":
                    stream.write(_render_console(event_dict))
                else:
                    stream.write(json_line.decode("utf-8"))
            except (OSError, ValueError):
                pass


class _Sink:
    """The structlog "logger": receives the final event dict and writes it everywhere."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, event_dict: dict[str, Any]) -> None:
        _emit(event_dict)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


_SINKS: dict[str, _Sink] = {}


def _sink_factory(*args: Any) -> _Sink:
    name = str(args[0]) if args else "snowkit"
    sink = _SINKS.get(name)
    if sink is None:
        sink = _SINKS.setdefault(name, _Sink(name))
    return sink


class _StdlibBridge(stdlib_logging.Handler):
    """Routes third-party stdlib log records through the same processors and sink."""

    def emit(self, record: stdlib_logging.LogRecord) -> None:
        try:
            event: dict[str, Any] = {
                "event": record.getMessage(),
                "logger": record.name,
                "level": record.levelname.lower(),
            }
            if record.exc_info:
                event["exc_info"] = record.exc_info
            method = record.levelname.lower()
            for processor in PROCESSORS[:-1]:
                event = processor(None, method, event)
            _emit(event)
        except Exception:
            self.handleError(record)


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use one of {sorted(LEVELS)}") from None


def configure_logging(
    level: str | int = "INFO",
    fmt: str = "json",
    file_path: Path | str | None = None,
    console: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    backup_count: int = DEFAULT_BACKUP_COUNT,
    *,
    stream: IO[str] | None = None,
    capture_stdlib: bool = True,
) -> None:
    """(Re)configure snowkit logging; safe to call any number of times.

    ``fmt`` is ``"json"`` (default) or ``"console"`` (human-readable, console only; the file is
    always JSON lines). ``file_path`` None means no file. ``stream`` defaults to the current
    ``sys.stderr`` at each write.
    """
    global _generation
    if fmt not in {"json", "console", "structured"}:
        raise ValueError(f"unknown log format {fmt!r}; use 'json' or 'console'")
    numeric = _level_number(level)
    with _configure_lock:
        old_file = _settings.file
        new_path = Path(file_path).resolve() if file_path else None
        if old_file is not None and (
            new_path != old_file.path
            or (old_file.max_bytes, old_file.backup_count) != (max_bytes, backup_count)
        ):
            old_file.close()
            old_file = None
        _settings.file = old_file or (
            _RotatingWriter(new_path, max_bytes, backup_count) if new_path else None
        )
        _settings.fmt = "console" if fmt == "console" else "json"
        _settings.console = console
        _settings.stream = stream
        _settings.level = numeric
        structlog.configure(
            processors=PROCESSORS,
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            logger_factory=_sink_factory,
            cache_logger_on_first_use=False,
        )
        root = stdlib_logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, _StdlibBridge)]:
            root.removeHandler(handler)
        if capture_stdlib:
            bridge = _StdlibBridge(level=max(numeric, stdlib_logging.INFO))
            root.addHandler(bridge)
        _generation += 1


def configure_from_config(config: Any) -> None:
    """Apply ``OperationalConfig.logging`` (level and format per environment)."""
    from snowkit import paths

    log_cfg = config.logging
    file_path: Path | None = None
    if getattr(log_cfg, "file_enabled", True):
        file_path = Path(log_cfg.file_output) if log_cfg.file_output else None
        file_path = file_path or (paths.logs_dir() / "snowkit.jsonl")
    configure_logging(
        level=log_cfg.level,
        fmt="console" if log_cfg.format in {"console", "text"} else "json",
        file_path=file_path,
        console=log_cfg.console_output,
        max_bytes=getattr(log_cfg, "max_bytes", DEFAULT_MAX_BYTES),
        backup_count=getattr(log_cfg, "backup_count", DEFAULT_BACKUP_COUNT),
    )


def _ensure_configured() -> None:
    if _generation == 0:
        with _configure_lock:
            if _generation == 0:
                configure_logging()


def get_logger(name: str = "snowkit", **initial_values: Any) -> Any:
    """A structlog bound logger writing through snowkit's pipeline."""
    _ensure_configured()
    return structlog.get_logger(name, **initial_values)


# -- run and correlation ids --------------------------------------------------------------------
def new_run_id(now: datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-<6 hex>``: sorts by start time, unique enough within one second."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{_secrets.token_hex(3)}"


def bind_run_id(run_id: str | None = None) -> str:
    """Put ``run_id`` on every following log line of this context; returns it."""
    run_id = run_id or new_run_id()
    bind_contextvars(run_id=run_id)
    return run_id


def current_run_id() -> str | None:
    return get_contextvars().get("run_id")


@contextlib.contextmanager
def correlation_scope(correlation_id: str | None = None) -> Iterator[str]:
    """Tag log lines and error contexts inside the block with one correlation id (32 hex)."""
    cid = correlation_id or _secrets.token_hex(16)
    with bound_contextvars(correlation_id=cid):
        yield cid


def current_correlation_id() -> str | None:
    return get_contextvars().get("correlation_id")


# -- the seed's logger ----------------------------------------------------------------------------
class StructuredLogger:
    """The seed's named logger; each method writes one well-known event."""

    def __init__(self, name: str, level: str | int = "INFO") -> None:
        self.name = name
        self.level = _level_number(level)
        self._generation = -1
        self._logger: Any = None

    @property
    def logger(self) -> Any:
        if self._generation != _generation or self._logger is None:
            _ensure_configured()
            self._logger = structlog.get_logger(self.name).bind()
            self._generation = _generation
        return self._logger

    def _log(self, level: int, name: str, fields: Mapping[str, Any]) -> None:
        if level < self.level:
            return
        method = {10: "debug", 20: "info", 30: "warning", 40: "error"}.get(level, "critical")
        getattr(self.logger, method)(name, **fields)

    def event(self, name: str, level: str | int = "INFO", **fields: Any) -> None:
        """Any named event (``request``, ``health_check``, ...)."""
        self._log(_level_number(level), name, fields)

    def log_operation_start(self, operation: str, context: Mapping[str, Any] | None = None) -> None:
        self._log(20, "operation_start", {"operation": operation, **(context or {})})

    def log_operation_complete(
        self,
        operation: str,
        duration_ms: float,
        success: bool,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self._log(
            20 if success else 30,
            "operation_complete",
            {
                "operation": operation,
                "duration_ms": round(float(duration_ms), 3),
                "success": success,
                **(context or {}),
            },
        )

    def log_error(self, error_context: Any) -> None:
        """An ``ErrorContext`` as an ``error`` event (its fields, redacted)."""
        fields = (
            error_context.to_dict() if hasattr(error_context, "to_dict") else dict(error_context)
        )
        fields.pop("timestamp", None)  # the line's own timestamp is the time of logging
        severity = fields.get("severity")
        self._log(50 if severity == "critical" else 40, "error", fields)

    def log_credential_access(self, method: str, success: bool, details: str | None = None) -> None:
        fields: dict[str, Any] = {"method": method, "success": success}
        if details:
            fields["details"] = details
        self._log(20 if success else 30, "credential_access", fields)

    def log_data_quality_issue(
        self, issue_type: str, affected_records: int, details: Mapping[str, Any] | None = None
    ) -> None:
        self._log(
            30,
            "data_quality_issue",
            {"issue_type": issue_type, "affected_records": affected_records, **(details or {})},
        )

    def log_performance_metric(
        self, metric_name: str, value: float, unit: str, context: Mapping[str, Any] | None = None
    ) -> None:
        self._log(
            20,
            "performance_metric",
            {"metric": metric_name, "value": value, "unit": unit, **(context or {})},
        )


__all__ = [
    "PROCESSORS",
    "StructuredLogger",
    "bind_run_id",
    "configure_from_config",
    "configure_logging",
    "correlation_scope",
    "current_correlation_id",
    "current_run_id",
    "get_logger",
    "new_run_id",
]
