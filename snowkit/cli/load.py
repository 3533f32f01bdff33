"""`snowkit load`, `snowkit setup`, `snowkit outbox replay|show`, `snowkit rollback RUN_ID`.

Thin commands over ``snowkit.cmdb``: every step lives in the library (``run_load``,
``ensure_schema``, ``Outbox``, ``rollback``) so notebooks and the CLI behave the same.

Exit codes of ``load``: 0 done (or dry run), 1 failed, 3 partial (some items failed; see the
report), 4 queued (the instance was unreachable; writes wait in the outbox), 78 the
configuration could not be loaded (nothing was started or written).

``load`` reads the operational configuration (``snowkit.config``) when it is asked for:
``--config``/``SNOWKIT_CONFIG`` or ``--environment``/``BEAST_ENVIRONMENT``; otherwise the
client's built-in defaults apply, as before, and the run report notes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from snowkit.cli import non_negative_float
from snowkit.cli.config import EX_CONFIG

if TYPE_CHECKING:
    from snowkit.config import OperationalConfig
    from snowkit.ops.audit import AuditTrail

EXIT_OK = 0
#: Attempts per write (``SyncEngine``'s default; ``--max-attempts``).
DEFAULT_MAX_ATTEMPTS = 3
EXIT_FAILED = 1
EXIT_PARTIAL = 3
EXIT_QUEUED = 4
#: The configuration was asked for but is invalid (sysexits EX_CONFIG, as `snowkit config show`).
EXIT_CONFIG = EX_CONFIG
#: The run report's note when ``load`` ran without a configuration.
NO_CONFIG_NOTE = (
    "no configuration loaded (no --config, SNOWKIT_CONFIG, --environment or BEAST_ENVIRONMENT): "
    "the client's built-in defaults applied (retry, circuit breaker, timeouts, auth order)"
)
_STATUS_EXIT = {
    "success": EXIT_OK,
    "dry_run": EXIT_OK,
    "partial": EXIT_PARTIAL,
    "queued": EXIT_QUEUED,
    "failed": EXIT_FAILED,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    load = subparsers.add_parser(
        "load",
        help="load UniFi inventory into the CMDB",
        description="Collect, transform, plan, apply, verify; writes .snowkit/runs/<run_id>/. "
        "Exit 0 done, 1 failed, 3 partial, 4 queued in the outbox, 78 invalid configuration. "
        "Configuration: when --config (or SNOWKIT_CONFIG) or --environment (or "
        "BEAST_ENVIRONMENT) is given, the configuration is loaded and its retry, "
        "circuit_breaker and servicenow settings (timeouts, auth_order, ca_bundle, instance) "
        "configure the ServiceNow client; an invalid one stops the load with exit 78 before "
        "anything is written. With neither, the built-in defaults apply and the run report notes "
        "it. Credentials always come from the credential manager (SERVICENOW_* variables or "
        "1Password references), never from values in the file.",
    )
    load.add_argument(
        "--instance",
        metavar="URL|embedded",
        default=None,
        type=instance_argument,
        help="'embedded' (start the local instance) or the instance URL; overrides "
        "servicenow.instance from the configuration (default: that, else 'embedded')",
    )
    _config_args(load)
    load.add_argument(
        "--source",
        default="lab",
        choices=("lab", "sitemanager", "network", "integration"),
        help="where the inventory comes from (lab: the bundled generated lab; the others read "
        "UNIFI_URL / UNIFI_API_KEY / UNIFI_USERNAME / UNIFI_PASSWORD)",
    )
    load.add_argument("--dry-run", action="store_true", help="plan only; write nothing")
    load.add_argument("--batch-size", type=_positive, default=100, help="records per batch")
    load.add_argument("--workers", type=_positive, default=4, help="concurrent batches")
    load.add_argument(
        "--max-attempts",
        type=_positive,
        default=DEFAULT_MAX_ATTEMPTS,
        help="attempts per write before it is reported as failed (a create is looked up by "
        "source id before each retry, so retries never duplicate); default "
        f"{DEFAULT_MAX_ATTEMPTS}. Raise it when a run ends partial on transient errors "
        "(5xx, 429); if 429s dominate, lower --workers instead. Not the configuration's "
        "retry.max_attempts: that one is per HTTP request, inside the client, so one write may "
        "send up to --max-attempts x retry.max_attempts requests",
    )
    load.add_argument(
        "--ire", action="store_true", help="load CIs through the IRE API (identifyreconcile)"
    )
    load.add_argument(
        "--retire-after-days",
        type=non_negative_float,
        default=None,
        help="retire CIs no longer seen for this many days (default: only report them)",
    )
    load.add_argument(
        "--full-read",
        action="store_true",
        help="read the whole CMDB and re-check the schema instead of only what changed since "
        "the last run",
    )
    load.add_argument("--json", action="store_true", help="print the run report as JSON")
    load.add_argument("--no-progress", action="store_true", help="no progress bars")
    load.add_argument("--lab-sites", type=_positive, default=3, help="lab: number of sites")
    load.add_argument(
        "--lab-devices", type=_positive, default=8, help="lab: network devices per site"
    )
    load.add_argument("--lab-clients", type=_non_negative, default=40, help="lab: clients per site")
    load.add_argument("--lab-seed", type=int, default=7, help="lab: generator seed")
    load.set_defaults(func=_load)

    setup = subparsers.add_parser(
        "setup",
        help="create the fields the sync needs (u_unifi_source_id) on the instance",
        description="Checks sys_dictionary and creates u_unifi_source_id on cmdb_ci and "
        "cmn_location where your account may; otherwise lists what an admin must add.",
    )
    _instance_arg(setup)
    setup.add_argument("--check", action="store_true", help="only check; create nothing")
    setup.add_argument("--json", action="store_true", help="print the result as JSON")
    setup.set_defaults(func=_setup)

    outbox = subparsers.add_parser("outbox", help="writes queued while the instance was down")
    commands = outbox.add_subparsers(dest="outbox_command", metavar="SUBCOMMAND")
    show = commands.add_parser("show", help="list queued writes")
    show.add_argument("--all", action="store_true", help="also sent and failed entries")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_outbox_show)
    replay = commands.add_parser("replay", help="send queued writes now, in order")
    _instance_arg(replay)
    replay.add_argument("--json", action="store_true", help="print JSON")
    replay.set_defaults(func=_outbox_replay)
    outbox.set_defaults(func=lambda _args: outbox.print_help() or 2)

    rollback = subparsers.add_parser(
        "rollback",
        help="undo a load run from the audit trail",
        description="Deletes what the run created, restores what it changed, recreates what it "
        "deleted (from the audit trail's before-images). Safe to run twice. A record changed "
        "since the run (by someone else or a later load) is left as it is and listed, unless "
        "--force; roll later runs back first, newest first. Exit 0 when the CMDB is back as "
        "it was, 3 when something was left (listed), 1 on failure.",
    )
    rollback.add_argument("run_id", help="the run id (see .snowkit/runs/ or `snowkit load`)")
    rollback.add_argument(
        "--force",
        action="store_true",
        help="also undo records changed since the run (their later changes are lost)",
    )
    _instance_arg(rollback)
    rollback.add_argument("--json", action="store_true", help="print JSON")
    rollback.set_defaults(func=_rollback)


def instance_argument(text: str) -> str:
    """``--instance``: 'embedded' or an instance URL the client accepts (checked before anything
    is written: a bad one had failed the run after its folder was made)."""
    from snowkit.servicenow.transport import InstanceURLError, normalize_instance_url

    if text.strip() == "embedded":
        return "embedded"
    try:
        normalize_instance_url(text)
    except InstanceURLError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def _instance_arg(parser: argparse.ArgumentParser) -> None:
    """``--instance`` and the configuration options of the maintenance commands (setup, outbox
    replay, rollback): they read the configuration under the same rule as ``load``."""
    parser.add_argument(
        "--instance",
        default=None,
        type=instance_argument,
        help="'embedded' (start the local instance) or the instance URL (credentials from the "
        "credential manager: SERVICENOW_* or 1Password); overrides servicenow.instance from "
        "the configuration (default: that, else 'embedded')",
    )
    _config_args(parser)


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        dest="config_file",
        metavar="FILE",
        help="configuration file, TOML, JSON or YAML (default: $SNOWKIT_CONFIG); needs an "
        "environment (--environment or BEAST_ENVIRONMENT)",
    )
    parser.add_argument(
        "--environment",
        metavar="ENV",
        help="development, testing, staging, production or unknown (default: "
        "$BEAST_ENVIRONMENT); each brings its defaults, e.g. testing retries no HTTP request",
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _err(message: str) -> None:
    print(f"snowkit: {message}", file=sys.stderr)


# -- load ------------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> int:
    from snowkit.cmdb.job import SCHEMA_TTL_SECONDS, run_load
    from snowkit.ops.errors import ConfigurationError
    from snowkit.unifi import LabConfig

    try:
        config = load_config(args.config_file, args.environment)
    except ConfigurationError as exc:
        return _config_refused("load", args, exc)

    lab = None
    if args.source == "lab":
        try:
            lab = LabConfig(
                sites=args.lab_sites,
                devices_per_site=args.lab_devices,
                clients_per_site=args.lab_clients,
                seed=args.lab_seed,
            )
        except ValueError as exc:
            _err(f"invalid lab size: {exc}")
            return 2
    report = run_load(
        instance=args.instance,  # None: servicenow.instance from the configuration, else embedded
        source=args.source,
        lab=lab,
        dry_run=args.dry_run,
        batch_size=args.batch_size,
        workers=args.workers,
        max_attempts=args.max_attempts,
        ire=args.ire,
        progress=False if (args.no_progress or args.json) else None,
        retire_after_days=args.retire_after_days,
        incremental=not args.full_read,
        schema_ttl_seconds=0.0 if args.full_read else SCHEMA_TTL_SECONDS,
        config=config,
    )
    _note_configuration(report, config, args.config_file)
    if args.json:
        print(report.to_json())
    else:
        _print_report(report)
    code = _STATUS_EXIT.get(report.status, EXIT_FAILED)
    if code and report.message:
        _err(f"load {report.status}: {report.message}")
    return code


def load_config(config_file: str | None, environment: str | None) -> OperationalConfig | None:
    """The configuration when one is asked for, else None (built-in defaults).

    Asked for: a config file (``config_file`` or ``SNOWKIT_CONFIG``) or an environment
    (``environment`` or ``BEAST_ENVIRONMENT``). Then it must load: a ``ConfigurationError``
    (listing every problem, never a value) propagates, e.g. for a file without an environment.
    """
    from snowkit.config import CONFIG_FILE_VARIABLE, ENVIRONMENT_VARIABLE, ConfigurationManager

    asked = config_file or environment
    if not (asked or os.environ.get(ENVIRONMENT_VARIABLE) or os.environ.get(CONFIG_FILE_VARIABLE)):
        return None
    return ConfigurationManager().load_configuration(
        config_file=config_file or None, environment=environment or None
    )


def _config_refused(command: str, args: argparse.Namespace, exc: Exception) -> int:
    """Say why the configuration stops ``command`` (every problem, never a value); exit 78."""
    _err(f"{command} not started: {exc}")
    if not (args.environment or os.environ.get("BEAST_ENVIRONMENT")):
        _err(
            "a configuration needs an environment: pass --environment NAME or set "
            "BEAST_ENVIRONMENT (development, testing, staging, production or unknown)"
        )
    return EXIT_CONFIG


def _note_configuration(report: Any, config: Any, config_file: str | None) -> None:
    """Say in the run report (and its report.json) which configuration the run used."""
    from pathlib import Path

    from snowkit.config import CONFIG_FILE_VARIABLE

    if config is None:
        note = NO_CONFIG_NOTE
    else:
        source = config_file or os.environ.get(CONFIG_FILE_VARIABLE)
        note = f"configuration loaded: environment {config.environment.value}" + (
            f", file {source}" if source else ", no file"
        )
    report.notes.insert(0, note)
    path = report.paths.get("report")
    if path:
        try:
            report.write(Path(path))
        except OSError as exc:
            _err(f"warning: could not add the configuration note to {path}: {exc}")


def _print_report(report: Any) -> None:
    print(report.summary_line())
    for table, per_action in sorted(report.counts.items()):
        parts = ", ".join(f"{a} {n}" for a, n in per_action.items() if n)
        print(f"  {table}: {parts}")
    for failure in report.failures[:20]:
        print(f"  failed {failure.action} {failure.table} {failure.source_id}: {failure.error}")
    if len(report.failures) > 20:
        print(f"  ... and {len(report.failures) - 20} more failures (see the report)")
    for note in report.notes[:1]:
        if note.startswith(("configuration loaded", "no configuration")):
            print(f"  {note}")
    for warning in report.warnings:
        print(f"  warning: {warning}")
    for tip in report.suggestions:
        print(f"  suggestion: {tip}")
    for name in ("report", "log", "audit", "plan"):
        if name in report.paths:
            print(f"  {name}: {report.paths[name]}")


# -- connections for the maintenance commands -------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """The instance a maintenance command works on."""

    client: Any
    key: str  #: ``job.instance_key``: what its sync state and outbox entries are keyed by
    shown: str  #: its URL as a message may show it
    embedded: bool  #: the embedded instance, started by this command


@contextmanager
def _client(args: argparse.Namespace, *, writes_records: bool = False) -> Iterator[_Target]:
    """The instance the command's ``--instance``, configuration or ``SERVICENOW_INSTANCE``
    names (else the embedded one). ``writes_records``: the command writes CMDB records outside
    a load (outbox replay, rollback), so the remembered state is marked unsealed first
    (``StateStore.mark_writing``): the next load then lists everything since its watermark
    instead of trusting what it remembers."""
    from snowkit import paths
    from snowkit.cmdb.job import EMBEDDED, connect, default_instance, instance_key
    from snowkit.cmdb.state import StateStore
    from snowkit.ops.logging import configure_logging

    config = load_config(args.config_file, args.environment)  # ConfigurationError: the caller
    instance = args.instance or default_instance(config)
    # request logs go to the log file; the terminal gets the command's own answer
    configure_logging(file_path=paths.logs_dir() / "snowkit.jsonl", console=False)
    connection = connect(instance, config=config)
    try:
        key = instance_key(instance, connection)
        if writes_records:
            with StateStore() as store:
                store.mark_writing(key)
        shown = getattr(connection.client, "instance_url", instance)
        yield _Target(connection.client, key, shown, instance == EMBEDDED)
    finally:
        connection.close()


def _setup(args: argparse.Namespace) -> int:
    from snowkit.cmdb.schema import SchemaNotReadyError, check_schema, ensure_schema
    from snowkit.ops.errors import ConfigurationError

    try:
        with _client(args) as target:
            client = target.client
            status = check_schema(client) if args.check else ensure_schema(client)
    except ConfigurationError as exc:
        return _config_refused("setup", args, exc)
    except SchemaNotReadyError as exc:
        _err(str(exc))
        return EXIT_FAILED
    except Exception as exc:
        _err(f"setup failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
    else:
        for table, element in status.created:
            print(f"created {table}.{element}")
        for table, element in status.present:
            print(f"present {table}.{element}")
        if status.missing:
            print(status.admin_instructions())
    return EXIT_OK if status.ok else EXIT_FAILED


def _outbox_show(args: argparse.Namespace) -> int:
    from snowkit.cmdb.outbox import Outbox

    with Outbox() as outbox:
        entries = outbox.entries() if args.all else outbox.pending()
        summary = outbox.summary()
        breakdown = outbox.breakdown()
    if args.json:
        print(
            json.dumps(
                {
                    "summary": summary,
                    "pending_by_op": breakdown,
                    "entries": [e.to_dict() for e in entries],
                }
            )
        )
        return EXIT_OK
    print(
        f"outbox {outbox.path}: " + (", ".join(f"{k} {v}" for k, v in summary.items()) or "empty")
    )
    for line in _breakdown_lines(breakdown):
        print(line)
    for e in entries:
        key = e.source_id or e.payload.get("parent_source_id", "")
        print(f"  {e.seq:>6} {e.status:<8} {e.op:<7} {e.table:<22} {key}  run {e.run_id}")
    return EXIT_OK


def _breakdown_lines(breakdown: dict[str, dict[str, int]]) -> list[str]:
    """What the pending entries are: one entry per record write (create/update) and one per
    relationship (relate), so N records with M links queue N + M entries, not duplicates."""
    if not breakdown:
        return []
    total = sum(sum(per.values()) for per in breakdown.values())
    lines = [
        f"pending {total}: one entry per record write and one per relationship "
        "(each waiting write is queued once, however often a load is retried)"
    ]
    for op, per_table in breakdown.items():
        tables = ", ".join(f"{table} {n}" for table, n in per_table.items())
        lines.append(f"  {op} {sum(per_table.values())}: {tables}")
    return lines


def _open_audit() -> AuditTrail:
    """The audit trail, recovered from a torn last line (a crash) with a warning, like a load."""
    from snowkit.ops.audit import AuditTrail

    audit = AuditTrail(recover=True)
    if audit.recovered is not None:
        _err(
            f"warning: the audit trail ended with a half-written line (a crash); it was moved "
            f"to {audit.recovered} as evidence and the chain continues"
        )
    return audit


def _outbox_replay(args: argparse.Namespace) -> int:
    from snowkit.cmdb.intents import IntentJournal
    from snowkit.cmdb.outbox import Outbox
    from snowkit.cmdb.schema import SchemaNotReadyError
    from snowkit.ops.errors import ConfigurationError

    with Outbox() as everything, IntentJournal() as intents:
        nothing_to_send = not everything.count() and not intents.count()
    if nothing_to_send:
        try:  # checked even then (with something to send, `_client` loads it)
            load_config(args.config_file, args.environment)
        except ConfigurationError as exc:
            return _config_refused("outbox replay", args, exc)
        print("the outbox is empty")
        return EXIT_OK
    try:
        with (
            _client(args, writes_records=True) as target,
            Outbox(instance=target.key) as outbox,
            IntentJournal() as intents,
            _open_audit() as audit,
        ):
            client = target.client
            found, result = _replay_checked(client, target, outbox, intents, audit)
            elsewhere = outbox.elsewhere()
    except ConfigurationError as exc:
        return _config_refused("outbox replay", args, exc)
    except SchemaNotReadyError as exc:
        _err(f"replay not started: {exc}")
        return EXIT_FAILED
    except Exception as exc:
        _err(f"replay failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    if found.total:
        _err(found.message())
    for key, n in elsewhere.items():
        named = _as_instance_argument(key)
        _err(
            f"{n} write(s) queued for {named} stay queued: replay them with "
            f"`snowkit outbox replay --instance {named}`"
        )
    if args.json:
        print(json.dumps({**result.to_dict(), "intents": found.to_dict()}, indent=2))
    else:
        print(
            f"sent {result.sent} (created {result.created}, updated {result.updated}, "
            f"already there {result.resolved_existing}, links {result.related}); "
            f"failed {len(result.failed)}; still queued {result.remaining}"
        )
        for failure in result.failed:
            print(f"  failed #{failure['seq']} {failure['op']} {failure['table']}: "
                  f"{failure['error']}")  # fmt: skip
        for item in result.unresolved:
            print(f"  #{item['seq']} {item['source_id']}: {item['field']} left empty "
                  f"({item['target']} not found; the next load fills it in)")  # fmt: skip
    if result.stopped:
        _err(f"{result.stopped}; run `snowkit outbox replay` again when it is back")
        return EXIT_QUEUED
    return EXIT_PARTIAL if result.failed else EXIT_OK


def _replay_checked(
    client: Any, target: _Target, outbox: Any, intents: Any, audit: Any
) -> tuple[Any, Any]:
    """(reconciled intents, replay result): the schema checked first, as a load does (a
    missing source-id field is ignored by the instance, and a replay would then take any
    record for the one a queued create looks up); the instance still down keeps it all."""
    from snowkit.cmdb.intents import ReconcileResult, reconcile_intents
    from snowkit.cmdb.outbox import ReplayResult, is_unreachable_error
    from snowkit.cmdb.schema import ensure_schema

    try:
        ensure_schema(client, create=target.embedded)
    except Exception as exc:
        if not is_unreachable_error(exc):
            raise
        left = outbox.count()
        stopped = f"instance unreachable ({type(exc).__name__}); {left} write(s) stay queued"
        return ReconcileResult(), ReplayResult(remaining=left, stopped=stopped)
    # first what a killed run or replay committed but never audited
    found = reconcile_intents(client, intents, audit)
    return found, outbox.replay(client, audit=audit, intents=intents)


def _as_instance_argument(key: str) -> str:
    """An instance key (``job.instance_key``) as ``--instance`` takes it."""
    return "embedded" if key.startswith("embedded:") else key


def _instance_of_run(run_id: str) -> str | None:
    """The instance key a run's report names (None: no report, or one from before reports
    named it)."""
    from snowkit import paths

    if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith("."):
        return None
    try:
        report = json.loads((paths.runs_dir() / run_id / "report.json").read_text())
    except (OSError, ValueError):
        return None
    key = report.get("instance_key") if isinstance(report, dict) else None
    return str(key) if key else None


def _record_name(item: dict[str, Any]) -> str:
    return f"{item['table']}/{item['sys_id']} ({item.get('source_id') or 'no source id'})"


def _rollback(args: argparse.Namespace) -> int:
    from snowkit.cmdb.intents import IntentJournal, reconcile_intents
    from snowkit.cmdb.rollback import NothingToRollBackError, rollback
    from snowkit.ops.errors import ConfigurationError

    try:
        with (
            IntentJournal() as intents,
            _client(args, writes_records=True) as target,
            _open_audit() as audit,
        ):
            client = target.client
            loaded = _instance_of_run(args.run_id)
            if loaded is not None and loaded != target.key:
                named = _as_instance_argument(loaded)
                _err(
                    f"run {args.run_id} loaded {named}, not {target.shown}: rollback not "
                    f"started; run `snowkit rollback {args.run_id} --instance {named}`"
                )
                return EXIT_FAILED
            # a batch in flight when a run died is in the journal, not yet in the audit trail
            found = reconcile_intents(client, intents, audit)
            if found.total:
                _err(found.message())
            if found.stopped:
                _err(f"rollback not started: {found.stopped}; run it again when it is back")
                return EXIT_FAILED
            result = rollback(client, args.run_id, audit=audit, force=args.force)
    except ConfigurationError as exc:
        return _config_refused("rollback", args, exc)
    except NothingToRollBackError as exc:
        _err(str(exc))
        return EXIT_FAILED
    except Exception as exc:
        _err(f"rollback failed: {type(exc).__name__}: {exc}; it is safe to run it again")
        return EXIT_FAILED
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(
            f"rolled back run {result.run_id}: deleted {result.deleted}, restored "
            f"{result.restored}, recreated {result.recreated}, already undone {result.skipped}"
        )
        for failure in result.failed:
            print(f"  failed {failure['action']} {failure['table']}/{failure['sys_id']}: "
                  f"{failure['error']}")  # fmt: skip
        for item in result.unrestorable:
            print(f"  not restorable {_record_name(item)}: {item['why']}")
        for item in result.conflicts:
            fields = ", ".join(item["fields"])
            print(f"  changed since the run, left as it is: {_record_name(item)}: {fields}")
        for note in result.notes:
            print(f"  {note}")
    if result.conflicts:
        _err(
            f"{len(result.conflicts)} record(s) changed since run {result.run_id} were left as "
            "they are; roll back the later runs first (newest first), or rerun with --force "
            "to put them back anyway (their later changes are lost)"
        )
    return EXIT_OK if result.ok else EXIT_PARTIAL
