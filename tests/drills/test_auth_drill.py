"""Auth drill: wrong, expiring and read-only credentials against a load.

For each case the load must end with a message that says what to do, never show the secret,
and leave nothing half-written: no partial CMDB records (a record is either absent or complete),
no writes parked in the outbox that no replay could ever send (a 401/403 is not an outage), and
an audit trail that verifies and names only writes that landed. A rerun with good credentials
then converges to the exact expected state.

Cases: a wrong password (library and ``snowkit load`` CLI); the sandbox's ``readonly`` user
(403 on every write); an OAuth token that expires in the middle of the load (the sandbox clock
jumps two hours after the second batch), once with a refreshable grant (the client must get a
new token and finish) and once with a bare token (the run must stop cleanly).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from snowkit import paths
from snowkit.cmdb.job import run_load
from snowkit.cmdb.outbox import Outbox
from snowkit.config import OperationalConfig, ServiceNowConfig
from snowkit.credentials import CredentialManager
from snowkit.ops.audit import read_audit, verify_audit
from snowkit.sandbox import Sandbox
from snowkit.unifi import LabConfig

LAB = LabConfig(sites=1, devices_per_site=4, clients_per_site=20, seed=8)
GUIDANCE_WORDS = ("check", "set ", "ask", "grant", "role", "credential", "password", "token")


class JumpClock:
    """Wall time plus an offset: the sandbox's token clock, moved forward on demand."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def load(sb: Sandbox, inventory: Any, credentials: Any, drill: Any, **kw: Any) -> Any:
    return run_load(
        sandbox=sb,
        inventory=inventory,
        credentials=credentials,
        progress=False,
        batch_size=5,
        workers=1,
        client_options={"sleep": drill.no_sleep},
        **kw,
    )


def assert_clean_failure(report: Any, secret: str) -> None:
    text = " ".join([report.message or "", *report.warnings, *(f.error for f in report.failures)])
    assert report.status in ("failed", "partial"), report.status
    assert secret not in text, "the secret was shown"
    assert any(w in (report.message or "").lower() for w in GUIDANCE_WORDS), report.message


def assert_nothing_half_written(drill: Any, sb: Sandbox, result: Any) -> dict[str, int]:
    """Every record present is complete; outbox holds nothing unsendable; audit consistent."""
    diff = drill.compare(sb.store, result)
    assert not diff.duplicated and not diff.unexpected and not diff.field_mismatches, diff.summary()
    with Outbox() as box:
        queued = box.count()
        assert queued == 0 and box.count("failed") == 0, box.summary()
    if paths.audit_path().exists():
        check = verify_audit(paths.audit_path())
        assert check.ok, check.message
        held = {
            row["sys_id"]
            for table in ("cmdb_ci", "cmn_location", "cmdb_rel_ci", "core_company")
            for row in sb.store.list(table, "", limit=-1)[0]
        }
        for entry in read_audit():
            if entry["action"] == "create" and entry["outcome"] == "success":
                assert entry["sys_id"] in held, f"audited a write that did not land: {entry}"
    return {"present": len(result.records) - len(diff.lost), "missing": len(diff.lost)}


def admin_manager(sb: Sandbox) -> CredentialManager:
    return CredentialManager.static(basic=("admin", sb.users["admin"]))


def converge(drill: Any, sb: Sandbox, inventory: Any, result: Any) -> None:
    again = load(sb, inventory, admin_manager(sb), drill)
    assert again.status == "success", again.message
    final = drill.compare(sb.store, result)
    assert final.exact, final.summary()
    check = verify_audit(paths.audit_path())
    assert check.ok, check.message


def oauth_token(sb: Sandbox) -> str:
    response = requests.post(
        f"{sb.url}/oauth_token.do",
        data={
            "grant_type": "password",
            "client_id": sb.oauth_client.client_id,
            "client_secret": sb.oauth_client.client_secret,
            "username": "admin",
            "password": sb.users["admin"],
        },
        verify=str(sb.ca_path),
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


@pytest.fixture
def jump_sandbox(drill: Any) -> Any:
    clock = JumpClock()
    with Sandbox.start(clock=clock, token_lifetime_seconds=600) as sb:
        drill.setup_schema(sb)
        yield sb, clock


def test_wrong_password(drill: Any, sandbox: Sandbox) -> None:
    inventory, result = drill.lab_result(sandbox, LAB)
    wrong = "Wr0ng-" + sandbox.users["admin"][::-1]
    report = load(sandbox, inventory, CredentialManager.static(basic=("admin", wrong)), drill)
    assert_clean_failure(report, wrong)
    state = assert_nothing_half_written(drill, sandbox, result)
    assert state["present"] == 0
    converge(drill, sandbox, inventory, result)
    drill.figures("auth", case="wrong password", status=report.status, message=report.message)


def test_wrong_password_cli(drill: Any, sandbox: Sandbox, snowkit_home: Path) -> None:
    wrong = "Wr0ng-" + sandbox.users["admin"][::-1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICENOW_", "SNOWKIT_"))}
    env.update(
        SNOWKIT_HOME=str(snowkit_home),
        SERVICENOW_USERNAME="admin",
        SERVICENOW_PASSWORD=wrong,
        REQUESTS_CA_BUNDLE=str(sandbox.ca_path),
    )
    args = ["load", "--instance", sandbox.url, "--lab-sites", "1", "--lab-devices", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "snowkit.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-2000:]
    assert wrong not in output and "Traceback" not in output
    assert "SERVICENOW_PASSWORD" in output or "credential" in output.lower(), output[-2000:]


def readonly_load(drill: Any, sb: Sandbox) -> tuple[Any, Any, Any, str]:
    inventory, result = drill.lab_result(sb, LAB)
    password = sb.users["readonly"]
    report = load(sb, inventory, CredentialManager.static(basic=("readonly", password)), drill)
    return inventory, result, report, password


def test_readonly_user_writes_nothing(drill: Any, sandbox: Sandbox) -> None:
    inventory, result, report, password = readonly_load(drill, sandbox)
    assert report.status in ("failed", "partial")
    everything = " ".join([report.message, *(f.error for f in report.failures)])
    assert password not in everything
    assert report.failures and all("403" in f.error for f in report.failures)
    state = assert_nothing_half_written(drill, sandbox, result)
    assert state["present"] == 0
    converge(drill, sandbox, inventory, result)
    drill.figures(
        "auth",
        case="read-only user",
        status=report.status,
        message=report.message,
        failures=len(report.failures),
        requests=report.requests.get("total"),
    )


def test_readonly_user_is_told_what_to_do(drill: Any, sandbox: Sandbox) -> None:
    _inventory, _result, report, password = readonly_load(drill, sandbox)
    assert_clean_failure(report, password)
    assert any(w in report.message.lower() for w in ("role", "permission", "acl", "rights"))


def test_oauth_expiry_mid_run_is_refreshed(drill: Any, jump_sandbox: Any) -> None:
    sb, clock = jump_sandbox
    inventory, result = drill.lab_result(sb, LAB)
    config = OperationalConfig(servicenow=ServiceNowConfig(auth_order=["oauth"]))
    manager = CredentialManager(
        config=config,
        env={
            "SERVICENOW_INSTANCE": sb.url,
            "SERVICENOW_CLIENT_ID": sb.oauth_client.client_id,
            "SERVICENOW_CLIENT_SECRET": sb.oauth_client.client_secret,
            "SERVICENOW_USERNAME": "admin",
            "SERVICENOW_PASSWORD": sb.users["admin"],
            "REQUESTS_CA_BUNDLE": str(sb.ca_path),
        },
    )

    def expire(done: int) -> None:
        if done == 2:
            clock.offset += 7200  # every token issued so far is now expired

    report = load(sb, inventory, manager, drill, on_batch=expire)
    assert report.status == "success", report.message
    final = drill.compare(sb.store, result)
    assert final.exact, final.summary()
    assert verify_audit(paths.audit_path()).ok
    drill.figures("auth", case="OAuth expiry, refreshable", status=report.status)


def test_oauth_bare_token_expiry_mid_run_stops_cleanly(drill: Any, jump_sandbox: Any) -> None:
    sb, clock = jump_sandbox
    inventory, result = drill.lab_result(sb, LAB)
    token = oauth_token(sb)

    def expire(done: int) -> None:
        if done == 2:
            clock.offset += 7200

    report = load(sb, inventory, CredentialManager.static(oauth=token), drill, on_batch=expire)
    assert_clean_failure(report, token)
    state = assert_nothing_half_written(drill, sb, result)
    assert 0 < state["present"] < len(result.records), state
    converge(drill, sb, inventory, result)
    drill.figures(
        "auth",
        case="OAuth bare token expiry",
        status=report.status,
        message=report.message,
        **state,
    )
