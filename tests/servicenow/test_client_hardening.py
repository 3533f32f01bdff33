"""Hostile or unusual answers over real HTTP (canned servers on 127.0.0.1): redirects, odd
headers, short or stuck pages, empty 2xx answers, and what each must never turn into."""

from __future__ import annotations

from typing import Any

import pytest

from snowkit.credentials import CredentialManager
from snowkit.ops.errors import AmbiguousWriteError, ErrorHandler, OperationalError
from snowkit.servicenow import ServiceNowAPIClient
from tests.helpers.http import CannedResponse, canned_server

from .conftest import FakeSleep

TABLE_PATH = "/api/now/table/cmdb_ci"


def make_client(url: str, credentials: Any = None, **kwargs: Any) -> ServiceNowAPIClient:
    """A client on a canned server with no real sleeps and no errors.jsonl."""
    kwargs.setdefault("sleep", FakeSleep())
    kwargs.setdefault("error_handler", ErrorHandler(persist=False))
    creds = credentials or CredentialManager.static(basic=("admin", "pw"))
    return ServiceNowAPIClient(url, creds, **kwargs)


def sent(server: Any, method: str | None = None) -> list[dict[str, Any]]:
    return [r for r in server.received if method is None or r["method"] == method]


# ---------------------------------------------------------------------------------- redirects
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_and_names_where_it_pointed(status: int) -> None:
    with canned_server() as other, canned_server() as inst:
        other.route("/steal", CannedResponse(body={"result": []}))
        elsewhere = other.url.replace("127.0.0.1", "localhost") + "/steal?token=abc"
        redirect = CannedResponse(status=status, headers={"Location": elsewhere}, body=b"")
        inst.route(TABLE_PATH, redirect)
        creds = CredentialManager.static(api_key="SECRET-API-KEY-123")
        with make_client(inst.url, creds) as client:
            with pytest.raises(OperationalError) as read:
                list(client.query("cmdb_ci", page_size=10))
            with pytest.raises(OperationalError) as write:
                client.create("cmdb_ci", {"name": "x"}, source_id="sw-1")
    assert other.received == []  # neither the key nor the write went anywhere else
    assert len(sent(inst)) == 2  # a refusal is not retried
    for info in (read, write):
        assert not isinstance(info.value, AmbiguousWriteError)
        message = str(info.value)
        assert f"localhost:{other.url.rsplit(':', 1)[1]}/steal" in message
        assert "token=abc" not in message and "SECRET-API-KEY" not in message
        assert "final URL" in info.value.context.guidance
        assert info.value.context.http_status == status


# ---------------------------------------------------------------------- rate-limit headers
@pytest.mark.parametrize("reset", ["1e400", "inf", "-Infinity", "nan", "soon"])
def test_strange_rate_limit_headers_never_fail_a_successful_write(reset: str) -> None:
    headers = {
        "Content-Type": "application/json",
        "X-RateLimit-Limit": "1000",
        "X-RateLimit-Reset": reset,
        "X-RateLimit-Remaining": reset,
    }
    record = {"sys_id": "a" * 32, "name": "x"}
    with canned_server() as srv:
        srv.route(TABLE_PATH, CannedResponse(status=201, headers=headers, body={"result": record}))
        with make_client(srv.url) as client:
            assert client.create("cmdb_ci", {"name": "x"}, source_id="sw-1") == record
            assert client.pacer.remaining == 999  # the valid Limit header still counts
            assert client.pacer.delay() == 0.0
            assert client.circuit_breaker.failure_count == 0
    assert len(sent(srv, "POST")) == 1


def test_a_failing_observer_does_not_turn_a_success_into_an_error() -> None:
    record = {"sys_id": "a" * 32, "name": "x"}
    with canned_server() as srv:
        srv.route(TABLE_PATH, CannedResponse(status=201, body={"result": record}))
        with make_client(srv.url) as client:

            def broken(*args: object) -> None:
                raise RuntimeError("observer bug")

            client.pacer.observe = broken  # type: ignore[method-assign]
            client.metrics.record_request = broken  # type: ignore[method-assign]
            assert client.create("cmdb_ci", {"name": "x"}, source_id="sw-1") == record
    assert len(sent(srv, "POST")) == 1
