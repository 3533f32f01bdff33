"""`snowkit health [--instance URL|embedded] [--json]`: can we reach the instance and log in?

Runs the HealthMonitor checks (ServiceNow connectivity through ``client.ping()``, credential
availability, system resources) and prints a table, or the ``application/health+json``
document with ``--json``. Exit code: 0 pass, 1 warn, 2 fail, so cron and CI can act on it.
``embedded`` starts the embedded instance in memory for the duration of the check.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from snowkit.cli import positive_float
from snowkit.cli.load import instance_argument

if TYPE_CHECKING:
    from snowkit.ops.health import HealthCheck

EXIT_CODES = {"pass": 0, "warn": 1, "fail": 2}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "health",
        help="check the ServiceNow instance, the credentials and this machine",
        description="Run the health checks and print a table (or application/health+json with "
        "--json). Exit 0 when all pass, 1 when one warns, 2 when one fails.",
    )
    parser.add_argument(
        "--instance",
        metavar="URL|embedded",
        type=instance_argument,
        help="instance URL, or 'embedded' for the built-in instance "
        "(default: servicenow.instance from the configuration, else SERVICENOW_INSTANCE)",
    )
    parser.add_argument("--json", action="store_true", help="print application/health+json")
    parser.add_argument("--config", dest="config_file", metavar="FILE", help="config file")
    parser.add_argument("--environment", metavar="ENV", help="default: $BEAST_ENVIRONMENT")
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=15.0,
        help="seconds each check may take (default 15)",
    )
    parser.set_defaults(func=run_health)


def run_health(args: argparse.Namespace) -> int:
    # Imports stay inside the functions so `snowkit --help` does not load the ops layer.
    from snowkit.cmdb.job import default_instance
    from snowkit.ops.health import HealthMonitor
    from snowkit.ops.metrics import MetricsCollector

    _quiet_console_logging()
    try:
        config = _load_config(args)
    except Exception as exc:  # a ConfigurationError: report it as a failed check
        return _report({"configuration": _failed("configuration", str(exc))}, args.json)
    instance = args.instance or default_instance(config)  # as `snowkit load` picks it
    if config is None:
        from snowkit.config import OperationalConfig

        config = OperationalConfig()
    metrics = MetricsCollector()
    with _connect(instance, config, metrics) as (client, credentials, problem):
        if problem is not None:
            checks = {"servicenow": _failed("servicenow", problem)}
            monitor = HealthMonitor(credentials=credentials, metrics=metrics)
            checks.update(monitor.run_all_checks_sync(timeout_seconds=args.timeout))
        else:
            monitor = HealthMonitor(client=client, credentials=credentials, metrics=metrics)
            checks = monitor.run_all_checks_sync(timeout_seconds=args.timeout)
    return _report(checks, args.json)


def _quiet_console_logging() -> None:
    """Keep the table readable: log lines go to the log file only."""
    from snowkit import paths
    from snowkit.ops.logging import configure_logging

    configure_logging(level="INFO", file_path=paths.logs_dir() / "snowkit.jsonl", console=False)


def _load_config(args: argparse.Namespace) -> Any:
    """The configuration by ``snowkit load``'s rule: loaded when one is named (and then it must
    load), else None (the built-in defaults). Before, any instance but the embedded one demanded
    an environment even where ``snowkit load`` ran on the defaults."""
    from snowkit.cli.load import load_config
    from snowkit.config import OperationalConfig
    from snowkit.ops.errors import ConfigurationError

    try:
        config = load_config(args.config_file, args.environment)
    except ConfigurationError:
        # The embedded instance needs no configuration; anything else must be explicit.
        if not args.config_file and _targets_embedded(args.instance):
            return OperationalConfig()
        raise
    return config


def _targets_embedded(instance: str | None) -> bool:
    """``--instance embedded``, or no instance named anywhere (the kit's default target)."""
    if instance is not None:
        return instance == "embedded"
    named = ("SERVICENOW_INSTANCE", "SNOWKIT_SERVICENOW__INSTANCE", "SNOWKIT_CONFIG")
    return not any(os.environ.get(name) for name in named)


@contextlib.contextmanager
def _connect(instance: str, config: Any, metrics: Any) -> Iterator[tuple[Any, Any, str | None]]:
    """(client, credentials, problem): problem is a message when no client could be built."""
    from snowkit.credentials import CredentialManager
    from snowkit.servicenow import ServiceNowAPIClient
    from snowkit.servicenow.transport import display_url

    if instance == "embedded":
        from snowkit.sandbox import Sandbox

        with Sandbox.start(https=True) as sandbox:
            credentials = CredentialManager.static(
                basic=("admin", sandbox.users["admin"]), instance_url=sandbox.url
            )
            with ServiceNowAPIClient(
                sandbox.url, credentials, config, metrics=metrics, verify=str(sandbox.ca_path)
            ) as client:
                yield client, credentials, None
        return
    credentials = CredentialManager(config)
    try:
        client = ServiceNowAPIClient(
            instance, credentials, config, metrics=metrics, verify=credentials.verify_setting()
        )
    except Exception as exc:  # bad URL, missing CA bundle, unusable credentials
        # never echo the raw argument: it may carry user:password@ or an api key in a query
        yield None, credentials, f"cannot connect to {display_url(instance)}: {exc}"
        return
    with client:
        yield client, credentials, None


def _failed(name: str, message: str) -> HealthCheck:
    """A failed check for something that went wrong before the checks could run."""
    from snowkit.ops.health import HealthCheck, HealthStatus

    return HealthCheck(name=name, status=HealthStatus.UNHEALTHY, message=message)


def _report(checks: Mapping[str, HealthCheck], as_json: bool) -> int:
    """Print the checks (table or health+json) and return the exit code for their status."""
    from snowkit.ops.health import to_health_json

    document = to_health_json(dict(checks))
    if as_json:
        print(json.dumps(document, indent=2, default=str))
    else:
        print(render_table(checks, document["status"]))
    return EXIT_CODES.get(document["status"], 2)


def render_table(checks: Mapping[str, HealthCheck], overall: str) -> str:
    """A fixed-width table: check, status, response time, message (wrapped at 100 columns)."""
    from snowkit.ops.redaction import redact_text

    rows = [("CHECK", "STATUS", "TIME", "MESSAGE")]
    for name, check in checks.items():
        took = f"{check.response_time_ms:.0f} ms" if check.response_time_ms is not None else ""
        rows.append((name, check.status.health_json, took, redact_text(check.message)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    indent = " " * (sum(widths) + 6)
    for row in rows:
        head = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3]))
        first, *rest = row[3].splitlines() or [""]
        lines.append(f"{head}  {first}".rstrip())
        lines.extend(f"{indent}{more.strip()}" for more in rest if more.strip())
    lines.append("")
    lines.append(f"overall: {overall}")
    return "\n".join(lines)
