"""Secrets canary: unique secret values sent through every output; none may come out.

The canaries are a password, an OAuth client secret, an OAuth access token, an API key and the
audit HMAC key, each unique to this run and full of characters that change under URL encoding.
They live only in the environment of the commands and of the notebook kernel, and in the
embedded instance (which accepts the password, the client secret and the API key; the token is
wrong on purpose, so it travels the failure path and the auth fallback).

Outputs searched, as bytes: every file under ``SNOWKIT_HOME`` (structured logs, per-run
``log.jsonl`` / ``report.json`` / ``metrics.json`` / ``metrics.prom``, error contexts, audit
trail, outbox) and ``SNOWKIT_REPORTS`` (executed notebook, HTML report, ``run.json``, emitted
JSON), plus stdout/stderr of ``snowkit load`` (JSON and text, with good and with wrong
credentials), ``snowkit health``, ``snowkit config show``, ``snowkit metrics``, ``snowkit audit
verify`` and ``snowkit outbox show``. In-process, the ops sinks get the canaries handed to them
directly: log fields, an exception raised with a secret in its message and in a local variable
(``log.exception`` and ``ErrorHandler.capture_error`` tracebacks), audit before/after images,
metric labels (exposition and snapshot) and a health check message.

Forms searched: raw, URL-encoded (``quote`` and ``quote_plus``), JSON-escaped, and base64 at the
three byte alignments (which covers the ``Basic`` header form ``user:password``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import secrets as pysecrets
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from snowkit.cli import main
from snowkit.sandbox import OAuthClient, Sandbox
from snowkit.unifi import LabConfig

NOTEBOOK = Path(__file__).with_name("notebooks") / "secrets_canary.ipynb"
LAB = LabConfig(sites=1, devices_per_site=3, clients_per_site=8, seed=5)


def canary(kind: str) -> str:
    return f"Cn{kind}/{pysecrets.token_hex(8)}+ä&x={pysecrets.token_hex(4)}"


def forms(secret: str) -> set[bytes]:
    """Every way a secret can show up in a file or a stream."""
    raw = secret.encode()
    found = {raw, quote(secret).encode(), quote_plus(secret).encode()}
    found.add(json.dumps(secret)[1:-1].encode())
    found.add(json.dumps(secret, ensure_ascii=False)[1:-1].encode())
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw)
        core = encoded[4:-4]  # the part independent of the bytes around the secret
        found.add(core)
        found.add(base64.urlsafe_b64encode(b"\0" * pad + raw)[4:-4])
    return {f for f in found if len(f) >= 8}


def leaks(blob: bytes, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if any(form in blob for form in forms(value))]


def scan_tree(root: Path, secrets: dict[str, str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    if not root.exists():
        return found
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        hit = leaks(path.read_bytes(), secrets)
        if hit:
            found[str(path.relative_to(root))] = hit
    return found


class Canaries:
    def __init__(self) -> None:
        self.password = canary("pw")
        self.client_secret = canary("cs")
        self.token = canary("tok")
        self.api_key = canary("key")
        self.audit_key = canary("audit")
        self.client_id = pysecrets.token_hex(16)

    def as_dict(self) -> dict[str, str]:
        return {
            "password": self.password,
            "client_secret": self.client_secret,
            "oauth_token": self.token,
            "api_key": self.api_key,
            "audit_key": self.audit_key,
            "basic_header": f"admin:{self.password}",
            "client_basic_header": f"{self.client_id}:{self.client_secret}",
        }


def cli_env(sb: Sandbox, c: Canaries, home: Path, reports: Path, **override: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICENOW_", "SNOWKIT_"))}
    env.update(
        SNOWKIT_HOME=str(home),
        SNOWKIT_REPORTS=str(reports),
        BEAST_ENVIRONMENT="testing",
        SERVICENOW_INSTANCE=sb.url,
        SERVICENOW_USERNAME="admin",
        SERVICENOW_PASSWORD=c.password,
        SERVICENOW_API_KEY=c.api_key,
        SERVICENOW_CLIENT_ID=c.client_id,
        SERVICENOW_CLIENT_SECRET=c.client_secret,
        SERVICENOW_OAUTH_TOKEN=c.token,
        SNOWKIT_AUDIT_KEY=c.audit_key,
        REQUESTS_CA_BUNDLE=str(sb.ca_path),
    )
    env.update(override)
    return env


def snowkit(env: dict[str, str], *args: str) -> tuple[int, bytes]:
    done = subprocess.run(
        [sys.executable, "-m", "snowkit.cli", *args], env=env, capture_output=True, timeout=120
    )
    return done.returncode, done.stdout + b"\n" + done.stderr


def snowkit_here(env: dict[str, str], monkeypatch: Any, *args: str) -> tuple[int, bytes]:
    """Run a cheap command in this process (start-up time), with ``env`` as its environment.

    Only before anything in this process has registered the canaries: a registry already
    holding them would hide a command that forgot to redact."""
    out, err = io.StringIO(), io.StringIO()
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith(("SERVICENOW_", "SNOWKIT_"))]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    return code, (out.getvalue() + "\n" + err.getvalue()).encode()


def exercise_cli(
    sb: Sandbox, c: Canaries, home: Path, reports: Path, monkeypatch: Any
) -> dict[str, Any]:
    from snowkit.ops.redaction import secrets

    env = cli_env(sb, c, home, reports)
    lab = ["--lab-sites", "1", "--lab-devices", "3", "--lab-clients", "8", "--batch-size", "5"]
    wrong = cli_env(
        sb,
        c,
        home,
        reports,
        SERVICENOW_PASSWORD=c.password + "-wrong",
        SERVICENOW_API_KEY=c.api_key + "-wrong",
        SERVICENOW_CLIENT_SECRET=c.client_secret + "-wrong",
    )
    oauth_only = {
        k: v for k, v in env.items() if k not in ("SERVICENOW_API_KEY", "SERVICENOW_OAUTH_TOKEN")
    }
    runs = {"setup": snowkit(env, "setup", "--instance", sb.url)}
    # the OAuth password grant: the client secret and the password go to /oauth_token.do
    runs["health --json, OAuth grant"] = snowkit(
        oauth_only, "health", "--instance", sb.url, "--json"
    )
    runs["load --json"] = snowkit(env, "load", "--instance", sb.url, "--json", *lab)
    runs["load, wrong credentials"] = snowkit(wrong, "load", "--instance", sb.url, *lab)
    runs["health --json"] = snowkit(env, "health", "--instance", sb.url, "--json")
    runs["health, wrong credentials"] = snowkit(wrong, "health", "--instance", sb.url)
    assert not any(secrets.mask(v) != v for v in c.as_dict().values()), "registry not clean"
    for args in (
        ("config", "show", "--json"),
        ("config", "show"),
        ("metrics",),
        ("audit", "verify"),
        ("outbox", "show", "--all"),
    ):
        runs[" ".join(args)] = snowkit_here(env, monkeypatch, *args)
    assert runs["setup"][0] == 0, runs["setup"][1][-2000:]
    code, out = runs["health --json, OAuth grant"]
    # a busy test machine may push the CPU reading to "warn" (exit 1): only "system" may warn
    checks = json.loads(out)["checks"]
    unwell = {name for name, entries in checks.items() for e in entries if e["status"] != "pass"}
    assert code in (0, 1) and all(name.startswith("system") for name in unwell), out
    assert runs["load --json"][0] == 0, runs["load --json"][1][-2000:]
    assert runs["load, wrong credentials"][0] != 0
    assert b"User Not Authenticated" in runs["load, wrong credentials"][1] or (
        b"uthenticat" in runs["load, wrong credentials"][1]
    )
    return runs


def exercise_sinks(c: Canaries, home: Path) -> None:
    """Hand the canaries straight to every ops sink, as careless calling code would."""
    from snowkit.ops import logging as sklog
    from snowkit.ops.audit import AuditTrail
    from snowkit.ops.errors import ErrorCategory, ErrorHandler, ErrorSeverity
    from snowkit.ops.health import HealthCheck, HealthMonitor, HealthStatus, to_health_json
    from snowkit.ops.metrics import MetricsCollector
    from snowkit.ops.redaction import secrets

    for value in (c.password, c.client_secret, c.token, c.api_key):
        secrets.register(value)  # what the credential manager does the moment it reads one
    secrets.register_basic("admin", c.password)
    sklog.configure_logging(file_path=home / "logs" / "sinks.jsonl", console=False)
    log = sklog.get_logger("drill.canary")
    log.info("login", password=c.password, note=f"token={c.token}", api_key=c.api_key)
    log.info("headers", headers={"Authorization": f"Bearer {c.token}", "x-sn-apikey": c.api_key})
    log.info("free_text", message=f"client secret is {c.client_secret}")

    def leaky_login() -> None:
        password = c.password  # a secret in a local variable of the failing frame
        token = c.token
        raise RuntimeError(f"login failed for admin/{password} with {token}")

    handler = ErrorHandler(errors_path=home / "errors" / "errors.jsonl")
    try:
        leaky_login()
    except RuntimeError as exc:
        log.exception("login_failed")
        handler.capture_error(
            "login",
            exc,
            ErrorCategory.AUTHENTICATION,
            ErrorSeverity.HIGH,
            input_data={"password": c.password, "comment": f"key {c.api_key}"},
        )
    sklog.StructuredLogger("drill.canary").log_credential_access(
        "basic", False, {"password": c.password}
    )

    with AuditTrail(home / "audit" / "sinks.jsonl", key=c.audit_key) as trail:
        trail.record(
            "update",
            "sys_user",
            "0" * 32,
            before={"password": c.password},
            after={"u_note": f"api key {c.api_key}", "token": c.token},
        )

    metrics = MetricsCollector()
    metrics.record_request("GET", f"query {c.token}", 200, 12.5, table=f"t {c.api_key}")
    metrics.record_error("POST", f"create {c.password}", RuntimeError(c.client_secret))
    metrics.record_retry(f"retry {c.token}", f"because {c.password}")
    (home / "metrics").mkdir(exist_ok=True)
    (home / "metrics" / "exposition.prom").write_bytes(metrics.exposition())
    metrics.write_textfile(home / "metrics" / "textfile.prom")
    metrics.write_snapshot(home / "metrics" / "snapshot.json")

    monitor = HealthMonitor()
    monitor.register_check(
        "leaky",
        lambda: HealthCheck(
            "leaky", HealthStatus.DEGRADED, f"rejected {c.password}", details={"key": c.api_key}
        ),
    )
    document = to_health_json(monitor.run_all_checks_sync(5))
    (home / "health.json").write_text(json.dumps(document), encoding="utf-8")


def run_notebook(sb: Sandbox, c: Canaries, reports: Path, monkeypatch: Any) -> Any:
    from snowkit.reports import run

    for name, value in cli_env(sb, c, Path(os.environ["SNOWKIT_HOME"]), reports).items():
        if name.startswith(("SERVICENOW_", "SNOWKIT_AUDIT", "REQUESTS_CA")):
            monkeypatch.setenv(name, value)
    result = run(NOTEBOOK, {"instance": sb.url}, reports_dir=reports, timeout=120)
    assert result.status == "failed", "the last cell fails on purpose"
    assert result.error is not None and "Authentication" in result.error.ename, result.error
    executed = result.executed_notebook.read_text(encoding="utf-8")
    assert "ping ms" in executed, "the connected cells ran"
    return result


def test_no_canary_in_any_output(
    drill: Any, snowkit_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = Canaries()
    reports = tmp_path / "reports"
    with Sandbox.start(
        users={"admin": c.password},
        oauth_client=OAuthClient(c.client_id, c.client_secret),
        api_key=c.api_key,
    ) as sb:
        runs = exercise_cli(sb, c, snowkit_home, reports, monkeypatch)
        notebook = run_notebook(sb, c, reports, monkeypatch)
    exercise_sinks(c, snowkit_home)

    secrets = c.as_dict()
    wire = b"Authorization: Basic " + base64.b64encode(f"admin:{c.password}".encode())
    assert leaks(wire, secrets) == ["password", "basic_header"], "the scanner itself works"
    assert leaks(quote_plus(c.token).encode(), secrets) == ["oauth_token"]
    streams = {name: leaks(out, secrets) for name, (_code, out) in runs.items()}
    files = {**scan_tree(snowkit_home, secrets), **scan_tree(reports, secrets)}
    scanned = sum(1 for root in (snowkit_home, reports) for p in root.rglob("*") if p.is_file())
    drill.figures(
        "secrets_canary",
        variant="fast",
        canaries=len(secrets),
        forms_per_canary=len(forms(c.password)),
        files_scanned=scanned,
        cli_outputs_scanned=len(runs),
        notebook_artifacts=sorted(p.name for p in notebook.run_dir.rglob("*") if p.is_file()),
        occurrences=sum(len(v) for v in files.values()) + sum(len(v) for v in streams.values()),
    )
    assert not {k: v for k, v in streams.items() if v}, "secret in CLI output"
    assert not files, f"secret in files: {files}"
    # the drill looked where the secrets could have gone
    assert (snowkit_home / "errors" / "errors.jsonl").exists()
    assert list(snowkit_home.glob("runs/*/report.json")) and list(reports.rglob("run.json"))
    assert list(reports.rglob("report.html")) and list(reports.rglob("*.ipynb"))
