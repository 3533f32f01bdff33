"""Error classification against real HTTP responses from a loopback server."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from snowkit import paths
from snowkit.ops.breaker import CircuitOpenError
from snowkit.ops.errors import (
    AmbiguousWriteError,
    AuthenticationError,
    AuthorizationError,
    ConfigurationError,
    ErrorCategory,
    ErrorContext,
    ErrorHandler,
    ErrorSeverity,
    HibernatingInstanceError,
    InvalidTableError,
    NetworkError,
    OperationalError,
    RateLimitError,
    RecordNotFoundError,
    TransientServerError,
)

from .conftest import CannedResponse, CannedServer


def envelope(message: str, detail: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "detail": detail}, "status": "failure"}


def get(server: CannedServer, path: str, response: CannedResponse, method: str = "GET"):
    url = server.route(path, response)
    return requests.request(method, url, timeout=5)


@pytest.fixture
def handler(tmp_path: Path) -> ErrorHandler:
    return ErrorHandler(errors_path=tmp_path / "errors.jsonl")


def test_envelope_and_transaction_id_are_parsed(canned_server, handler) -> None:
    resp = get(
        canned_server,
        "/api/now/table/cmdb_ci_x",
        CannedResponse(
            400,
            {"Content-Type": "application/json", "X-Transaction-ID": "abc123"},
            envelope("Invalid table cmdb_ci_x", None),
        ),
    )
    ctx = handler.handle_servicenow_error(resp, "query cmdb_ci_x")
    assert ctx.category is ErrorCategory.INVALID_TABLE
    assert ctx.http_status == 400 and not ctx.retryable
    assert ctx.details["transaction_id"] == "abc123"
    assert ctx.details["servicenow_message"] == "Invalid table cmdb_ci_x"
    assert ctx.details["status"] == "failure"
    assert ctx.details["table_name"] == "cmdb_ci_x"
    assert "Invalid table" in ctx.error_message
    with pytest.raises(InvalidTableError):
        handler.raise_for(ctx)


@pytest.mark.parametrize(
    ("status", "body", "category", "retryable", "exc_type"),
    [
        (
            401,
            envelope("User Not Authenticated", "Required to provide Auth information"),
            ErrorCategory.AUTHENTICATION,
            False,
            AuthenticationError,
        ),
        (
            403,
            envelope("Operation Failed", "ACL Exception Insert Failed due to security constraints"),
            ErrorCategory.AUTHENTICATION,
            False,
            AuthorizationError,
        ),
        (
            404,
            envelope(
                "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
            ),
            ErrorCategory.NOT_FOUND,
            False,
            RecordNotFoundError,
        ),
        (500, envelope("Internal error"), ErrorCategory.SERVICENOW_API, True, TransientServerError),
        (503, "<<not json>>", ErrorCategory.SERVICENOW_API, True, TransientServerError),
        (422, envelope("Invalid field"), ErrorCategory.DATA_VALIDATION, False, OperationalError),
    ],
)
def test_status_classification(canned_server, handler, status, body, category, retryable, exc_type):
    resp = get(canned_server, f"/s{status}", CannedResponse(status, body=body))
    ctx = handler.handle_servicenow_error(resp, "op")
    assert ctx.category is category
    assert ctx.retryable is retryable
    assert ctx.guidance
    with pytest.raises(exc_type) as info:
        handler.raise_for(ctx)
    assert type(info.value) is exc_type
    assert info.value.context is ctx


def test_unauthorized_guidance_follows_the_auth_method(canned_server, handler) -> None:
    url = canned_server.route("/u", CannedResponse(401, body=envelope("User Not Authenticated")))
    resp = requests.get(url, headers={"x-sn-apikey": "k-123456"}, timeout=5)
    ctx = handler.handle_servicenow_error(resp, "get")
    assert ctx.details["auth_method"] == "api_key" and "SERVICENOW_API_KEY" in ctx.guidance
    resp = requests.get(url, auth=("u", "p"), timeout=5)
    ctx = handler.handle_servicenow_error(resp, "get")
    assert ctx.details["auth_method"] == "basic" and "SERVICENOW_PASSWORD" in ctx.guidance


def test_forbidden_names_the_missing_role(canned_server, handler) -> None:
    resp = get(
        canned_server, "/f", CannedResponse(403, body=envelope("Forbidden", "requires role itil"))
    )
    ctx = handler.handle_servicenow_error(resp, "create")
    assert ctx.details["missing_role"] == "itil"
    assert "itil" in ctx.guidance and "403" in ctx.guidance


def test_rate_limit_reads_retry_after_and_headers(canned_server, handler) -> None:
    headers = {
        "Content-Type": "application/json",
        "Retry-After": "17",
        "X-RateLimit-Limit": "1000",
        "X-RateLimit-Reset": "1767229200",
    }
    resp = get(canned_server, "/r", CannedResponse(429, headers, envelope("Too Many Requests")))
    ctx = handler.handle_servicenow_error(resp, "query")
    assert ctx.category is ErrorCategory.RATE_LIMIT and ctx.retryable
    assert ctx.details["retry_after"] == 17.0
    assert ctx.details["x_ratelimit_limit"] == "1000"
    with pytest.raises(RateLimitError) as info:
        handler.raise_for(ctx)
    assert info.value.retry_after == 17.0


def test_hibernating_instance_html_page(canned_server, handler) -> None:
    page = "<html><body>Your instance is hibernating. Sign in to wake it.</body></html>"
    resp = get(canned_server, "/h", CannedResponse(200, {"Content-Type": "text/html"}, page))
    ctx = handler.handle_servicenow_error(resp, "ping")
    assert ctx.category is ErrorCategory.HIBERNATING
    assert "developer.servicenow.com" in ctx.guidance
    with pytest.raises(HibernatingInstanceError):
        handler.raise_for(ctx)


def test_an_sso_page_is_not_mistaken_for_hibernation(canned_server, handler) -> None:
    page = "<html><body>Sign in with your company account</body></html>"
    resp = get(canned_server, "/sso", CannedResponse(200, {"Content-Type": "text/html"}, page))
    ctx = handler.handle_servicenow_error(resp, "ping")
    assert ctx.category is not ErrorCategory.HIBERNATING


def test_an_unplaceable_connection_error_on_a_write_is_ambiguous() -> None:
    # Nothing says the request never left: a POST must not be blindly re-sent.
    exc = requests.exceptions.ConnectionError("something else")
    ctx = ErrorHandler(persist=False).classify_exception(exc, "create cmdb_ci", "POST")
    assert ctx.category is ErrorCategory.AMBIGUOUS_WRITE
    assert ctx.retryable is False


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_is_retryable_network(handler) -> None:
    with pytest.raises(requests.ConnectionError) as info:
        requests.post(f"http://127.0.0.1:{_closed_port()}/x", timeout=2)
    ctx = handler.classify_exception(info.value, "create", "POST")
    assert ctx.category is ErrorCategory.NETWORK and ctx.retryable
    assert ctx.details["request_sent"] is False


@pytest.mark.parametrize(
    ("method", "category", "retryable"),
    [
        ("POST", ErrorCategory.AMBIGUOUS_WRITE, False),
        ("PATCH", ErrorCategory.AMBIGUOUS_WRITE, False),
        ("GET", ErrorCategory.NETWORK, True),
        ("PUT", ErrorCategory.NETWORK, True),
        ("DELETE", ErrorCategory.NETWORK, True),
    ],
)
def test_read_timeout_after_sending(canned_server, handler, method, category, retryable) -> None:
    url = canned_server.route("/slow", CannedResponse(200, delay=0.5))
    with pytest.raises(requests.ReadTimeout) as info:
        requests.request(method, url, json={"a": 1}, timeout=(2, 0.1))
    ctx = handler.classify_exception(info.value, "write", method)
    assert ctx.category is category and ctx.retryable is retryable


def test_connection_dropped_after_sending_a_post_is_ambiguous(canned_server, handler) -> None:
    url = canned_server.route("/drop", CannedResponse(drop=True))
    with pytest.raises(requests.ConnectionError) as info:
        requests.post(url, json={"name": "x"}, timeout=2)
    ctx = handler.classify_exception(info.value, "create", "POST")
    assert ctx.category is ErrorCategory.AMBIGUOUS_WRITE and not ctx.retryable
    with pytest.raises(AmbiguousWriteError):
        handler.raise_for(ctx)
    get_ctx = handler.classify_exception(info.value, "get", "GET")
    assert get_ctx.category is ErrorCategory.NETWORK and get_ctx.retryable


def test_operational_error_keeps_its_context(handler) -> None:
    err = NetworkError("boom", operation="x")
    assert handler.classify_exception(err, "y", "GET") is err.context


def test_capture_error_records_everything(handler, clean_secrets) -> None:
    clean_secrets.register("hunter2-hunter2")
    try:
        raise ValueError("mapping failed for hunter2-hunter2")
    except ValueError as exc:
        ctx = handler.capture_error(
            "transform",
            exc,
            ErrorCategory.TRANSFORMATION,
            ErrorSeverity.MEDIUM,
            input_data={"mac": "aa:bb", "password": "x", "note": "hunter2-hunter2"},
        )
    assert ctx.operation == "transform" and ctx.severity is ErrorSeverity.MEDIUM
    assert "ValueError" in ctx.stack_trace and "hunter2" not in ctx.stack_trace
    assert ctx.input_data == {"mac": "aa:bb", "password": "***", "note": "***"}
    info = ctx.environment_info
    assert {"python", "platform", "snowkit_version", "environment"} <= set(info)
    assert len(ctx.correlation_id) == 32
    record = json.loads(handler.errors_path.read_text().splitlines()[-1])
    assert set(record) >= {
        "operation",
        "category",
        "severity",
        "timestamp",
        "error_message",
        "stack_trace",
        "input_data",
        "environment_info",
        "correlation_id",
        "retryable",
        "http_status",
        "details",
    }
    assert datetime.fromisoformat(record["timestamp"]).tzinfo is not None


def test_correlation_id_comes_from_the_scope(handler) -> None:
    from snowkit.ops.logging import correlation_scope

    with correlation_scope("f" * 32):
        ctx = handler.capture_error("x", RuntimeError("y"))
    assert ctx.correlation_id == "f" * 32


@pytest.mark.parametrize(
    ("method", "names"),
    [
        ("api_key", ["SERVICENOW_API_KEY"]),
        ("oauth", ["SERVICENOW_OAUTH_TOKEN", "SERVICENOW_CLIENT_ID", "SERVICENOW_CLIENT_SECRET"]),
        ("basic", ["SERVICENOW_USERNAME", "SERVICENOW_PASSWORD", "op://"]),
        ("1password", ["op signin", "OP_SERVICE_ACCOUNT_TOKEN"]),
    ],
)
def test_authentication_guidance_names_what_to_set(handler, method, names) -> None:
    ctx = handler.handle_authentication_error(method, "401 from instance")
    assert ctx.category is ErrorCategory.AUTHENTICATION and not ctx.retryable
    assert ctx.details["method"] == method  # what the seed's recovery strategy reads
    for name in names:
        assert name in ctx.guidance


def test_authorization_guidance_names_role(handler) -> None:
    ctx = handler.handle_authentication_error(
        "basic", {"http_status": 403, "missing_role": "cmdb_write"}
    )
    assert "cmdb_write" in ctx.guidance
    with pytest.raises(AuthorizationError):
        handler.raise_for(ctx)


def test_aggregate_errors_in_time_window(tmp_path, wall_clock) -> None:
    handler = ErrorHandler(errors_path=tmp_path / "e.jsonl", clock=wall_clock)
    handler.capture_error("old", NetworkError("x"))
    wall_clock.advance(2 * 3600)
    handler.capture_error("get", NetworkError("x"))
    handler.capture_error("get", NetworkError("x"))
    handler.capture_error("create", AmbiguousWriteError("y"))
    agg = handler.aggregate_errors(time_window_minutes=60)
    assert agg["by_category"] == {"network": 2, "ambiguous_write": 1}
    assert agg["by_operation"] == {"get": 2, "create": 1}
    assert agg["by_severity"] == {"medium": 2, "high": 1}
    assert agg["total"]["errors"] == 3
    assert handler.aggregate_errors(time_window_minutes=180)["total"]["errors"] == 4
    assert len(handler.errors_path.read_text().splitlines()) == 4


def test_default_errors_path_and_bounded_memory() -> None:
    handler = ErrorHandler(max_contexts=5)
    for i in range(8):
        handler.capture_error(f"op{i}", RuntimeError("x"))
    assert handler.errors_path == paths.errors_path()
    assert len(handler.contexts) == 5
    assert len(paths.errors_path().read_text().splitlines()) == 8


def test_raise_for_other_categories(handler) -> None:
    def ctx(category: ErrorCategory) -> ErrorContext:
        return ErrorContext("o", category, ErrorSeverity.LOW, datetime.now(UTC), "m")

    with pytest.raises(ConfigurationError):
        handler.raise_for(ctx(ErrorCategory.CONFIGURATION))
    with pytest.raises(CircuitOpenError):
        handler.raise_for(ctx(ErrorCategory.CIRCUIT_OPEN))
    with pytest.raises(NetworkError):
        handler.raise_for(ctx(ErrorCategory.NETWORK))


def test_exception_message_carries_guidance_but_no_secret(clean_secrets) -> None:
    clean_secrets.register("tok-123456789")
    err = AuthenticationError("rejected token tok-123456789")
    assert "tok-123456789" not in str(err) and "What to do" in str(err)
    assert err.context.retryable is False and err.category is ErrorCategory.AUTHENTICATION


def test_package_exports_every_ops_name() -> None:
    import snowkit.ops as ops

    for name in ("ErrorHandler", "RetryManager", "CircuitBreaker", "configure_logging", "redact"):
        assert getattr(ops, name) is not None
    assert "MetricsCollector" in dir(ops) and "verify_audit" in ops.__all__
    with pytest.raises(AttributeError):
        _ = ops.NoSuchThing


def test_classify_uses_the_method_the_request_carried(canned_server) -> None:
    from snowkit.ops.errors import classify

    url = canned_server.route("/slow2", CannedResponse(200, delay=0.4))
    with pytest.raises(requests.ReadTimeout) as info:
        requests.patch(url, json={}, timeout=(2, 0.05))
    assert classify(info.value).category is ErrorCategory.AMBIGUOUS_WRITE
