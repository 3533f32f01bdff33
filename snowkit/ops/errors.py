"""Error taxonomy and error capture: what went wrong, whether to retry, and what a person should do.

One place maps exceptions and ServiceNow responses onto a category, a severity and a retry
decision, so the retry manager, the circuit breaker and the sync engine all agree (the mapping
lives in :mod:`snowkit.ops.classify`; this module holds the types and the recorder). The
taxonomy is ServiceNow-specific (ambiguous writes, hibernating instances, the Table API error
envelope), which is why no generic library fits. Every context is redacted before it is kept
or written.
"""

from __future__ import annotations

import os
import platform
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

import orjson

from snowkit.ops.redaction import redact, redact_text


class ErrorSeverity(Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ErrorCategory(Enum):
    AUTHENTICATION = "authentication"
    NETWORK = "network"
    DATA_VALIDATION = "data_validation"
    SERVICENOW_API = "servicenow_api"
    TRANSFORMATION = "transformation"
    CONFIGURATION = "configuration"
    RATE_LIMIT = "rate_limit"
    AMBIGUOUS_WRITE = "ambiguous_write"
    INVALID_TABLE = "invalid_table"
    NOT_FOUND = "not_found"
    CIRCUIT_OPEN = "circuit_open"
    HIBERNATING = "hibernating"


#: What to do, per category, when nothing more specific is known.
DEFAULT_GUIDANCE: dict[ErrorCategory, str] = {
    ErrorCategory.AUTHENTICATION: (
        "Check the ServiceNow credentials: set SERVICENOW_API_KEY, SERVICENOW_OAUTH_TOKEN, "
        "SERVICENOW_CLIENT_ID/SERVICENOW_CLIENT_SECRET or SERVICENOW_USERNAME/SERVICENOW_PASSWORD "
        "(or their *_OP_REF 1Password references), then run `snowkit health`."
    ),
    ErrorCategory.NETWORK: (
        "The instance could not be reached. Check SERVICENOW_INSTANCE, DNS, proxies and "
        "REQUESTS_CA_BUNDLE; the request is safe to retry."
    ),
    ErrorCategory.DATA_VALIDATION: "Fix the input record; it has been skipped, the run continues.",
    ErrorCategory.SERVICENOW_API: (
        "The instance answered with a server error; it is usually transient. If it persists, "
        "check the instance's system logs using the transaction id."
    ),
    ErrorCategory.TRANSFORMATION: (
        "A UniFi record could not be mapped; see details and fix the mapping."
    ),
    ErrorCategory.CONFIGURATION: "Fix the configuration (see `snowkit config show`) and run again.",
    ErrorCategory.RATE_LIMIT: (
        "The instance's REST rate limit was reached; snowkit waits for Retry-After. Lower "
        "servicenow.workers or ask for a higher sys_rate_limit_rules entry."
    ),
    ErrorCategory.AMBIGUOUS_WRITE: (
        "The write was sent but no answer arrived: it may or may not have been applied. Do not "
        "resend blindly; look the record up by its source id (the sync engine does) and reconcile."
    ),
    ErrorCategory.INVALID_TABLE: (
        "The table does not exist on this instance or the user cannot see it. Check the table "
        "name and that the CMDB plugin / class is installed."
    ),
    ErrorCategory.NOT_FOUND: "The record does not exist (or is not visible to this user).",
    ErrorCategory.CIRCUIT_OPEN: (
        "Calls are paused after repeated failures; snowkit tries again after the recovery timeout."
    ),
    ErrorCategory.HIBERNATING: (
        "The instance is hibernating (developer instances sleep when idle). Wake it from "
        "developer.servicenow.com and run again."
    ),
}


@lru_cache(maxsize=1)
def _static_environment_info() -> dict[str, str]:
    from snowkit import __version__

    return {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "snowkit_version": __version__,
        "pid": str(os.getpid()),
    }


def environment_info() -> dict[str, str]:
    """Where the error happened: python, platform, snowkit version, environment name. No secrets."""
    info = dict(_static_environment_info())
    info["environment"] = (os.environ.get("BEAST_ENVIRONMENT") or "unknown").lower()
    return info


def _correlation_id() -> str:
    import uuid

    from snowkit.ops.logging import current_correlation_id

    return current_correlation_id() or uuid.uuid4().hex


@dataclass
class ErrorContext:
    """Everything needed to understand an error later, with secrets removed."""

    operation: str
    category: ErrorCategory
    severity: ErrorSeverity
    timestamp: datetime
    error_message: str
    stack_trace: str | None = None
    input_data: dict[str, Any] | None = None
    environment_info: dict[str, Any] = field(default_factory=environment_info)
    correlation_id: str = field(default_factory=_correlation_id)
    retryable: bool = False
    http_status: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    guidance: str = ""

    def __post_init__(self) -> None:
        if not self.guidance:
            self.guidance = DEFAULT_GUIDANCE.get(self.category, "")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-lines form (``errors.jsonl``), redacted."""
        return redact(
            {
                "operation": self.operation,
                "category": self.category.value,
                "severity": self.severity.value,
                "timestamp": self.timestamp.isoformat(),
                "error_message": self.error_message,
                "stack_trace": self.stack_trace,
                "input_data": self.input_data,
                "environment_info": self.environment_info,
                "correlation_id": self.correlation_id,
                "retryable": self.retryable,
                "http_status": self.http_status,
                "details": self.details,
                "guidance": self.guidance,
            }
        )


def make_context(
    message: str,
    *,
    operation: str = "unknown",
    category: ErrorCategory = ErrorCategory.SERVICENOW_API,
    severity: ErrorSeverity = ErrorSeverity.HIGH,
    retryable: bool = False,
    http_status: int | None = None,
    details: Mapping[str, Any] | None = None,
    guidance: str = "",
    stack_trace: str | None = None,
    input_data: dict[str, Any] | None = None,
    timestamp: datetime | None = None,
) -> ErrorContext:
    """Build a redacted context from parts (used where no exception was caught)."""
    return ErrorContext(
        operation=operation,
        category=category,
        severity=severity,
        timestamp=timestamp or datetime.now(UTC),
        error_message=redact_text(message),
        stack_trace=redact_text(stack_trace) if stack_trace else None,
        input_data=redact(input_data) if input_data is not None else None,
        retryable=retryable,
        http_status=http_status,
        details=redact(dict(details or {})),
        guidance=redact_text(guidance) if guidance else "",
    )


class OperationalError(Exception):
    """An error snowkit understands; ``context`` says what happened and what to do.

    Accepts a ready ``ErrorContext`` (the seed's form) or a message plus keyword parts, in which
    case the subclass supplies the category, severity and retry decision.
    """

    default_category: ErrorCategory = ErrorCategory.SERVICENOW_API
    default_severity: ErrorSeverity = ErrorSeverity.HIGH
    default_retryable: bool = False

    def __init__(self, context: ErrorContext | str, **parts: Any) -> None:
        if not isinstance(context, ErrorContext):
            parts.setdefault("category", self.default_category)
            parts.setdefault("severity", self.default_severity)
            parts.setdefault("retryable", self.default_retryable)
            context = make_context(str(context), **parts)
        self.context = context
        super().__init__(context.error_message)

    @property
    def category(self) -> ErrorCategory:
        return self.context.category

    @property
    def retryable(self) -> bool:
        return self.context.retryable

    @property
    def guidance(self) -> str:
        return self.context.guidance

    def __str__(self) -> str:
        message = self.context.error_message
        if self.context.guidance:
            separator = "\n" if "\n" in message else " "
            return f"{message}{separator}What to do: {self.context.guidance}"
        return message


class AuthenticationError(OperationalError):
    default_category = ErrorCategory.AUTHENTICATION
    default_severity = ErrorSeverity.CRITICAL


class AuthorizationError(AuthenticationError):
    """403: the credentials are valid but lack a role or ACL."""


class CredentialUnavailableError(AuthenticationError):
    """A credential source could not give a value (``op`` missing, not signed in, not found)."""


class RateLimitError(OperationalError):
    default_category = ErrorCategory.RATE_LIMIT
    default_severity = ErrorSeverity.MEDIUM
    default_retryable = True

    @property
    def retry_after(self) -> float | None:
        value = self.context.details.get("retry_after")
        return float(value) if value is not None else None

    @property
    def asked_wait(self) -> float | None:
        """The wait the instance itself named (``Retry-After``, ``X-RateLimit-Reset``); None
        when ``retry_after`` is snowkit's default for a bare 429 (nothing to hold it to)."""
        if self.context.details.get("retry_after_default"):
            return None
        return self.retry_after


class TransientServerError(OperationalError):
    default_category = ErrorCategory.SERVICENOW_API
    default_severity = ErrorSeverity.MEDIUM
    default_retryable = True


class NetworkError(OperationalError):
    default_category = ErrorCategory.NETWORK
    default_severity = ErrorSeverity.MEDIUM
    default_retryable = True


class AmbiguousWriteError(OperationalError):
    """A POST/PATCH was sent but its outcome is unknown; never retried blindly."""

    default_category = ErrorCategory.AMBIGUOUS_WRITE
    default_severity = ErrorSeverity.HIGH
    default_retryable = False


class InvalidTableError(OperationalError):
    default_category = ErrorCategory.INVALID_TABLE
    default_severity = ErrorSeverity.HIGH


class RecordNotFoundError(OperationalError):
    default_category = ErrorCategory.NOT_FOUND
    default_severity = ErrorSeverity.LOW


class HibernatingInstanceError(OperationalError):
    default_category = ErrorCategory.HIBERNATING
    default_severity = ErrorSeverity.CRITICAL


class DeadlineExceededError(OperationalError):
    default_category = ErrorCategory.SERVICENOW_API
    default_severity = ErrorSeverity.HIGH


class RetryBudgetExhaustedError(OperationalError):
    default_category = ErrorCategory.SERVICENOW_API
    default_severity = ErrorSeverity.HIGH


class ConfigurationError(OperationalError):
    """Invalid configuration; ``problems`` lists every one (dotted path: message)."""

    default_category = ErrorCategory.CONFIGURATION
    default_severity = ErrorSeverity.CRITICAL

    @property
    def problems(self) -> list[str]:
        return list(self.context.details.get("problems", []))


def _exception_class_for(context: ErrorContext) -> type[OperationalError]:
    named = context.details.get("error_class")
    if isinstance(named, str):
        found = _all_subclasses().get(named)
        if found is not None:
            return found
    status = context.http_status
    category = context.category
    if category is ErrorCategory.AUTHENTICATION:
        return AuthorizationError if status == 403 else AuthenticationError
    if category is ErrorCategory.SERVICENOW_API:
        return TransientServerError if context.retryable else OperationalError
    if category is ErrorCategory.CIRCUIT_OPEN:
        from snowkit.ops.breaker import CircuitOpenError

        return CircuitOpenError
    return {
        ErrorCategory.RATE_LIMIT: RateLimitError,
        ErrorCategory.NETWORK: NetworkError,
        ErrorCategory.AMBIGUOUS_WRITE: AmbiguousWriteError,
        ErrorCategory.INVALID_TABLE: InvalidTableError,
        ErrorCategory.NOT_FOUND: RecordNotFoundError,
        ErrorCategory.HIBERNATING: HibernatingInstanceError,
        ErrorCategory.CONFIGURATION: ConfigurationError,
    }.get(category, OperationalError)


def _all_subclasses() -> dict[str, type[OperationalError]]:
    found: dict[str, type[OperationalError]] = {"OperationalError": OperationalError}
    stack = [OperationalError]
    while stack:
        for sub in stack.pop().__subclasses__():
            found[sub.__name__] = sub
            stack.append(sub)
    return found


class ErrorHandler:
    """Captures, classifies, keeps and persists error contexts."""

    def __init__(
        self,
        errors_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        max_contexts: int = 10_000,
        persist: bool = True,
    ) -> None:
        if errors_path is None and persist:
            from snowkit import paths

            errors_path = paths.errors_path()
        self.errors_path = errors_path if persist else None
        self._clock = clock
        self._lock = threading.Lock()
        self._contexts: deque[ErrorContext] = deque(maxlen=max_contexts)
        self.persist_failures = 0

    # -- recording ---------------------------------------------------------------------------
    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def record(self, context: ErrorContext) -> ErrorContext:
        """Keep a context in memory and append it to ``errors_path``."""
        with self._lock:
            self._contexts.append(context)
            if self.errors_path is None:
                return context
            try:
                self.errors_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.errors_path, "ab") as fh:
                    fh.write(orjson.dumps(context.to_dict(), default=str) + b"\n")
            except OSError:
                # Losing the persisted copy must never hide the original error.
                self.persist_failures += 1
        return context

    @property
    def contexts(self) -> list[ErrorContext]:
        with self._lock:
            return list(self._contexts)

    def _build(
        self,
        operation: str,
        message: str,
        category: ErrorCategory,
        severity: ErrorSeverity,
        **parts: Any,
    ) -> ErrorContext:
        return self.record(
            make_context(
                message,
                operation=operation,
                category=category,
                severity=severity,
                timestamp=self._now(),
                **parts,
            )
        )

    def capture_error(
        self,
        operation: str,
        exception: BaseException,
        category: ErrorCategory | None = None,
        severity: ErrorSeverity | None = None,
        input_data: dict[str, Any] | None = None,
        *,
        method: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> ErrorContext:
        """Record an exception; category/severity default to :meth:`classify_exception`'s."""
        base = self._classify(exception, operation, method)
        merged = {**base.details, **(details or {})}
        stack = "".join(
            traceback.format_exception(type(exception), exception, exception.__traceback__)
        )
        return self._build(
            operation,
            base.error_message,
            category or base.category,
            severity or base.severity,
            retryable=base.retryable if category in (None, base.category) else False,
            http_status=base.http_status,
            details=merged,
            guidance=base.guidance if category in (None, base.category) else "",
            stack_trace=stack,
            input_data=input_data,
        )

    # -- classification ----------------------------------------------------------------------
    def classify_exception(
        self, exc: BaseException, operation: str, method: str | None = None
    ) -> ErrorContext:
        """Map an exception to a recorded context (retryable or not, ambiguous write or not)."""
        return self.record(self._classify(exc, operation, method))

    def _classify(self, exc: BaseException, operation: str, method: str | None) -> ErrorContext:
        from snowkit.ops.classify import classify

        return classify(exc, operation, method, timestamp=self._now())

    def handle_servicenow_error(self, response: Any, operation: str) -> ErrorContext:
        """Classify and record a ServiceNow HTTP response that was not a success."""
        from snowkit.ops.classify import classify_response

        return self.record(
            classify_response(response, operation, clock=self._clock, timestamp=self._now())
        )

    def handle_authentication_error(
        self, auth_method: str, details: str | Mapping[str, Any] | None = None
    ) -> ErrorContext:
        """An authentication failure with guidance naming what to set."""
        from snowkit.ops.classify import authentication_guidance, authorization_guidance

        info: dict[str, Any] = (
            dict(details) if isinstance(details, Mapping) else {"reason": details or ""}
        )
        info["auth_method"] = auth_method
        info.setdefault("method", auth_method)  # the seed's recovery strategy reads "method"
        status = info.get("http_status") or info.get("status")
        status = int(status) if isinstance(status, int | str) and str(status).isdigit() else None
        if status == 403:
            guidance = authorization_guidance(info.get("missing_role"))
        else:
            guidance = authentication_guidance(auth_method)
        reason = info.get("reason") or info.get("message") or "credentials rejected"
        return self._build(
            "authenticate",
            f"Authentication with {auth_method} failed: {reason}",
            ErrorCategory.AUTHENTICATION,
            ErrorSeverity.CRITICAL,
            retryable=False,
            http_status=status,
            details=info,
            guidance=guidance,
        )

    # -- analysis ----------------------------------------------------------------------------
    def aggregate_errors(self, time_window_minutes: int = 60) -> dict[str, dict[str, int]]:
        """Errors of the last ``time_window_minutes`` counted by category, severity, operation."""
        since = self._now() - timedelta(minutes=time_window_minutes)
        recent = [c for c in self.contexts if c.timestamp >= since]
        return {
            "by_category": dict(Counter(c.category.value for c in recent)),
            "by_severity": dict(Counter(c.severity.value for c in recent)),
            "by_operation": dict(Counter(c.operation for c in recent)),
            "total": {"errors": len(recent), "retryable": sum(c.retryable for c in recent)},
        }

    def raise_for(self, context: ErrorContext) -> NoReturn:
        """Raise the OperationalError subclass matching ``context``."""
        raise _exception_class_for(context)(context)


__all__ = [
    "DEFAULT_GUIDANCE",
    "AmbiguousWriteError",
    "AuthenticationError",
    "AuthorizationError",
    "ConfigurationError",
    "CredentialUnavailableError",
    "DeadlineExceededError",
    "ErrorCategory",
    "ErrorContext",
    "ErrorHandler",
    "ErrorSeverity",
    "HibernatingInstanceError",
    "InvalidTableError",
    "NetworkError",
    "OperationalError",
    "RateLimitError",
    "RecordNotFoundError",
    "RetryBudgetExhaustedError",
    "TransientServerError",
    "environment_info",
    "make_context",
]


def __getattr__(name: str) -> Any:
    """``classify`` moved to :mod:`snowkit.ops.classify`; keep the old import path working."""
    if name == "classify":
        from snowkit.ops.classify import classify

        return classify
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
