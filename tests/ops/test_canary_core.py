"""Canary: one known secret used through every core component never appears in any sink.

The secret is the Basic-auth password (so its base64 ``user:password`` form is checked too),
comes from the fake 1Password CLI, is echoed back by a misbehaving server, travels through error
handling, logs (file and console), retry hooks, breaker errors, credential and config errors.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
import requests

from snowkit.config import ConfigurationManager
from snowkit.credentials import CredentialManager, OAuthAuth
from snowkit.ops.breaker import CircuitBreaker, CircuitOpenError
from snowkit.ops.errors import (
    AuthenticationError,
    CredentialUnavailableError,
    ErrorHandler,
    OperationalError,
    RetryBudgetExhaustedError,
    TransientServerError,
)
from snowkit.ops.logging import StructuredLogger, configure_logging, get_logger
from snowkit.ops.retry import RetryBudget, RetryManager, RetryPolicy

from .conftest import CannedResponse

REF = "op://Infra/ServiceNow/password"


def echo_everything(request):
    """A server that puts the request's credentials into its error answer."""
    auth = request["headers"].get("Authorization", "")
    return CannedResponse(
        401,
        {"Content-Type": "application/json", "X-Transaction-ID": "tx1"},
        {
            "error": {"message": f"bad credentials {auth}", "detail": request["path"]},
            "status": "failure",
        },
    )


def test_canary_never_leaks(tmp_path: Path, canned_server, fake_op, canary, capsys, monkeypatch):
    basic_form = base64.b64encode(f"loader:{canary}".encode()).decode()
    console = io.StringIO()
    log_file = tmp_path / "logs" / "snowkit.jsonl"
    configure_logging(level="DEBUG", file_path=log_file, stream=console)
    errors_file = tmp_path / "errors.jsonl"
    sinks: list[str] = []
    try:
        # 1. credentials from the fake op; the argv log must not contain the value
        fake_op.set_secrets({REF: canary})
        env = {
            **fake_op.env,
            "SERVICENOW_USERNAME": "loader",
            "SERVICENOW_PASSWORD_OP_REF": REF,
            "SERVICENOW_INSTANCE": canned_server.url,
        }
        creds = CredentialManager(env=env)
        [basic] = creds.auth_methods()
        sinks.append(fake_op.argv_log.read_text())

        # 2. a request the server answers with our credentials echoed back
        session = requests.Session()
        basic.apply(session)
        url = canned_server.route("/api/now/table/cmdb_ci", echo_everything)
        response = session.get(url + f"?sysparm_query=name={canary}", timeout=5)
        handler = ErrorHandler(errors_path=errors_file)
        ctx = handler.handle_servicenow_error(response, f"GET cmdb_ci {canary}")
        log = StructuredLogger("snowkit.canary")
        log.log_error(ctx)
        with pytest.raises(AuthenticationError) as auth_err:
            handler.raise_for(ctx)
        sinks += [str(auth_err.value), repr(auth_err.value), json.dumps(ctx.to_dict())]

        # 3. an exception carrying the secret in its message and in a local variable
        def transform(record):
            password = canary  # noqa: F841 - a local that must never be rendered
            raise ValueError(f"cannot map {record}")

        try:
            transform({"name": "sw1", "password": canary, "note": f"pw={canary}"})
        except ValueError as exc:
            ctx2 = handler.capture_error("transform", exc, input_data={"note": canary})
            get_logger("snowkit.canary").exception("transform_failed", extra={"pw": canary})
            log.log_error(ctx2)
            sinks.append(json.dumps(ctx2.to_dict()))

        # 4. retries: hooks see classified errors, logs see reasons, budget errors wrap them
        hook_seen: list[str] = []
        budget = RetryBudget(ratio=0, min_retries=1, window_seconds=60)
        retry = RetryManager(
            sleep=lambda s: None,
            budget=budget,
            on_retry=lambda a, d, e, n: hook_seen.append(f"{a} {d} {e} {n}"),
        )
        policy = RetryPolicy(max_attempts=3)
        failures = iter([TransientServerError(f"503 for {canary}")] * 10)

        def flaky():
            raise next(failures)

        with pytest.raises(RetryBudgetExhaustedError) as budget_err:
            retry.execute_with_retry(flaky, policy, operation_name=f"query {canary}")
        sinks += [*hook_seen, str(budget_err.value), repr(budget_err.value)]

        # 5. breaker errors name the operation; the operation name may carry the secret
        breaker = CircuitBreaker(failure_threshold=1, name="servicenow")
        with pytest.raises(TransientServerError):
            breaker.call(flaky, f"GET {canary}")
        with pytest.raises(CircuitOpenError) as open_err:
            breaker.call(lambda: None, f"GET {basic_form}")
        sinks += [str(open_err.value), json.dumps(open_err.value.context.to_dict())]

        # 6. credential errors: op fails and the token endpoint echoes the secret
        bad = CredentialManager(env={**fake_op.env, "SERVICENOW_API_KEY_OP_REF": "op://x/y/z"})
        with pytest.raises(CredentialUnavailableError) as cred_err:
            bad.get("api_key")
        sinks.append(str(cred_err.value))
        token_url = canned_server.route(
            "/oauth_token.do",
            lambda req: CannedResponse(400, body={"error": req["body"]}),
        )
        oauth = OAuthAuth(token_url=token_url, client_id="cid", client_secret=canary)
        with pytest.raises(AuthenticationError) as oauth_err:
            oauth.current_token()
        sinks += [str(oauth_err.value), repr(oauth_err.value)]

        # 7. configuration errors
        monkeypatch.setenv("SNOWKIT_CREDENTIALS__PASSWORD_REF", canary)
        monkeypatch.setenv("SNOWKIT_RETRY__MAX_ATTEMPTS", canary)
        with pytest.raises(OperationalError) as cfg_err:
            ConfigurationManager().load_configuration(environment="production")
        sinks += [str(cfg_err.value), json.dumps(cfg_err.value.context.to_dict())]

        # 8. a foreign library logging the header
        import logging

        logging.getLogger("urllib3").warning("sent Authorization: Basic %s", basic_form)
    finally:
        configure_logging()

    sinks.append(log_file.read_text())
    sinks.append(console.getvalue())
    sinks.append(errors_file.read_text())
    captured = capsys.readouterr()
    sinks += [captured.out, captured.err]
    everything = "\n".join(sinks)
    assert log_file.read_text().count("\n") >= 5  # the sinks really were written
    assert "retry_scheduled" in everything and "credential_access" in everything
    assert "***" in everything
    assert canary not in everything
    assert basic_form not in everything
    # the only place the secret went was the wire, as the Authorization header
    assert canned_server.received[0]["headers"]["Authorization"] == f"Basic {basic_form}"
