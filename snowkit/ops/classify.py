"""Classification: which category, severity and retry decision an exception or a ServiceNow
response gets, and the guidance naming what a person should do about it.

Split from ``errors.py`` (the taxonomy and the recorder) because this is the part that changes
whenever a new failure mode is met; keeping it pure (nothing recorded, nothing written) lets the
retry manager ask "is this retryable?" without side effects. ``ErrorHandler`` records the result.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from snowkit.ops.errors import (
    DEFAULT_GUIDANCE,
    ErrorCategory,
    ErrorContext,
    ErrorSeverity,
    OperationalError,
    make_context,
)
from snowkit.ops.redaction import redact_text

_WRITE_METHODS = frozenset({"POST", "PATCH"})


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
        isinstance(exc, requests.exceptions.ConnectionError) and not request_was_sent(exc)
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


def classify_response(
    response: Any,
    operation: str = "unknown",
    *,
    clock: Callable[[], float] = time.time,
    timestamp: datetime | None = None,
) -> ErrorContext:
    """Map a ServiceNow HTTP response that was not a success to a context (not recorded).

    ``clock`` (wall seconds) turns an ``X-RateLimit-Reset`` epoch into a wait.
    """
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
        return make_context(
            message,
            operation=operation,
            category=category,
            severity=severity,
            timestamp=timestamp,
            retryable=retryable,
            http_status=status or None,
            details={k: v for k, v in details.items() if v is not None},
            guidance=guidance,
        )

    lowered = f"{sn_message} {sn_detail}".lower()
    if is_hibernation_page(response):
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
            guidance=authentication_guidance(auth_method or "unknown"),
        )
    if status == 403:
        role = _missing_role(lowered)
        if role:
            details["missing_role"] = role
        return build(
            ErrorCategory.AUTHENTICATION,
            ErrorSeverity.CRITICAL,
            False,
            guidance=authorization_guidance(role),
        )
    if status == 429:
        from snowkit.ops.retry import DEFAULT_RATE_LIMIT_WAIT_SECONDS, rate_limit_wait

        asked = rate_limit_wait(response, clock=clock, default=None)
        details["retry_after"] = DEFAULT_RATE_LIMIT_WAIT_SECONDS if asked is None else asked
        if asked is None:  # a bare 429: snowkit's own guess, not a limit the instance set
            details["retry_after_default"] = True
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


_HIBERNATION_MARKERS = re.compile(
    rb"hibernat|instance is (?:sleeping|waking)|wake (?:up )?your instance", re.IGNORECASE
)


def is_hibernation_page(response: Any) -> bool:
    """True when ``response`` is a sleeping developer instance's HTML page, not an API answer.

    Judged by the page text, not the status alone: an SSO, proxy or maintenance page is HTML
    too and needs different advice.
    """
    content_type = (_header(response, "Content-Type") or "").lower()
    if "html" not in content_type:
        return False
    content = getattr(response, "content", None)
    if not isinstance(content, bytes | bytearray):
        content = str(getattr(response, "text", "") or "").encode("utf-8", "replace")
    return bool(_HIBERNATION_MARKERS.search(content[:65536]))


def request_was_sent(exc: BaseException) -> bool:
    """False only when the failure provably happened before the request left (connect phase).

    This decides whether a failed POST/PATCH is an ambiguous write: a refused or timed-out
    *connection* sent nothing; a reset, a dropped connection, a read timeout or anything we
    cannot place may have happened after the server received (and committed) the request, so
    the cautious answer for the unknown is "sent".
    """
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return False
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
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
        if isinstance(item, ConnectionRefusedError):
            return False
        if isinstance(item, BaseException):
            stack.extend([item.__cause__, item.__context__, getattr(item, "reason", None)])
            stack.extend(a for a in item.args if isinstance(a, BaseException))
    return True


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


def authorization_guidance(role: str | None) -> str:
    role_text = f"the '{role}' role" if role else "a role that can read and write the CMDB tables"
    return (
        "The credentials work but the user is not allowed to do this (HTTP 403). Ask a "
        f"ServiceNow admin to grant {role_text} (typically itil, or cmdb_read + cmdb_write, and "
        "snc_platform_rest_api_access where REST access is restricted) to the integration user."
    )


def authentication_guidance(auth_method: str) -> str:
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


__all__ = ["authentication_guidance", "authorization_guidance", "classify", "classify_response"]
