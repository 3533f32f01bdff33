"""Authentication: basic, API key, OAuth 2.0 grants, expiring bearer tokens, roles."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from snowkit.sandbox import OAuthClient, Sandbox
from snowkit.sandbox.auth import AuthService
from tests.helpers.clocks import FakeClock

TOKEN_ERROR = {"error_description": "access_denied", "error": "server_error"}


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock(start=1_800_000_000.0)


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory, clock: FakeClock) -> Iterator[Sandbox]:
    with Sandbox.start(
        state_dir=tmp_path_factory.mktemp("auth-state"),
        users={"admin": "admin-pw"},
        token_lifetime_seconds=600,
        clock=clock,
    ) as sandbox:
        yield sandbox


def _get(sb: Sandbox, **kwargs) -> requests.Response:
    return requests.get(
        f"{sb.url}/api/now/table/sys_user",
        params={"sysparm_limit": "1"},
        verify=str(sb.ca_path),
        timeout=10,
        **kwargs,
    )


def _token(sb: Sandbox, data: dict[str, str], **kwargs) -> requests.Response:
    return requests.post(
        f"{sb.url}/oauth_token.do", data=data, verify=str(sb.ca_path), timeout=10, **kwargs
    )


def test_missing_or_wrong_credentials_get_the_real_401(sb: Sandbox):
    for kwargs in ({}, {"auth": ("admin", "wrong")}, {"auth": ("nobody", "x")}):
        response = _get(sb, **kwargs)
        assert response.status_code == 401
        assert response.json() == {
            "error": {
                "message": "User Not Authenticated",
                "detail": "Required to provide Auth information",
            },
            "status": "failure",
        }
        assert response.headers["WWW-Authenticate"] == 'BASIC realm="Service-now"'


def test_given_password_is_used_and_readonly_gets_a_generated_one(sb: Sandbox):
    assert sb.users["admin"] == "admin-pw"
    assert len(sb.users["readonly"]) >= 16
    assert _get(sb, auth=("admin", "admin-pw")).status_code == 200
    assert _get(sb, auth=("readonly", sb.users["readonly"])).status_code == 200


def test_api_key_in_header_or_query(sb: Sandbox):
    assert sb.api_key.startswith("now_")
    assert _get(sb, headers={"x-sn-apikey": sb.api_key}).status_code == 200
    response = requests.get(
        f"{sb.url}/api/now/table/sys_user",
        params={"x-sn-apikey": sb.api_key, "sysparm_limit": "1"},
        verify=str(sb.ca_path),
        timeout=10,
    )
    assert response.status_code == 200
    assert _get(sb, headers={"x-sn-apikey": "now_wrong"}).status_code == 401


def test_password_grant_with_client_in_basic_header_then_refresh(sb: Sandbox, clock: FakeClock):
    client = sb.oauth_client
    issued = _token(
        sb,
        {"grant_type": "password", "username": "admin", "password": "admin-pw"},
        auth=(client.client_id, client.client_secret),
    )
    assert issued.status_code == 200
    body = issued.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 599
    assert body["scope"] == "useraccount"
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert _get(sb, headers=bearer).status_code == 200

    clock.now += 601
    expired = _get(sb, headers=bearer)
    assert expired.status_code == 401
    assert expired.json()["error"]["message"] == "User Not Authenticated"

    refreshed = _token(
        sb,
        {
            "grant_type": "refresh_token",
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "refresh_token": body["refresh_token"],
        },
    )
    assert refreshed.status_code == 200
    assert refreshed.json()["refresh_token"] == body["refresh_token"]
    new_bearer = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    assert _get(sb, headers=new_bearer).status_code == 200


def test_password_grant_with_client_in_form_and_client_credentials(sb: Sandbox):
    client = sb.oauth_client
    form = {"client_id": client.client_id, "client_secret": client.client_secret}
    password = _token(
        sb, {**form, "grant_type": "password", "username": "admin", "password": "admin-pw"}
    )
    assert password.status_code == 200
    machine = _token(sb, {**form, "grant_type": "client_credentials"})
    assert machine.status_code == 200
    assert "refresh_token" not in machine.json()
    bearer = {"Authorization": f"Bearer {machine.json()['access_token']}"}
    assert _get(sb, headers=bearer).status_code == 200


@pytest.mark.parametrize(
    "data",
    [
        {"grant_type": "password", "username": "admin", "password": "wrong"},
        {"grant_type": "refresh_token", "refresh_token": "not-a-token"},
        {"grant_type": "implicit"},
    ],
)
def test_bad_grants_get_the_token_error_body(sb: Sandbox, data: dict[str, str]):
    client = sb.oauth_client
    response = _token(
        sb, {**data, "client_id": client.client_id, "client_secret": client.client_secret}
    )
    assert response.status_code == 401
    assert response.json() == TOKEN_ERROR


def test_wrong_client_secret_is_refused(sb: Sandbox):
    response = _token(
        sb,
        {"grant_type": "client_credentials"},
        auth=(sb.oauth_client.client_id, "not-the-secret"),
    )
    assert response.status_code == 401
    assert response.json() == TOKEN_ERROR
    get = requests.get(f"{sb.url}/oauth_token.do", verify=str(sb.ca_path), timeout=10)
    assert get.status_code == 405


def test_readonly_bearer_token_cannot_write(sb: Sandbox):
    client = sb.oauth_client
    issued = _token(
        sb,
        {"grant_type": "password", "username": "readonly", "password": sb.users["readonly"]},
        auth=(client.client_id, client.client_secret),
    ).json()
    response = requests.post(
        f"{sb.url}/api/now/table/incident",
        json={"short_description": "nope"},
        headers={"Authorization": f"Bearer {issued['access_token']}"},
        verify=str(sb.ca_path),
        timeout=10,
    )
    assert response.status_code == 403
    assert "ACL Exception Insert Failed" in response.json()["error"]["detail"]


def test_secrets_do_not_appear_in_repr(sb: Sandbox):
    text = repr(sb)
    assert "admin-pw" not in text
    assert sb.oauth_client.client_secret not in text
    assert sb.api_key not in text


@given(header=st.text(max_size=80), api_key=st.one_of(st.none(), st.text(max_size=40)))
def test_authenticate_never_raises_on_arbitrary_headers(header: str, api_key: str | None):
    service = AuthService(
        {"admin": "pw"}, OAuthClient("id", "secret"), {"now_key": "admin"}, clock=lambda: 0.0
    )
    identity = service.authenticate(header, api_key)
    assert identity is None or identity.user == "admin"
    basic = "Basic " + base64.b64encode(b"admin:pw").decode()
    assert service.authenticate(basic, None).can_write
