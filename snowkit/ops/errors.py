"""Error taxonomy and error capture: what went wrong, whether to retry, and what a person should do.

One place maps exceptions and ServiceNow responses onto a category, a severity and a retry
decision, so the retry manager, the circuit breaker and the sync engine all agree. The taxonomy
is ServiceNow-specific (ambiguous writes, hibernating instances, the Table API error envelope),
which is why no generic library fits. Every context is redacted before it is kept or written.
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


_WRITE_METHODS = frozenset({"POST", "PATCH"})


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


def _header(response: Any, name: str) -> str | None:
    headers = getattr(response, "headers", None) or {}
    value = headers.get(name)
    return str(value) if value is not None else None


def _parse_envelope(response: Any) -> dict[str, Any]:
    """ServiceNow's ``{"error": {"message", "detail"}, "status": "failure"}``, tolerantly."""
    try:
        body = response.json()
    except Exception:
        return {}
    if not isinstance(body, dict):
        return {}
    error = body.get("error")
    parsed: dict[str, Any] = {"status": body.get("status")}
    if isinstance(error, dict):
        parsed["message"] = error.get("message")
        parsed["detail"] = error.get("detail")
    elif isinstance(error, str):
        parsed["message"] = error
    return parsed


def _looks_hibernating(response: Any) -> bool:
    content_type = (_header(response, "Content-Type") or "").lower()
    if "text/html" not in content_type:
        return False
    text = (getattr(response, "text", "") or "")[:20_000].lower()
    return "hibernat" in text or getattr(response, "status_code", 0) == 200


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
        return classify(exc, operation, method, timestamp=self._now())

    def handle_servicenow_error(self, response: Any, operation: str) -> ErrorContext:
        """Classify a ServiceNow HTTP response that was not a success."""
        status = int(getattr(response, "status_code", 0) or 0)
        envelope = _parse_envelope(response)
        sn_message = envelope.get("message") or ""
        sn_detail = envelope.get("detail") or ""
        request = getattr(response, "request", None)
        method = (getattr(request, "method", None) or "").upper() or None
        details: dict[str, Any] = {
            "status": envelope.get("status"),
            "servicenow_message": sn_message or None,
            "servicenow_detail": sn_detail or None,
            "transaction_id": _header(response, "X-Transaction-ID"),
            "method": method,
            "url": _safe_url(getattr(response, "url", None)),
            "table_name": _table_of(getattr(response, "url", None), sn_message),
        }
        text = sn_message or (getattr(response, "reason", "") or "")
        summary = f"HTTP {status} from ServiceNow during {operation}"
        if text:
            summary += f": {text}"
        if sn_detail:
            summary += f" ({sn_detail})"

        def build(
            category: ErrorCategory,
            severity: ErrorSeverity,
            retryable: bool,
            guidance: str = "",
            message: str = summary,
        ) -> ErrorContext:
            return self._build(
                operation,
                message,
                category,
                severity,
                retryable=retryable,
                http_status=status or None,
                details={k: v for k, v in details.items() if v is not None},
                guidance=guidance,
            )

        lowered = f"{sn_message} {sn_detail}".lower()
        if _looks_hibernating(response):
            return build(
                ErrorCategory.HIBERNATING,
                ErrorSeverity.CRITICAL,
                False,
                message=f"The instance answered {operation} with an HTML page: it is hibernating.",
            )
        if status == 401:
            auth_method = _auth_method_of(request)
            details["auth_method"] = auth_method
            return build(
                ErrorCategory.AUTHENTICATION,
                ErrorSeverity.CRITICAL,
                False,
                guidance=_authentication_guidance(auth_method or "unknown"),
            )
        if status == 403:
            role = _missing_role(lowered)
            if role:
                details["missing_role"] = role
            return build(
                ErrorCategory.AUTHENTICATION,
                ErrorSeverity.CRITICAL,
                False,
                guidance=_authorization_guidance(role),
            )
        if status == 429:
            from snowkit.ops.retry import rate_limit_wait

            details["retry_after"] = rate_limit_wait(response, clock=self._clock)
            for name in ("X-RateLimit-Limit", "X-RateLimit-Reset", "X-RateLimit-Rule"):
                details[name.lower().replace("-", "_")] = _header(response, name)
            return build(ErrorCategory.RATE_LIMIT, ErrorSeverity.MEDIUM, True)
        if status == 400 and "invalid table" in lowered:
            return build(ErrorCategory.INVALID_TABLE, ErrorSeverity.HIGH, False)
        if status == 404:
            return build(ErrorCategory.NOT_FOUND, ErrorSeverity.LOW, False)
        if status >= 500:
            return build(ErrorCategory.SERVICENOW_API, ErrorSeverity.MEDIUM, True)
        if 400 <= status < 500:
            return build(
                ErrorCategory.DATA_VALIDATION,
                ErrorSeverity.MEDIUM,
                False,
                guidance="ServiceNow rejected the request; see servicenow_message/detail.",
            )
        return build(ErrorCategory.SERVICENOW_API, ErrorSeverity.HIGH, False)

    def handle_authentication_error(
        self, auth_method: str, details: str | Mapping[str, Any] | None = None
    ) -> ErrorContext:
        """An authentication failure with guidance naming what to set."""
        info: dict[str, Any] = (
            dict(details) if isinstance(details, Mapping) else {"reason": details or ""}
        )
        info["auth_method"] = auth_method
        info.setdefault("method", auth_method)  # the seed's recovery strategy reads "method"
        status = info.get("http_status") or info.get("status")
        status = int(status) if isinstance(status, int | str) and str(status).isdigit() else None
        if status == 403:
            guidance = _authorization_guidance(info.get("missing_role"))
        else:
            guidance = _authentication_guidance(auth_method)
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


def classify(
    exc: BaseException,
    operation: str = "unknown",
    method: str | None = None,
    *,
    timestamp: datetime | None = None,
) -> ErrorContext:
    """Map an exception to a context without recording it (see ``ErrorHandler``).

    ``method`` defaults to the HTTP method of the request a requests exception carries, so a
    read timeout on a POST is an ambiguous write even when the caller did not say so.
    """
    if isinstance(exc, OperationalError):
        return exc.context
    import requests

    sent_by = getattr(getattr(exc, "request", None), "method", None)
    verb = str(method or sent_by or "GET").upper()
    is_write = verb in _WRITE_METHODS
    message = f"{type(exc).__name__}: {exc}"
    details: dict[str, Any] = {"exception_type": type(exc).__name__, "method": verb}

    def ctx(category: ErrorCategory, severity: ErrorSeverity, retryable: bool) -> ErrorContext:
        return make_context(
            message,
            operation=operation,
            category=category,
            severity=severity,
            retryable=retryable,
            details=details,
            timestamp=timestamp,
        )

    if isinstance(exc, requests.exceptions.SSLError):
        details["hint"] = "TLS verification failed: set servicenow.ca_bundle or REQUESTS_CA_BUNDLE"
        return ctx(ErrorCategory.NETWORK, ErrorSeverity.HIGH, False)
    if isinstance(exc, requests.exceptions.ConnectTimeout) or (
        isinstance(exc, requests.exceptions.ConnectionError) and not _sent_before_failure(exc)
    ):
        details["request_sent"] = False
        return ctx(ErrorCategory.NETWORK, ErrorSeverity.MEDIUM, True)
    if isinstance(exc, requests.exceptions.Timeout | requests.exceptions.ConnectionError):
        details["request_sent"] = True
        if is_write:
            return ctx(ErrorCategory.AMBIGUOUS_WRITE, ErrorSeverity.HIGH, False)
        return ctx(ErrorCategory.NETWORK, ErrorSeverity.MEDIUM, True)
    if isinstance(exc, requests.exceptions.RequestException):
        return ctx(ErrorCategory.NETWORK, ErrorSeverity.MEDIUM, False)
    if type(exc).__name__ == "ValidationError":
        return ctx(ErrorCategory.DATA_VALIDATION, ErrorSeverity.MEDIUM, False)
    if isinstance(exc, KeyError | ValueError | TypeError):
        return ctx(ErrorCategory.TRANSFORMATION, ErrorSeverity.MEDIUM, False)
    if isinstance(exc, TimeoutError | ConnectionError):
        retryable = not is_write
        category = ErrorCategory.NETWORK if retryable else ErrorCategory.AMBIGUOUS_WRITE
        return ctx(category, ErrorSeverity.MEDIUM, retryable)
    return ctx(ErrorCategory.SERVICENOW_API, ErrorSeverity.HIGH, False)


def _sent_before_failure(exc: BaseException) -> bool:
    """True when a ConnectionError happened after the request went out (reset, aborted)."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        name = type(item).__name__
        if name in {"NewConnectionError", "NameResolutionError", "ConnectTimeoutError"}:
            return False
        if name in {
            "ProtocolError",
            "RemoteDisconnected",
            "ConnectionResetError",
            "BrokenPipeError",
        }:
            return True
        if isinstance(item, BaseException):
            stack.extend([item.__cause__, item.__context__, getattr(item, "reason", None)])
            stack.extend(a for a in item.args if isinstance(a, BaseException))
    return False


def _table_of(url: Any, message: str) -> str | None:
    """The table a Table API call addressed (the seed's table fallback reads ``table_name``)."""
    path = str(url or "").split("?", 1)[0]
    marker = "/api/now/table/"
    if marker in path:
        return path.split(marker, 1)[1].split("/", 1)[0] or None
    if message.lower().startswith("invalid table "):
        return message.split()[-1]
    return None


def _auth_method_of(request: Any) -> str | None:
    """Which auth method a request used, read from its headers (never their values)."""
    headers = getattr(request, "headers", None) or {}
    if "x-sn-apikey" in headers:
        return "api_key"
    authorization = str(headers.get("Authorization", ""))
    if authorization.startswith("Bearer "):
        return "oauth"
    if authorization.startswith("Basic "):
        return "basic"
    return None


def _safe_url(url: Any) -> str | None:
    """The URL without its query string (queries can carry values we do not want on disk)."""
    if not url:
        return None
    return redact_text(str(url).split("?", 1)[0])


def _missing_role(text: str) -> str | None:
    for role in ("itil", "cmdb_read", "cmdb_write", "rest_service", "snc_platform_rest_api_access"):
        if role in text:
            return role
    if "acl" in text or "not authorized" in text or "insufficient" in text:
        return "itil"
    return None


def _authorization_guidance(role: str | None) -> str:
    role_text = f"the '{role}' role" if role else "a role that can read and write the CMDB tables"
    return (
        "The credentials work but the user is not allowed to do this (HTTP 403). Ask a "
        f"ServiceNow admin to grant {role_text} (typically itil, or cmdb_read + cmdb_write, and "
        "snc_platform_rest_api_access where REST access is restricted) to the integration user."
    )


def _authentication_guidance(auth_method: str) -> str:
    method = auth_method.lower()
    if method in {"op", "1password", "onepassword"}:
        return (
            "1Password could not provide the secret. Install the 1Password CLI (`op`), sign in "
            "(`op signin`, or set OP_SERVICE_ACCOUNT_TOKEN) and check the op:// reference; or "
            "set the SERVICENOW_* environment variables instead."
        )
    if "api" in method and "key" in method:
        return (
            "The API key was rejected. Set SERVICENOW_API_KEY (or SERVICENOW_API_KEY_OP_REF to "
            "an op:// 1Password reference) to a key that is active on the instance; snowkit then "
            "falls back to OAuth or basic auth if those are configured."
        )
    if "oauth" in method:
        return (
            "The OAuth token was rejected. Set SERVICENOW_OAUTH_TOKEN, or SERVICENOW_CLIENT_ID and "
            "SERVICENOW_CLIENT_SECRET (or their *_OP_REF 1Password references) so snowkit can "
            "fetch a fresh token from /oauth_token.do."
        )
    if "basic" in method or "password" in method:
        return (
            "The user name or password was rejected. Set SERVICENOW_USERNAME and "
            "SERVICENOW_PASSWORD (or SERVICENOW_PASSWORD_OP_REF to an op:// 1Password reference) "
            "and check the account is not locked out."
        )
    return DEFAULT_GUIDANCE[ErrorCategory.AUTHENTICATION]


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
    "classify",
    "environment_info",
    "make_context",
]
