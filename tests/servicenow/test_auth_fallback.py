"""The auth fallback chain API key → OAuth → basic, and what the user sees when all fail."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from snowkit import paths
from snowkit.credentials import ApiKeyAuth, BasicAuth, CredentialManager, OAuthAuth
from snowkit.ops.errors import AuthenticationError
from snowkit.sandbox import Sandbox
from snowkit.servicenow import ServiceNowAPIClient

from .conftest import StaticCredentials

BAD_KEY = "now_BADKEY_canary_5f1e"
BAD_TOKEN = "badtoken_canary_9a7c"
BAD_PASSWORD = "badpassword_canary_42"


def oauth(sb: Sandbox, password: str | None = None) -> OAuthAuth:
    return OAuthAuth(
        token_url=f"{sb.url}/oauth_token.do",
        client_id=sb.oauth_client.client_id,
        client_secret=sb.oauth_client.client_secret,
        username="admin",
        password=password or sb.users["admin"],
        verify=str(sb.ca_path),
    )


def make(sb: Sandbox, methods: list, **kw) -> ServiceNowAPIClient:
    return ServiceNowAPIClient(sb.url, StaticCredentials(methods), verify=str(sb.ca_path), **kw)


def test_good_api_key_is_used_first(sb: Sandbox) -> None:
    with make(sb, [ApiKeyAuth(sb.api_key), BasicAuth("admin", BAD_PASSWORD)]) as c:
        assert c.ping() > 0
        assert c.auth_method == "api_key"


def test_bad_api_key_falls_back_to_oauth(sb: Sandbox) -> None:
    with make(sb, [ApiKeyAuth(BAD_KEY), oauth(sb), BasicAuth("admin", BAD_PASSWORD)]) as c:
        assert c.ping() > 0
        assert c.auth_method == "oauth"


def test_bad_api_key_and_bad_oauth_fall_back_to_basic_and_a_write_happens_once(
    sb: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    creds = CredentialManager.static(
        api_key=BAD_KEY, oauth=BAD_TOKEN, basic=("admin", sb.users["admin"])
    )
    with ServiceNowAPIClient(sb.url, creds, verify=str(sb.ca_path)) as c:
        rec = c.create("incident", {"short_description": "after-fallback"})
        assert c.auth_method == "basic"
        assert c.count("incident", "short_description=after-fallback") == 1  # 401s ran nothing
        assert rec["sys_created_by"] == "admin"
    logged = capsys.readouterr().err
    assert '"event":"auth_fallback"' in logged
    assert '"method":"api_key","success":false' in logged
    assert '"method":"basic","success":true' in logged
    for secret in (BAD_KEY, BAD_TOKEN, sb.users["admin"]):
        assert secret not in logged


def test_all_rejected_gives_guidance_and_no_secret(
    sb: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    methods = [ApiKeyAuth(BAD_KEY), OAuthAuth(BAD_TOKEN), BasicAuth("admin", BAD_PASSWORD)]
    with make(sb, methods) as c, pytest.raises(AuthenticationError) as info:
        c.ping()
    text = str(info.value)
    assert "api_key, oauth, basic" in text
    assert "SERVICENOW_" in text  # says which variables to set
    for secret in (BAD_KEY, BAD_TOKEN, BAD_PASSWORD):
        assert secret not in text
        assert secret not in capsys.readouterr().err
    assert info.value.context.http_status == 401
    persisted = paths.errors_path().read_text()
    assert "authentication" in persisted
    for secret in (BAD_KEY, BAD_TOKEN, BAD_PASSWORD):
        assert secret not in persisted
        assert secret not in repr(c.__dict__)


def test_oauth_grant_that_fails_is_skipped(sb: Sandbox) -> None:
    with make(sb, [oauth(sb, password=BAD_PASSWORD), BasicAuth("admin", sb.users["admin"])]) as c:
        assert c.ping() > 0
        assert c.auth_method == "basic"


@pytest.fixture
def clocked(tmp_path) -> Iterator[tuple[Sandbox, list[float]]]:
    now = [5000.0]
    with Sandbox.start(state_dir=tmp_path, clock=lambda: now[0], token_lifetime_seconds=300) as sb:
        yield sb, now


def test_expired_oauth_token_is_refreshed_once_not_abandoned(
    clocked: tuple[Sandbox, list[float]],
) -> None:
    sb, now = clocked
    method = oauth(sb)
    with make(sb, [method, BasicAuth("admin", sb.users["admin"])]) as c:
        assert c.ping() > 0 and c.auth_method == "oauth"
        now[0] += 10_000  # the server expires the token; the client's own clock did not notice
        assert c.ping() > 0
        assert c.auth_method == "oauth"


def test_an_oauth_token_comes_from_the_instance_the_client_talks_to(sb: Sandbox) -> None:
    """The configured instance's endpoint had been used for a client of another instance:
    the client secret and the password went to that host."""
    from tests.helpers.http import canned_server

    with canned_server() as elsewhere:
        env = {
            "SERVICENOW_INSTANCE": elsewhere.url,
            "SERVICENOW_CLIENT_ID": sb.oauth_client.client_id,
            "SERVICENOW_CLIENT_SECRET": sb.oauth_client.client_secret,
            "SERVICENOW_USERNAME": "admin",
            "SERVICENOW_PASSWORD": sb.users["admin"],
            "REQUESTS_CA_BUNDLE": str(sb.ca_path),
        }
        credentials = CredentialManager(env=env)  # OAuth comes before basic
        with ServiceNowAPIClient(sb.url, credentials, verify=str(sb.ca_path)) as client:
            assert client.ping() > 0 and client.auth_method == "oauth"
        assert elsewhere.received == []
        # and with no instance configured, the client's own is enough for a grant
        del env["SERVICENOW_INSTANCE"]
        credentials = CredentialManager(env=env)  # OAuth comes before basic
        assert credentials.availability()["oauth"]
        with ServiceNowAPIClient(sb.url, credentials, verify=str(sb.ca_path)) as client:
            assert client.ping() > 0 and client.auth_method == "oauth"
