"""Hostile or unusual answers over real HTTP (canned servers on 127.0.0.1): redirects, odd
headers, short or stuck pages, empty 2xx answers, and what each must never turn into."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from snowkit.credentials import CredentialManager
from snowkit.ops.errors import (
    AmbiguousWriteError,
    AuthenticationError,
    DeadlineExceededError,
    ErrorHandler,
    OperationalError,
    RecordNotFoundError,
)
from snowkit.servicenow import BatchRequest, ServiceNowAPIClient
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


# ------------------------------------------------------------------------------------ paging
ROWS = [{"sys_id": f"{i:032x}", "name": f"ci{i}"} for i in range(1, 31)]


def list_instance(
    hidden: set[str] = frozenset(), *, count: bool = True, honour_cursor: bool = True
) -> Callable[[dict[str, Any]], CannedResponse]:
    """A Table API list endpoint like a real instance's: ``sysparm_limit`` cuts the window
    before ACLs hide ``hidden`` rows; ``X-Total-Count`` counts every row the query matches."""

    def answer(request: dict[str, Any]) -> CannedResponse:
        params = parse_qs(urlsplit(request["path"]).query)
        query = params.get("sysparm_query", [""])[0]
        limit = int(params.get("sysparm_limit", ["10000"])[0])
        offset = int(params.get("sysparm_offset", ["0"])[0])
        after = next((p[7:] for p in query.split("^") if p.startswith("sys_id>")), "")
        matched = [r for r in ROWS if not honour_cursor or r["sys_id"] > after]
        window = matched[offset : offset + limit]
        headers = {"Content-Type": "application/json"}
        if count:
            headers["X-Total-Count"] = str(len(matched))
        visible = [r for r in window if r["sys_id"] not in hidden]
        return CannedResponse(headers=headers, body={"result": visible})

    return answer


@pytest.mark.parametrize("paging", ["keyset", "offset"])
def test_a_page_cut_short_by_an_acl_does_not_end_the_scan(paging: str) -> None:
    hidden = {ROWS[4]["sys_id"], ROWS[29]["sys_id"]}
    with canned_server() as srv:
        srv.route(TABLE_PATH, list_instance(hidden))
        with make_client(srv.url) as client:
            got = list(client.query("cmdb_ci", fields=["name"], page_size=10, paging=paging))
    assert [r["sys_id"] for r in got] == [r["sys_id"] for r in ROWS if r["sys_id"] not in hidden]
    assert len(sent(srv)) <= 4  # three windows and, at most, one empty page


@pytest.mark.parametrize("paging", ["keyset", "offset"])
def test_a_whole_page_hidden_by_acls_is_stepped_over(paging: str) -> None:
    """An empty page ended the scan although the count said 25 rows still matched."""
    hidden = {r["sys_id"] for r in ROWS[4:14]}  # ten in a row: two whole windows of five
    with canned_server() as srv:
        srv.route(TABLE_PATH, list_instance(hidden))
        with make_client(srv.url) as client:
            got = list(client.query("cmdb_ci", fields=["name"], page_size=5, paging=paging))
    assert [r["sys_id"] for r in got] == [r["sys_id"] for r in ROWS if r["sys_id"] not in hidden]
    assert len(sent(srv)) <= 8  # six windows, and the two stepped over


def test_an_empty_page_the_count_agrees_with_ends_the_scan() -> None:
    hidden = {r["sys_id"] for r in ROWS[25:]}  # the last window: nothing visible after it
    with canned_server() as srv:
        srv.route(TABLE_PATH, list_instance(hidden))
        with make_client(srv.url) as client:
            got = list(client.query("cmdb_ci", fields=["name"], page_size=5))
    assert len(got) == 25 and len(sent(srv)) == 6


def test_without_a_count_a_short_page_is_followed_by_an_empty_one() -> None:
    hidden = {ROWS[4]["sys_id"]}
    with canned_server() as srv:
        srv.route(TABLE_PATH, list_instance(hidden, count=False))
        with make_client(srv.url) as client:
            got = list(client.query("cmdb_ci", fields=["name"], page_size=10))
    assert len(got) == 29 and len(sent(srv)) == 4
    assert all("sysparm_no_count" not in r["path"] for r in sent(srv))  # the count is asked for


def test_the_count_ends_a_scan_without_an_extra_request() -> None:
    with canned_server() as srv:
        srv.route(TABLE_PATH, list_instance())
        with make_client(srv.url) as client:
            assert len(list(client.query("cmdb_ci", page_size=30))) == 30  # a full last page
            assert len(list(client.query("cmdb_ci", page_size=50))) == 30  # a short one
    assert len(sent(srv)) == 2


@pytest.mark.parametrize("paging", ["keyset", "offset"])
def test_a_server_that_ignores_the_cursor_stops_the_scan_at_the_second_request(
    paging: str,
) -> None:
    with canned_server() as srv:
        srv.route(TABLE_PATH, CannedResponse(body={"result": ROWS[:3]}))
        with make_client(srv.url) as client, pytest.raises(OperationalError) as info:
            list(itertools.islice(client.query("cmdb_ci", page_size=3, paging=paging), 100))
    assert len(sent(srv)) == 2
    assert "no progress" in str(info.value) and "cmdb_ci" in str(info.value)
    assert info.value.context.guidance


# ------------------------------------------------------------------ sessions and empty 2xx
def test_the_client_keeps_no_cookies() -> None:
    cookie = {"Content-Type": "application/json", "Set-Cookie": "JSESSIONID=ABC123; Path=/"}
    with canned_server() as srv:
        srv.route(TABLE_PATH, CannedResponse(headers=cookie, body={"result": []}))
        with make_client(srv.url) as client:
            for _ in range(3):
                assert list(client.query("cmdb_ci")) == []
    assert [r["headers"].get("Cookie") for r in sent(srv)] == [None, None, None]


def queued_then(answer: CannedResponse, *, queued: int = 1) -> Callable[..., CannedResponse]:
    """HTTP 202 with no content for the first ``queued`` requests (a real instance's answer
    when too many requests queue on one session), then ``answer``."""
    calls: list[int] = []

    def respond(request: dict[str, Any]) -> CannedResponse:
        calls.append(1)
        return CannedResponse(status=202, body=b"") if len(calls) <= queued else answer

    return respond


@pytest.mark.parametrize("empty", [b"", b"{}"])
def test_a_2xx_without_a_result_is_retried_for_a_read_not_read_as_empty(empty: bytes) -> None:
    headers = {"Content-Type": "application/json", "X-Total-Count": "2"}
    answer = CannedResponse(headers=headers, body={"result": ROWS[:2]})
    with canned_server() as srv:
        calls: list[int] = []

        def respond(request: dict[str, Any]) -> CannedResponse:
            calls.append(1)
            return CannedResponse(status=200, body=empty) if len(calls) == 1 else answer

        srv.route(TABLE_PATH, respond)
        with make_client(srv.url) as client:
            assert len(list(client.query("cmdb_ci"))) == 2
    assert len(sent(srv)) == 2


def test_a_202_on_a_write_is_ambiguous_and_not_resent() -> None:
    created = CannedResponse(status=201, body={"result": {"sys_id": "a" * 32}})
    with canned_server() as srv:
        srv.route(TABLE_PATH, queued_then(created))
        with make_client(srv.url) as client, pytest.raises(AmbiguousWriteError) as info:
            client.create("cmdb_ci", {"name": "x"}, source_id="sw-1")
    assert len(sent(srv)) == 1 and "sw-1" in str(info.value)


def test_a_202_on_a_batch_of_writes_makes_every_item_ambiguous() -> None:
    with canned_server() as srv:
        srv.route("/api/now/v1/batch", queued_then(CannedResponse(body={}), queued=9))
        with make_client(srv.url) as client:
            results = client.batch(
                [BatchRequest("POST", TABLE_PATH, {"name": f"ci{i}"}) for i in range(3)]
            )
    assert len(sent(srv)) == 1
    assert all(not r.ok and r.ambiguous for r in results)


# ------------------------------------------------------------------------ DELETE and 404s
SYS_ID = "0" * 31 + "1"


def first_then_404(first: CannedResponse) -> Callable[..., CannedResponse]:
    calls: list[int] = []

    def respond(request: dict[str, Any]) -> CannedResponse:
        calls.append(1)
        if len(calls) == 1:
            return first
        return CannedResponse(status=404, body={"error": {"message": "No Record found"}})

    return respond


def test_a_404_after_a_429_means_the_record_was_never_there() -> None:
    throttled = CannedResponse(
        status=429,
        headers={"Content-Type": "application/json", "Retry-After": "0"},
        body={"error": {"message": "Too many requests"}, "status": "failure"},
    )
    with canned_server() as srv:
        srv.route(f"{TABLE_PATH}/{SYS_ID}", first_then_404(throttled))
        with make_client(srv.url) as client, pytest.raises(RecordNotFoundError):
            client.delete("cmdb_ci", SYS_ID)
    assert len(sent(srv, "DELETE")) == 2


def test_a_404_after_a_5xx_means_the_delete_was_done() -> None:
    failed = CannedResponse(status=503, body={"error": {"message": "busy"}})
    with canned_server() as srv:
        srv.route(f"{TABLE_PATH}/{SYS_ID}", first_then_404(failed))
        with make_client(srv.url) as client:
            assert client.delete("cmdb_ci", SYS_ID) is None
    assert len(sent(srv, "DELETE")) == 2


# ------------------------------------------------------------------ credentials in headers
@pytest.mark.parametrize(
    ("credentials", "method"),
    [
        (CredentialManager.static(api_key="S3CRET-KEY-77\n"), "api_key"),
        (CredentialManager.static(api_key="S3CRET-KEY-99\r"), "api_key"),
        (CredentialManager.static(oauth="S3CRET-TOKEN\r\nX-Evil: 1"), "oauth"),
    ],
)
def test_a_credential_with_a_line_break_is_refused_by_name_never_by_value(
    credentials: CredentialManager, method: str
) -> None:
    handler = ErrorHandler(persist=False)
    with canned_server() as srv:
        srv.route(TABLE_PATH, CannedResponse(body={"result": []}))
        with make_client(srv.url, credentials, error_handler=handler) as client:
            with pytest.raises(AuthenticationError) as info:
                list(client.query("cmdb_ci"))
            assert client.circuit_breaker.failure_count == 0
    assert sent(srv) == []
    shown = str(info.value) + repr(info.value.context.to_dict())
    assert method in str(info.value) and "S3CRET" not in shown


# ------------------------------------------------------------------------------- deadlines
def test_attempts_are_cut_to_the_time_left_of_the_deadline() -> None:
    config = SimpleNamespace(
        servicenow=SimpleNamespace(read_timeout=10.0, connect_timeout=10.0),
        retry=SimpleNamespace(
            max_attempts=5, base_delay_seconds=0.0, max_delay_seconds=0.0, deadline_seconds=0.4
        ),
    )
    with canned_server() as srv:
        srv.route(TABLE_PATH, CannedResponse(body={"result": []}, delay=3.0))
        with make_client(srv.url, config=config) as client:
            started = time.monotonic()
            with pytest.raises(DeadlineExceededError) as info:
                list(client.query("cmdb_ci"))
            elapsed = time.monotonic() - started
    assert elapsed < 2.0  # not the 10 s read timeout (nor 15 s on the retry)
    assert "0.4 s deadline is spent" in str(info.value)
    assert "deadline_seconds" in info.value.context.guidance
    assert "server error" not in info.value.context.guidance


# ---------------------------------------------------------------------------------- count()
@pytest.mark.parametrize("total", ["many", "1e3", "-4", "12.5", ""])
def test_a_count_header_that_is_not_a_count_is_an_error_with_guidance(total: str) -> None:
    headers = {"Content-Type": "application/json", "X-Total-Count": total}
    with canned_server() as srv:
        srv.route(TABLE_PATH, CannedResponse(headers=headers, body={"result": []}))
        with make_client(srv.url) as client, pytest.raises(OperationalError) as info:
            client.count("cmdb_ci")
    assert "cmdb_ci" in str(info.value) and "X-Total-Count" in info.value.context.guidance


# --------------------------------------------------------------------------------- metrics
def test_retries_and_429s_are_credited_to_their_own_table() -> None:
    throttled = CannedResponse(
        status=429,
        headers={"Content-Type": "application/json", "Retry-After": "0"},
        body={"error": {"message": "Too Many Requests"}},
    )
    count = {"Content-Type": "application/json", "X-Total-Count": "1"}
    zulu_calls: list[int] = []

    def zulu(request: dict[str, Any]) -> CannedResponse:
        zulu_calls.append(1)
        ok = CannedResponse(headers=count, body={"result": [{"sys_id": "b" * 32}]})
        return throttled if len(zulu_calls) <= 2 else ok

    with canned_server() as srv:
        alpha = CannedResponse(headers=count, body={"result": [{"sys_id": "a" * 32}]})
        srv.route("/api/now/table/alpha_table", alpha)
        srv.route("/api/now/table/zulu_table", zulu)
        with make_client(srv.url) as client:
            list(client.query("alpha_table"))
            list(client.query("zulu_table"))
            stats = {m.table: m for m in client.metrics.all_operation_metrics()}
    assert (stats["alpha_table"].retries, stats["alpha_table"].rate_limited) == (0, 0)
    assert (stats["zulu_table"].retries, stats["zulu_table"].rate_limited) == (2, 2)


class TupleBasic:
    """An auth method in requests' shorthand: ``session.auth = (user, password)``."""

    name = "basic"

    def __init__(self, password: str) -> None:
        self.password = password

    def apply(self, session: Any, instance_url: str | None = None) -> None:
        session.auth = ("admin", self.password)


def test_an_auth_method_may_set_a_user_and_password_pair() -> None:
    """The header check wrapped the pair as if it were callable: a raw TypeError."""
    from .conftest import StaticCredentials

    with canned_server() as srv:
        srv.route(TABLE_PATH, CannedResponse(body={"result": []}))
        with make_client(srv.url, StaticCredentials([TupleBasic("s3cret")])) as client:
            assert list(client.query("cmdb_ci")) == []
    assert sent(srv)[0]["headers"]["Authorization"] == "Basic YWRtaW46czNjcmV0"


def test_a_window_closed_beyond_the_wait_cap_opens_the_breaker_until_it_resets() -> None:
    """Every worker had sent its own request into the closed window, each met by a 429."""
    from snowkit.ops.breaker import CircuitOpenError
    from snowkit.ops.errors import RateLimitError

    closed = CannedResponse(status=429, headers={"Retry-After": "3600"},
                            body={"error": {"message": "Rate limit exceeded"}})  # fmt: skip
    with canned_server() as srv:
        srv.route(TABLE_PATH, closed)
        with make_client(srv.url) as client:
            with pytest.raises(RateLimitError):
                list(client.query("cmdb_ci"))
            with pytest.raises(CircuitOpenError):  # the next request is not sent
                list(client.query("cmdb_ci"))
            assert 3500 < client.circuit_breaker.seconds_until_trial() <= 3600
    assert len(sent(srv)) == 1
