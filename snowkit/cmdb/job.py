"""The whole load job: collect → transform → plan → apply → verify → report.

One function (``run_load``) used by ``snowkit load`` and by the notebooks, so both run exactly
the same steps and leave the same files behind in ``.snowkit/runs/<run_id>/``: ``report.json``
(the RunReport), ``metrics.json`` / ``metrics.prom`` and ``log.jsonl``. For the embedded instance
it starts the sandbox (its database persists in ``.snowkit/sandbox/`` so reruns see earlier
loads), mounts the UniFi lab at ``/unifi`` and creates the source-id fields itself.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from pydantic import SecretStr

from snowkit import paths
from snowkit.cmdb.apply import DEFAULT_MAX_ATTEMPTS, SyncEngine
from snowkit.cmdb.companies import CompanyCache
from snowkit.cmdb.intents import IntentJournal
from snowkit.cmdb.outbox import Outbox, is_unreachable_error
from snowkit.cmdb.quiet_gc import quiet_gc
from snowkit.cmdb.report import RunReport, suggestions_from
from snowkit.cmdb.responsive import responsive_threads
from snowkit.cmdb.schema import SchemaStatus, ensure_schema
from snowkit.cmdb.state import StateStore
from snowkit.config import LEGACY_INSTANCE_VARIABLE, OperationalConfig
from snowkit.ops import logging as sklog
from snowkit.ops.audit import AuditTrail
from snowkit.ops.errors import ConfigurationError
from snowkit.ops.metrics import MetricsCollector
from snowkit.servicenow.limiter import AdaptiveLimiter
from snowkit.servicenow.transport import display_url

EMBEDDED = "embedded"
SOURCES = ("lab", "sitemanager", "network", "integration")
LAB_PREFIX = "/unifi"
#: A schema check that passed is trusted this long for the same instance (seconds).
SCHEMA_TTL_SECONDS = 900.0
#: Environment variables for real UniFi sources (secrets are read, registered, never printed).
UNIFI_ENV = {
    "url": "UNIFI_URL",
    "api_key": "UNIFI_API_KEY",
    "username": "UNIFI_USERNAME",
    "password": "UNIFI_PASSWORD",
}


@dataclass
class Connection:
    """A ServiceNow client plus what was started to provide it (stopped by ``close``)."""

    client: Any
    sandbox: Any = None
    verify: bool | str = True
    owns_sandbox: bool = False
    lab_server: Any = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.lab_server is not None:
            with contextlib.suppress(Exception):
                self.lab_server.shutdown()
        if self.owns_sandbox and self.sandbox is not None:
            self.sandbox.stop()


def default_instance(config: OperationalConfig | None = None) -> str:
    """The instance when none is named: the configuration's ``servicenow.instance`` (which
    already takes ``SERVICENOW_INSTANCE``), else that variable, else the embedded one. Without
    a configuration the variable had been ignored: a user who set it loaded the embedded
    instance, told "success"."""
    if config is not None and config.servicenow.instance:
        return str(config.servicenow.instance)
    return os.environ.get(LEGACY_INSTANCE_VARIABLE, "").strip() or EMBEDDED


def _audit_key(config: OperationalConfig | None) -> bytes | None:
    """The configuration's ``credentials.audit_key_ref`` (1Password), read through the
    credential manager; None: the trail's own rule (``load_audit_key``: variables, key file)."""
    if config is None or not getattr(config.credentials, "audit_key_ref", None):
        return None
    from snowkit.credentials import CredentialManager

    return CredentialManager(config).audit_key()


def embedded_db_path() -> Path:
    """Where the embedded instance keeps its data between runs."""
    return paths.sandbox_dir() / "sandbox.sqlite3"  # the file `snowkit sandbox serve` uses


def start_embedded(faults: Any = None) -> Any:
    """Start the embedded instance on a free loopback port (persistent database)."""
    from snowkit.sandbox import Sandbox

    return Sandbox.start(db=embedded_db_path(), faults=faults)


def connect(
    instance: str | None = EMBEDDED,
    *,
    credentials: Any = None,
    metrics: MetricsCollector | None = None,
    sandbox: Any = None,
    faults: Any = None,
    verify: bool | str | None = None,
    client_options: dict[str, Any] | None = None,
    config: OperationalConfig | None = None,
) -> Connection:
    """A client for ``instance`` ("embedded" starts the sandbox unless one is passed).

    ``config`` (an ``OperationalConfig``) is handed to the client, so its ``retry``,
    ``circuit_breaker`` and ``servicenow`` timeouts apply, and to the credential manager of a
    URL instance (``auth_order``, ``[credentials]`` references, ``ca_bundle``/``verify``).
    ``instance=None`` means the config's ``servicenow.instance``, else embedded. Without a
    config the client's built-in defaults apply.
    """
    from snowkit.credentials import CredentialManager
    from snowkit.servicenow import ServiceNowAPIClient

    options = dict(client_options or {})
    # a config among the client options (how callers passed one before ``config``) counts too
    config = config if config is not None else options.pop("config", None)
    options.pop("config", None)
    if instance is None:
        instance = config.servicenow.instance if config is not None else EMBEDDED
    if metrics is not None:
        options.setdefault("metrics", metrics)
    if instance == EMBEDDED or sandbox is not None:
        owns = sandbox is None
        sb = sandbox or start_embedded(faults)
        creds = credentials or CredentialManager.static(basic=("admin", sb.users["admin"]))
        chosen = verify if verify is not None else (str(sb.ca_path) if sb.ca_path else True)
        try:
            client = ServiceNowAPIClient(sb.url, creds, config, verify=chosen, **options)
        except Exception:
            if owns:
                sb.stop()
            raise
        return Connection(client, sb, chosen, owns_sandbox=owns)
    creds = credentials or CredentialManager(config)
    chosen = verify if verify is not None else creds.verify_setting()
    client = ServiceNowAPIClient(instance, creds, config, verify=chosen, **options)
    return Connection(client, None, chosen)


def collect_inventory(
    source: str,
    *,
    lab: Any = None,
    connection: Connection | None = None,
    env: dict[str, str] | None = None,
) -> Any:
    """The UniFi inventory from ``source``; "lab" serves a generated lab on loopback."""
    from snowkit.unifi import (
        IntegrationCollector,
        LabConfig,
        NetworkAppCollector,
        SiteManagerCollector,
        generate_lab,
        lab_app,
    )

    if source not in SOURCES:
        raise ConfigurationError(
            f"unknown source {source!r}; choose one of {', '.join(SOURCES)}",
            guidance="use --source lab for the bundled lab",
        )
    if source == "lab":
        app = lab_app(generate_lab(lab or LabConfig()))
        if connection is not None and connection.sandbox is not None:
            connection.sandbox.mount(LAB_PREFIX, app)
            base, verify = connection.sandbox.url + LAB_PREFIX, connection.verify
        else:
            server = _serve_locally(app)
            if connection is not None:
                connection.lab_server = server
            base, verify = f"http://127.0.0.1:{server.server_port}", True
        # A session that ignores REQUESTS_CA_BUNDLE: requests lets that variable override
        # session.verify, and the lab is served with the sandbox's own CA (loopback only).
        session = requests.Session()
        session.trust_env = False
        collector = NetworkAppCollector(
            base + "/network", app.username, app.password, unifi_os=True, verify=verify,
            use_cache=False, session=session,
        )  # fmt: skip
        return collector.collect()
    environ = os.environ if env is None else env
    url = environ.get(UNIFI_ENV["url"])
    if source == "sitemanager":
        key = _secret_from(environ, "api_key")
        collector = SiteManagerCollector(url, key) if url else SiteManagerCollector(api_key=key)
        return collector.collect()
    if not url:
        raise ConfigurationError(
            f"source {source!r} needs the console URL",
            guidance=f"set {UNIFI_ENV['url']}=https://<console> (and the credentials)",
        )
    if source == "network":
        user = environ.get(UNIFI_ENV["username"]) or ""
        return NetworkAppCollector(url, user, _secret_from(environ, "password")).collect()
    return IntegrationCollector(url, _secret_from(environ, "api_key")).collect()


def _secret_from(environ: Any, name: str) -> SecretStr:
    from snowkit.ops.redaction import secrets

    value = environ.get(UNIFI_ENV[name])
    if not value:
        raise ConfigurationError(
            f"missing UniFi credential {UNIFI_ENV[name]}",
            guidance=f"set {UNIFI_ENV[name]} in the environment (it is never printed or logged)",
        )
    secret = SecretStr(value)
    secrets.register(secret)
    return secret


def _serve_locally(app: Any) -> Any:
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, name="snowkit-lab", daemon=True).start()
    return server


@contextlib.contextmanager
def _run_logging(run_dir: Path, run_id: str, level: str = "INFO") -> Iterator[None]:
    """Send the log of this run to ``runs/<run_id>/log.jsonl`` (console quiet; ``level`` from
    the configuration's ``logging.level``), then back to ``logs/snowkit.jsonl``. The run log
    stays JSON whatever the configured format: the analysis frames read it."""
    sklog.configure_logging(level=level, file_path=run_dir / "log.jsonl", console=False)
    sklog.bind_run_id(run_id)
    try:
        yield
    finally:
        sklog.configure_logging(
            level=level, file_path=paths.logs_dir() / "snowkit.jsonl", console=False
        )


def run_load(
    instance: str | None = None,
    source: str = "lab",
    lab: Any = None,
    dry_run: bool = False,
    batch_size: int = 100,
    workers: int = 4,
    ire: bool = False,
    progress: bool | None = True,
    *,
    retire_after_days: float | None = None,
    credentials: Any = None,
    sandbox: Any = None,
    faults: Any = None,
    verify_tls: bool | str | None = None,
    client_options: dict[str, Any] | None = None,
    setup_schema: bool | None = None,
    verify: bool = True,
    on_batch: Callable[[int], None] | None = None,
    inventory: Any = None,
    run_id: str | None = None,
    incremental: bool = True,
    schema_ttl_seconds: float = SCHEMA_TTL_SECONDS,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    config: OperationalConfig | None = None,
) -> RunReport:
    """Run one load and return its report (also written to ``runs/<run_id>/report.json``).

    ``instance`` is "embedded" (start the sandbox; or pass a running ``sandbox``) or an instance
    URL (credentials from the credential manager); None (the default) means
    ``config.servicenow.instance``, else "embedded". ``setup_schema`` creates the source-id fields
    when missing (default: only on the embedded instance; elsewhere a missing field stops the
    run with what an admin must add). ``on_batch`` is a hook after every batch (tests).

    ``incremental`` keeps the synced state locally (``snowkit.cmdb.state``) so a rerun reads
    only what changed in the CMDB (``snowkit.cmdb.incremental``); a schema check that passed
    is trusted for ``schema_ttl_seconds`` on the same instance (0: check every run).

    ``max_attempts`` is how often a write is tried before it is reported failed (creates are
    looked up by source id before every retry); a run that ends ``partial`` on transient
    errors finishes with a rerun or a higher value (``snowkit load --max-attempts``).

    ``config`` (an ``OperationalConfig``, e.g. from ``ConfigurationManager().load_configuration``)
    configures the client: ``retry`` (attempts per HTTP request, unlike ``max_attempts``, which
    counts attempts per write), ``circuit_breaker``, ``servicenow`` timeouts, ``auth_order`` and
    ``ca_bundle``; secrets still come from the credential manager. Without it the client's
    built-in defaults apply (as in the notebooks). ``workers``/``batch_size`` stay arguments.
    """
    if instance is None:
        instance = default_instance(config)
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    run_id = run_id or sklog.new_run_id()
    run_dir = paths.ensure_dir(paths.runs_dir() / run_id)
    metrics = MetricsCollector()
    report = RunReport(run_id=run_id, dry_run=dry_run, ire=ire, source=source)
    shown = display_url(instance) if instance != EMBEDDED else instance
    report.instance = shown if instance != EMBEDDED or sandbox is None else sandbox.url
    report.paths = {
        "report": str(run_dir / "report.json"),
        "log": str(run_dir / "log.jsonl"),
        "metrics": str(run_dir / "metrics.json"),
        "audit": str(paths.audit_path()),
        "outbox": str(paths.outbox_path()),
    }
    clock = time.perf_counter
    started = clock()
    level = config.logging.level if config is not None else "INFO"
    with _run_logging(run_dir, run_id, level), quiet_gc():
        log = sklog.get_logger("snowkit.cmdb.job")
        log.info("load_start", instance=report.instance, source=source, dry_run=dry_run)
        connection: Connection | None = None
        audit: AuditTrail | None = None
        outbox: Outbox | None = None
        intents: IntentJournal | None = None
        state: StateStore | None = None
        try:
            connection = connect(
                instance,
                credentials=credentials,
                metrics=metrics,
                sandbox=sandbox,
                faults=faults,
                verify=verify_tls,
                client_options=client_options,
                config=config,
            )
            report.instance = (
                connection.sandbox.url
                if connection.sandbox is not None
                else getattr(connection.client, "instance_url", report.instance)
            )
            # the local stores open side by side: a first run creates their files (a few
            # syncs each), before the first request can go out
            key = report.instance_key = instance_key(instance, connection)
            opened = _open_stores(incremental, dry_run, key)
            if not dry_run:
                # A crash (power cut) can leave half an audit line: move it aside as evidence
                # and continue the chain, sealed and reported, rather than block every load.
                try:
                    audit = AuditTrail(paths.audit_path(), key=_audit_key(config), recover=True)
                finally:
                    state, outbox, intents = opened()
                if audit.recovered is not None:
                    warning = (
                        f"the audit trail ended with a half-written line (a crash during an "
                        f"earlier write); it was moved to {audit.recovered} as evidence and the "
                        "chain continues after the last complete entry, sealed by a signed "
                        "recover checkpoint (`snowkit audit verify` lists it)"
                    )
                    report.warnings.append(warning)
                    log.warning("audit_recovered", evidence=str(audit.recovered))
            else:
                state, outbox, intents = opened()
            engine = SyncEngine(
                connection.client,
                audit=audit,
                outbox=outbox,
                intents=intents,
                run_id=run_id,
                batch_size=batch_size,
                workers=workers,
                max_attempts=max_attempts,
                retire_after_days=retire_after_days,
                on_batch=on_batch,
                ire=ire,
                state_store=state,
                instance_key=key,
                # vendor name -> core_company sys_id; --full-read looks every name up again
                company_cache=CompanyCache(key, trusted=incremental),
                # batches vary in cost: back off on 429s and big slowdowns, not on jitter
                limiter=AdaptiveLimiter(
                    initial=workers, minimum=1, maximum=workers, latency_factor=5.0
                ),
            )
            create_fields = (
                setup_schema if setup_schema is not None else connection.sandbox is not None
            )
            preflight = None
            if not dry_run and not (
                state is not None and state.schema_checked_recently(key, schema_ttl_seconds)
            ):
                preflight = _schema_preflight(
                    connection.client, report, state, key, create=create_fields, clock=clock
                )
            read_ahead = outbox is None or not outbox.count()
            if read_ahead:  # the plan's first reads and the schema check, while collecting
                from snowkit.cmdb.transform import RELATIONSHIP_TYPES

                engine.prefetch(preflight, rel_type_names=RELATIONSHIP_TYPES)
            t0 = clock()
            if inventory is None:
                inventory = collect_inventory(source, lab=lab, connection=connection)
            report.timings["collect"] = round(clock() - t0, 3)
            if read_ahead:  # beside the transform, not in the plan's way
                from snowkit.cmdb.companies import vendor_names

                engine.look_up_companies(vendor_names(inventory))
            t0 = clock()
            from snowkit.cmdb.quality import quality_summary
            from snowkit.cmdb.transform import transform

            engine.wait_for_first_round()  # let it go out before the GIL is busy here
            with responsive_threads():  # the read-ahead round is still on the wire
                result = transform(inventory)
            inventory = None  # the records are all we need now: free the raw inventory
            report.timings["transform"] = round(clock() - t0, 3)
            report.data_quality = quality_summary(result)
            report.stale_data = list(getattr(result, "warnings", []) or [])
            ledger = NotSeenLedger(instance=key)
            _plan, sync_report = engine.sync(
                result,
                dry_run=dry_run,
                progress=progress,
                verify=verify,
                not_seen_since=ledger.load(),
                preflight=None if read_ahead else preflight,
            )
            _merge(report, sync_report)
            if _plan is not None and not dry_run and not engine.unreachable:
                ledger.update(_plan)
            if dry_run:
                _plan.frame.to_csv(run_dir / "plan.csv", index=False)
                report.paths["plan"] = str(run_dir / "plan.csv")
        except Exception as exc:
            report.status = "failed"
            report.message = _explain(exc)
            log.error("load_failed", error=report.message)
        finally:
            _add_metric_suggestions(report, metrics, workers, batch_size)
            if audit is not None:
                audit.close()
                if audit.anchor_error:  # the trail is intact; only truncation goes unguarded
                    report.warnings.append(
                        f"audit anchor not written ({audit.anchor_error}): truncation of the "
                        "audit trail cannot be detected until it is; check that location"
                    )
            if state is not None:
                state.close()
            if outbox is not None:
                report.outbox["pending"] = outbox.count()
                outbox.close()
            if intents is not None:
                intents.close()
            if connection is not None:
                connection.close()
            report.finish(clock_s=clock() - started)
            with contextlib.suppress(Exception):
                metrics.write_snapshot(run_dir / "metrics.json")
                metrics.write_textfile(run_dir / "metrics.prom")
            report.write(run_dir / "report.json")
            log.info(
                "load_complete",
                status=report.status,
                duration_ms=round(report.duration_s * 1000, 1),
                totals=report.action_totals(),
            )
    return report


def _schema_preflight(
    client: Any,
    report: RunReport,
    state: StateStore | None,
    key: str,
    *,
    create: bool,
    clock: Callable[[], float],
) -> Callable[[], SchemaStatus | None]:
    """The schema check as the engine's preflight (it runs alongside the first reads): a
    missing field stops the run; an unreachable instance only warns (the writes are queued
    and the next run checks the schema before replaying them)."""

    def check() -> SchemaStatus | None:
        t0 = clock()
        try:
            status = ensure_schema(client, create=create)
            if state is not None:
                state.schema_passed(key)
            return status
        except Exception as exc:
            if not is_unreachable_error(exc):
                raise
            report.warnings.append(f"schema not checked, instance unreachable: {exc}")
            return None
        finally:
            report.timings["schema"] = round(clock() - t0, 3)

    return check


Stores = tuple[StateStore | None, Outbox | None, IntentJournal | None]


def _open_stores(incremental: bool, dry_run: bool, key: str) -> Callable[[], Stores]:
    """Open the sync state (when ``incremental``), the outbox (``key``'s queue) and the intent
    journal (unless ``dry_run``) side by side; the returned function waits for them. If one
    fails to open, the others are closed and its error raised."""
    pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="snowkit-open")
    futures = (
        pool.submit(StateStore) if incremental else None,
        None if dry_run else pool.submit(Outbox, instance=key),
        None if dry_run else pool.submit(IntentJournal),
    )
    pool.shutdown(wait=False)

    def opened() -> Stores:
        wait([f for f in futures if f is not None])
        failed = next((f for f in futures if f is not None and f.exception()), None)
        if failed is not None:
            for f in futures:
                if f is not None and f.exception() is None:
                    f.result().close()
            raise failed.exception()  # type: ignore[misc]
        state, outbox, intents = (f.result() if f is not None else None for f in futures)
        return state, outbox, intents

    return opened


def instance_key(instance: str, connection: Connection) -> str:
    """What the remembered state is keyed by: the embedded instance's database file when this
    job started it (its port changes every run), else the client's normalised instance URL
    (lower case): ``dev12345``, ``https://dev12345.service-now.com/`` and its upper-case
    spelling are one instance, with one state (three had let a run under one name leave the
    state of another sealed while it created records)."""
    if connection.owns_sandbox:
        return f"embedded:{embedded_db_path()}"
    if connection.sandbox is not None:
        return str(connection.sandbox.url)
    url = getattr(connection.client, "instance_url", None) or instance
    return str(url).rstrip("/").lower()


def _merge(report: RunReport, other: RunReport) -> None:
    """Copy what the engine's report learned into the job's report."""
    for name in (
        "status",
        "message",
        "counts",
        "applied",
        "relationships",
        "failures",
        "fallbacks",
        "verification",
        "mismatches",
        "ire_operations",
        "suggestions",
    ):
        setattr(report, name, getattr(other, name))
    report.timings.update(other.timings)
    report.warnings.extend(other.warnings)
    report.notes.extend(other.notes)
    report.outbox.update(other.outbox)


def _add_metric_suggestions(
    report: RunReport, metrics: MetricsCollector, workers: int, batch_size: int
) -> None:
    try:
        ops = metrics.all_operation_metrics()
    except Exception:
        return
    rate_limited = sum(getattr(m, "rate_limited", 0) for m in ops)
    retries = sum(getattr(m, "retries", 0) for m in ops)
    server_errors = 0
    with contextlib.suppress(Exception):
        server_errors = sum(
            1 for s in metrics.samples() if (s.get("status_code") or 0) >= 500
        )  # fmt: skip
    report.requests = {
        "total": sum(m.total_requests for m in ops),
        "failed": sum(m.failed_requests for m in ops),
        "retries": retries,
        "rate_limited": rate_limited,
        "server_errors": server_errors,
    }
    slow = sorted(ops, key=lambda m: m.p99_response_time_ms, reverse=True)[:5]
    report.slow_operations = [
        {
            "operation": m.operation_name,
            "table": m.table,
            "requests": m.total_requests,
            "p50_ms": round(m.p50_response_time_ms, 1),
            "p99_ms": round(m.p99_response_time_ms, 1),
            "max_ms": round(m.max_response_time_ms, 1),
        }
        for m in slow
        if m.total_requests
    ]
    p99 = max((m.p99_response_time_ms for m in ops), default=None)
    for tip in suggestions_from(
        rate_limited=rate_limited,
        retries=retries,
        server_errors=server_errors,
        p99_ms=p99,
        workers=workers,
        batch_size=batch_size,
    ):
        if tip not in report.suggestions:
            report.suggestions.append(tip)


def _explain(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class NotSeenLedger:
    """When each CI was first missed from the source (for the opt-in retire grace period),
    per instance: one instance's misses had started (or reset) another's grace periods."""

    def __init__(self, path: Path | None = None, *, instance: str = "") -> None:
        self.path = path or (paths.state_dir() / "cmdb" / "not_seen.json")
        self.instance = instance

    def _all(self) -> dict[str, dict[str, str]]:
        import json

        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        sections = data.get("instances") if isinstance(data, dict) else None
        # a file from before the ledger had sections says no instance: its dates are dropped
        return dict(sections) if isinstance(sections, dict) else {}

    def load(self) -> dict[str, str]:
        return dict(self._all().get(self.instance) or {})

    def update(self, plan: Any) -> None:
        import json
        from datetime import UTC, datetime

        now = datetime.now(UTC).isoformat()
        everything = self._all()
        old = everything.get(self.instance) or {}
        everything[self.instance] = {
            i.source_id: old.get(i.source_id, now)
            for i in plan.items
            if i.action in ("not_seen", "retire")
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"instances": everything}, sort_keys=True), encoding="utf-8")
        tmp.replace(self.path)
