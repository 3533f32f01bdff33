"""From a failed exchange to the ``OperationalError`` the caller sees (and the retry layer reads).

Most HTTP answers are classified by ``ErrorHandler.handle_servicenow_error`` (ops); what is
specific to this client is decided here, in one place:

- a write (POST/PATCH) whose outcome is unknown becomes an :class:`AmbiguousWriteError` with
  the table and the caller's source key, never a retryable error (see ``client``'s docstring
  for why a 5xx on a write counts as unknown);
- a network failure says whether the request left (``request_sent``) and, for TLS, which
  setting fixes it;
- an HTML page where JSON was promised is the hibernation page or something in between
  (SSO, proxy, maintenance), each with what to do.

Every error context is recorded with the error handler (``errors.jsonl``) and redacted by it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import requests

from snowkit.ops.classify import is_hibernation_page, request_was_sent
from snowkit.ops.errors import (
    AmbiguousWriteError,
    ConfigurationError,
    ErrorCategory,
    ErrorContext,
    ErrorHandler,
    ErrorSeverity,
    HibernatingInstanceError,
    NetworkError,
    OperationalError,
    TransientServerError,
    make_context,
)
from snowkit.ops.logging import StructuredLogger
from snowkit.servicenow.batch import BatchResult
from snowkit.servicenow.hibernation import GUIDANCE as HIBERNATION_GUIDANCE
from snowkit.servicenow.transport import display_url

if TYPE_CHECKING:
    from snowkit.servicenow.pipeline import RequestSpec

TLS_HINT = "TLS verification failed: set servicenow.ca_bundle or REQUESTS_CA_BUNDLE"
HTML_GUIDANCE = (
    "Something between snowkit and the instance (an SSO login page, a proxy, a maintenance "
    "page) answered instead of the REST API. Check the instance URL and proxy settings."
)


class FailureMapper:
    """Turns failed exchanges into recorded, logged ``OperationalError``s for one client."""

    def __init__(
        self,
        *,
        instance_url: str,
        error_handler: ErrorHandler,
        logger: StructuredLogger,
        retry_write_statuses: frozenset[int],
    ) -> None:
        self.instance_url = instance_url
        self.error_handler = error_handler
        self.logger = logger
        self.retry_write_statuses = retry_write_statuses

    def network(
        self, spec: RequestSpec, exc: requests.RequestException, attempt: int
    ) -> OperationalError:
        """No HTTP answer: a retryable network error, or an ambiguous write if it was sent."""
        sent = request_was_sent(exc)
        if sent and not spec.idempotent:
            return self.ambiguous(spec, f"no answer arrived ({type(exc).__name__})", None)
        tls = isinstance(exc, requests.exceptions.SSLError)
        details: dict[str, Any] = {
            "method": spec.method,
            "table": spec.table,
            "request_sent": sent,
            "attempt": attempt,
            "exception_type": type(exc).__name__,
        }
        if tls:
            details["hint"] = TLS_HINT
        ctx = make_context(
            f"{spec.target} failed: {type(exc).__name__}: {exc}",
            operation=spec.operation,
            category=ErrorCategory.NETWORK,
            severity=ErrorSeverity.HIGH if tls else ErrorSeverity.MEDIUM,
            retryable=not tls,
            details=details,
        )
        self.error_handler.record(ctx)
        return NetworkError(ctx)

    def ambiguous(self, spec: RequestSpec, why: str, status: int | None) -> AmbiguousWriteError:
        """A write that may or may not have been applied: tell the caller how to find out."""
        key = spec.source_id or "(none given)"
        ctx = make_context(
            f"{spec.target} for source key {key!r}: {why}. The write may or may not have been "
            "applied; snowkit did not resend it.",
            operation=spec.operation,
            category=ErrorCategory.AMBIGUOUS_WRITE,
            severity=ErrorSeverity.HIGH,
            retryable=False,
            http_status=status,
            details={"method": spec.method, "table": spec.table, "source_id": spec.source_id},
            guidance=(
                f"Look the record up in {spec.table or 'the table'} by its source key {key!r} "
                "(the field your load keeps it in, e.g. serial_number or correlation_id) before "
                "retrying: create it only if it is missing, compare it if it is there."
            ),
        )
        self.error_handler.record(ctx)
        self.logger.log_error(ctx)
        return AmbiguousWriteError(ctx)

    def response(self, spec: RequestSpec, response: requests.Response) -> OperationalError:
        """An HTTP error answer (>= 300 and not expected by the call)."""
        status = response.status_code
        if (
            status >= 500
            and not spec.idempotent
            and status not in self.retry_write_statuses
            and not is_hibernation_page(response)
        ):
            return self.ambiguous(spec, f"the instance answered HTTP {status}", status)
        ctx = self.error_handler.handle_servicenow_error(response, spec.operation)
        if spec.table and "table" not in ctx.details:
            ctx.details["table"] = spec.table
        if ctx.category is ErrorCategory.HIBERNATING:
            ctx.guidance = HIBERNATION_GUIDANCE
        if status >= 500 and not spec.idempotent and status in self.retry_write_statuses:
            ctx.retryable = True
        try:
            self.error_handler.raise_for(ctx)
        except OperationalError as exc:
            if ctx.severity in (ErrorSeverity.HIGH, ErrorSeverity.CRITICAL):
                self.logger.log_error(ctx)
            return exc
        raise AssertionError("raise_for returned")  # pragma: no cover

    def redirect(self, spec: RequestSpec, response: requests.Response) -> ConfigurationError:
        """A 3xx answer: never followed, so the request did not reach the REST API.

        Following it would re-send ``x-sn-apikey`` (requests only strips ``Authorization``) to
        whatever host the Location names, and turn a POST answered 302/303 into a GET that
        "succeeds" with nothing written. Nothing ran at the instance, so for a write this is a
        refusal, not an ambiguous outcome. The Location is shown without query or user info.
        """
        status = response.status_code
        location = response.headers.get("Location")
        target = display_url(urljoin(spec.url, location)) if location else "(no Location header)"
        ctx = make_context(
            f"{spec.target}: {self.instance_url} answered HTTP {status} redirecting to "
            f"{target}; snowkit does not follow redirects, so nothing was sent there and "
            "nothing was applied",
            operation=spec.operation,
            category=ErrorCategory.CONFIGURATION,
            severity=ErrorSeverity.HIGH,
            http_status=status,
            details={"method": spec.method, "table": spec.table, "location": target},
            guidance=(
                "Configure the instance's final URL (SERVICENOW_INSTANCE or "
                "servicenow.instance), e.g. the https:// host the redirect points to if you "
                "trust it; a redirect away from the instance can also mean an SSO or proxy "
                "page is in the way."
            ),
        )
        self.error_handler.record(ctx)
        self.logger.log_error(ctx)
        return ConfigurationError(ctx)

    def no_body(self, spec: RequestSpec, response: requests.Response) -> OperationalError:
        """A 2xx without the JSON member the call expects (``spec.expect``).

        A real instance answers HTTP 202 with no content when too many requests queue on one
        session, and a proxy may send an empty 200: neither says what happened. A read is
        retried; a write may or may not have been applied, so it is ambiguous, never an empty
        success (a batch of writes comes back with every item ambiguous).
        """
        status = response.status_code
        why = f"the instance answered HTTP {status} without a {spec.expect!r} in its body"
        if not spec.idempotent:
            return self.ambiguous(spec, why, status)
        ctx = make_context(
            f"{spec.target}: {why}; this is not an empty result",
            operation=spec.operation,
            category=ErrorCategory.SERVICENOW_API,
            severity=ErrorSeverity.MEDIUM,
            retryable=True,
            http_status=status,
            details={"method": spec.method, "table": spec.table},
            guidance=(
                "The instance queued the request and dropped it (HTTP 202: too many requests at "
                "once) or something in between answered for it; snowkit retries reads. If it "
                "keeps happening, lower servicenow.workers."
            ),
        )
        self.error_handler.record(ctx)
        return TransientServerError(ctx)

    def html(self, spec: RequestSpec, response: requests.Response) -> OperationalError:
        """A 2xx HTML page where JSON was promised: hibernation, or something in between."""
        hibernating = is_hibernation_page(response)
        ctx = make_context(
            f"{self.instance_url} answered {spec.operation} with "
            + ("its hibernation page" if hibernating else "an HTML page instead of JSON"),
            operation=spec.operation,
            category=ErrorCategory.HIBERNATING if hibernating else ErrorCategory.SERVICENOW_API,
            severity=ErrorSeverity.CRITICAL if hibernating else ErrorSeverity.HIGH,
            http_status=response.status_code,
            guidance=HIBERNATION_GUIDANCE if hibernating else HTML_GUIDANCE,
        )
        self.error_handler.record(ctx)
        return HibernatingInstanceError(ctx) if hibernating else OperationalError(ctx)

    def batch_item(self, result: BatchResult) -> ErrorContext:
        """Classify one failed Batch API item as if it had been answered on its own."""
        answer = requests.Response()
        answer.status_code = result.status_code or 0
        answer._content = result.raw_body
        answer.headers.update(result.headers)
        answer.headers.setdefault("Content-Type", "application/json")
        answer.url = self.instance_url + result.request.url
        return self.error_handler.handle_servicenow_error(answer, f"batch {result.request.method}")
