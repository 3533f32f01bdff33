"""Credentials: the fake `op` on PATH, environment fallback, auth methods over loopback HTTP."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
from pathlib import Path

import pytest
import requests
from pydantic import SecretStr

from snowkit import paths
from snowkit.config import ConfigurationManager
from snowkit.credentials import ApiKeyAuth, BasicAuth, CredentialManager, OAuthAuth
from snowkit.ops.errors import AuthenticationError, CredentialUnavailableError
from snowkit.ops.redaction import redact

from .conftest import CannedResponse

REF = "op://Infra/ServiceNow/password"


def test_op_read_is_canonical_and_cached(fake_op, canary, log_capture) -> None:
    fake_op.set_secrets({REF: canary})
    env = {
        **fake_op.env,
        "SERVICENOW_USERNAME": "loader",
        "SERVICENOW_PASSWORD_OP_REF": REF,
        "SERVICENOW_PASSWORD": "env-password-unused",
    }
    manager = CredentialManager(env=env)
    assert manager.get("password").get_secret_value() == canary
    assert manager.get("password").get_secret_value() == canary  # cached
    assert manager.source_of("password") == "1password"
    calls = fake_op.invocations()
    assert calls == [["whoami"], ["read", "--no-newline", REF]]  # read once, no secret in argv
    assert all(canary not in " ".join(argv) for argv in calls)
    assert redact(f"x {canary} y") == "x *** y"  # registered at once
    events = log_capture.events("credential_access")
    assert events[0]["method"] == "password" and events[0]["details"] == "source=1password"
    assert canary not in log_capture.all_text()


def test_a_reference_is_read_once_per_process(fake_op, canary) -> None:
    fake_op.set_secrets({REF: canary})
    env = {**fake_op.env, "SERVICENOW_PASSWORD_OP_REF": REF}
    first, second = CredentialManager(env=env), CredentialManager(env=env)
    assert first.get("password") == second.get("password")
    reads = [argv for argv in fake_op.invocations() if argv[0] == "read"]
    assert reads == [["read", "--no-newline", REF]]


def test_op_stdin_is_closed(fake_op, canary) -> None:
    fake_op.set_secrets({REF: canary})
    seen = {}

    def runner(argv, **kwargs):
        seen.setdefault("kwargs", kwargs)
        return subprocess.run(argv, **kwargs)

    manager = CredentialManager(
        env={**fake_op.env, "SERVICENOW_PASSWORD_OP_REF": REF}, runner=runner
    )
    manager.get("password")
    assert seen["kwargs"]["stdin"] is subprocess.DEVNULL
    assert seen["kwargs"]["timeout"] > 0 and seen["kwargs"]["check"] is False


def test_environment_fallback_with_the_usual_names(canary) -> None:
    env = {
        "SERVICENOW_INSTANCE": "acme",
        "SERVICENOW_API_KEY": canary,
        "SERVICENOW_USERNAME": "loader",
        "SERVICENOW_PASSWORD": canary + "-pw",
        "PATH": "/nonexistent",
    }
    manager = CredentialManager(env=env)
    assert manager.instance_url() == "https://acme.service-now.com"
    methods = manager.auth_methods()
    assert [m.name for m in methods] == ["api_key", "basic"]
    assert manager.source_of("api_key") == "environment"
    assert redact(canary + "-pw") == "***"


def test_op_not_installed_names_the_fix() -> None:
    manager = CredentialManager(env={"PATH": "/nonexistent", "SERVICENOW_API_KEY_OP_REF": REF})
    with pytest.raises(CredentialUnavailableError) as info:
        manager.get("api_key")
    assert "not installed" in str(info.value) and "developer.1password.com" in str(info.value)


def test_op_not_signed_in(fake_op) -> None:
    env = {**fake_op.env, "FAKE_OP_SIGNED_IN": "0", "SERVICENOW_API_KEY_OP_REF": REF}
    with pytest.raises(CredentialUnavailableError) as info:
        CredentialManager(env=env).get("api_key")
    assert "not signed in" in str(info.value) and "op signin" in str(info.value)
    assert info.value.context.details["problem"] == "not_signed_in"


def test_op_failure_falls_back_to_environment(fake_op, canary) -> None:
    env = {
        **fake_op.env,
        "FAKE_OP_SIGNED_IN": "0",
        "SERVICENOW_API_KEY_OP_REF": REF,
        "SERVICENOW_API_KEY": canary,
    }
    manager = CredentialManager(env=env)
    assert manager.get("api_key").get_secret_value() == canary
    assert manager.source_of("api_key") == "environment"


def test_op_item_not_found(fake_op) -> None:
    env = {**fake_op.env, "SERVICENOW_API_KEY_OP_REF": "op://Infra/Missing/key"}
    with pytest.raises(CredentialUnavailableError) as info:
        CredentialManager(env=env).get("api_key")
    assert info.value.context.details["problem"] == "not_found"
    assert "op://Infra/Missing/key" in str(info.value) and "vault" in str(info.value)


def test_op_timeout(fake_op) -> None:
    env = {**fake_op.env, "FAKE_OP_SLEEP": "3", "SERVICENOW_API_KEY_OP_REF": REF}
    manager = CredentialManager(env=env, op_timeout_seconds=0.3)
    with pytest.raises(CredentialUnavailableError, match=r"within 0\.3 s"):
        manager.get("api_key")


def test_config_references(fake_op, canary, monkeypatch) -> None:
    fake_op.set_secrets({"op://V/sn/api": canary})
    monkeypatch.setenv("SNOWKIT_CREDENTIALS__API_KEY_REF", "op://V/sn/api")
    monkeypatch.setenv("SNOWKIT_SERVICENOW__INSTANCE", "https://dev1.service-now.com")
    config = ConfigurationManager().load_configuration(environment="testing")
    manager = CredentialManager(config, env=fake_op.env)
    assert manager.instance_url() == "https://dev1.service-now.com"
    [method] = manager.auth_methods()
    assert isinstance(method, ApiKeyAuth)


def test_availability_is_booleans_only(fake_op, canary) -> None:
    fake_op.set_secrets({REF: canary})
    env = {
        **fake_op.env,
        "SERVICENOW_PASSWORD_OP_REF": REF,
        "SERVICENOW_USERNAME": "u",
        "SERVICENOW_OAUTH_TOKEN": canary,
    }
    availability = CredentialManager(env=env).availability()
    assert all(isinstance(v, bool) for v in availability.values())
    assert availability["basic"] and availability["oauth"] and not availability["api_key"]
    assert availability["op_installed"] and availability["op_signed_in"]
    assert availability["any_auth_method"]
    assert ["read", "--no-newline", REF] not in fake_op.invocations()  # nothing was read


def test_auth_order_from_config_and_fallback(monkeypatch) -> None:
    monkeypatch.setenv("SNOWKIT_SERVICENOW__AUTH_ORDER", '["basic", "api_key"]')
    config = ConfigurationManager().load_configuration(environment="testing")
    env = {
        "SERVICENOW_API_KEY": "key-12345",
        "SERVICENOW_USERNAME": "u",
        "SERVICENOW_PASSWORD": "pw-12345",
        "SERVICENOW_OAUTH_TOKEN": "tok-12345",
    }
    manager = CredentialManager(config, env=env)
    assert [m.name for m in manager.auth_methods()] == ["basic", "api_key"]
    assert manager.next_auth_method("basic").name == "api_key"
    assert manager.next_auth_method("api_key") is None


def test_static_manager(canary) -> None:
    manager = CredentialManager.static(basic=("admin", canary), instance_url="https://127.0.0.1:1")
    assert manager.instance_url() == "https://127.0.0.1:1"
    [basic] = manager.auth_methods()
    assert isinstance(basic, BasicAuth)
    encoded = base64.b64encode(f"admin:{canary}".encode()).decode()
    assert redact(f"Authorization: Basic {encoded}") == "Authorization: Basic ***"
    assert CredentialManager.static(api_key="k-1234").auth_methods()[0].name == "api_key"


def test_auth_headers_reach_the_server(canned_server) -> None:
    url = canned_server.route("/api/now/table/sys_user", CannedResponse(200, body={"result": []}))
    session = requests.Session()
    ApiKeyAuth("key-abcdef").apply(session)
    session.get(url, timeout=5)
    BasicAuth("admin", SecretStr("pw-abcdef")).apply(session)
    session.get(url, timeout=5)
    OAuthAuth("tok-abcdef").apply(session)
    session.get(url, timeout=5)
    first, second, third = (r["headers"] for r in canned_server.received)
    assert first["x-sn-apikey"] == "key-abcdef"
    assert second["Authorization"] == "Basic " + base64.b64encode(b"admin:pw-abcdef").decode()
    assert third["Authorization"] == "Bearer tok-abcdef"


def _token_endpoint(tokens: list[str], seen: list[dict]):
    def respond(request):
        seen.append(dict(x.split("=", 1) for x in request["body"].split("&")))
        return CannedResponse(
            200,
            body={
                "access_token": tokens.pop(0),
                "refresh_token": f"refresh-{len(seen)}",
                "expires_in": 1800,
                "token_type": "Bearer",
            },
        )

    return respond


def test_oauth_password_grant_and_proactive_refresh(canned_server, fake_clock) -> None:
    seen: list[dict] = []
    token_url = canned_server.route("/oauth_token.do", _token_endpoint(["t-one", "t-two"], seen))
    auth = OAuthAuth(
        token_url=token_url,
        client_id="cid",
        client_secret="csecret-1",
        username="u",
        password="pw-123456",
        clock=fake_clock,
    )
    assert auth.current_token().get_secret_value() == "t-one"
    assert seen[0]["grant_type"] == "password" and seen[0]["username"] == "u"
    fake_clock.advance(1700)
    assert auth.current_token().get_secret_value() == "t-one"
    fake_clock.advance(60)  # within the refresh margin
    assert auth.current_token().get_secret_value() == "t-two"
    assert seen[1]["grant_type"] == "refresh_token"
    assert redact("t-two refresh-1") == "*** ***"


def test_oauth_client_credentials_and_refresh_on_401(canned_server) -> None:
    seen: list[dict] = []
    token_url = canned_server.route(
        "/oauth_token.do", _token_endpoint(["old-tok", "new-tok"], seen)
    )

    def table(request):
        ok = request["headers"].get("Authorization") == "Bearer new-tok"
        return CannedResponse(200 if ok else 401, body={"result": []} if ok else {"error": {}})

    url = canned_server.route("/api/now/table/cmdb_ci", table)
    session = requests.Session()
    OAuthAuth(token_url=token_url, client_id="cid", client_secret="cs-123456").apply(session)
    response = session.get(url, timeout=5)
    assert response.status_code == 200
    assert [h.status_code for h in response.history] == [401]
    assert seen[0]["grant_type"] == "client_credentials"


def test_oauth_token_endpoint_rejection(canned_server) -> None:
    token_url = canned_server.route("/oauth_token.do", CannedResponse(401, body={"error": "x"}))
    auth = OAuthAuth(token_url=token_url, client_id="cid", client_secret="cs-123456")
    with pytest.raises(AuthenticationError) as info:
        auth.current_token()
    assert "SERVICENOW_CLIENT_ID" in str(info.value)


def test_oauth_grant_from_environment(canned_server) -> None:
    env = {
        "SERVICENOW_INSTANCE": canned_server.url,
        "SERVICENOW_CLIENT_ID": "cid",
        "SERVICENOW_CLIENT_SECRET": "cs-123456",
    }
    [method] = CredentialManager(env=env).auth_methods()
    assert (
        isinstance(method, OAuthAuth) and method.token_url == canned_server.url + "/oauth_token.do"
    )


def test_audit_key_file_is_private_and_stable() -> None:
    manager = CredentialManager(env={})
    key = manager.audit_key()
    path = paths.state_dir() / "audit" / "audit.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 64 and CredentialManager(env={}).audit_key() == key
    assert redact(key.decode()) == "***"


def test_audit_key_from_environment(canary) -> None:
    assert CredentialManager(env={"SNOWKIT_AUDIT_KEY": canary}).audit_key() == canary.encode()
    assert not (paths.state_dir() / "audit" / "audit.key").exists()


def test_ca_bundle_setting(tmp_path, monkeypatch) -> None:
    assert (
        CredentialManager(env={"REQUESTS_CA_BUNDLE": "/etc/ca.pem"}).verify_setting()
        == "/etc/ca.pem"
    )
    assert CredentialManager(env={}).verify_setting() is True
    monkeypatch.setenv("SNOWKIT_SERVICENOW__CA_BUNDLE", str(tmp_path / "ca.pem"))
    config = ConfigurationManager().load_configuration(environment="testing")
    assert CredentialManager(config, env={"REQUESTS_CA_BUNDLE": "/x"}).verify_setting() == str(
        tmp_path / "ca.pem"
    )


def test_repr_shows_no_secret(canary) -> None:
    for auth in (ApiKeyAuth(canary), BasicAuth("u", canary), OAuthAuth(canary)):
        assert canary not in repr(auth) and canary not in str(vars(auth))


def test_real_environment_is_not_required() -> None:
    assert CredentialManager(env={"PATH": os.environ.get("PATH", "")}).auth_methods() == []


def test_a_method_only_a_reference_holds_is_unavailable_until_op_can_read_it(
    fake_op, tmp_path: Path
) -> None:
    """Health had said "credentials pass" while the connection failed: `op` was missing."""
    from snowkit.ops.health import HealthMonitor, HealthStatus

    refs = {"SERVICENOW_USERNAME": "u", "SERVICENOW_PASSWORD_OP_REF": REF}
    no_op = CredentialManager(env={**refs, "PATH": str(tmp_path)})  # no `op` on this PATH
    assert not no_op.availability()["basic"]
    check = HealthMonitor(credentials=no_op).check_credential_availability()
    assert check.status == HealthStatus.UNHEALTHY and "not installed" in check.message
    signed_out = CredentialManager(env={**fake_op.env, **refs, "FAKE_OP_SIGNED_IN": "0"})
    assert not signed_out.availability()["basic"]
    check = HealthMonitor(credentials=signed_out).check_credential_availability()
    assert "not signed in" in check.message
    assert CredentialManager(env={**fake_op.env, **refs}).availability()["basic"]
