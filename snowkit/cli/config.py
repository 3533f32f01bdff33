"""`snowkit config show`: the effective configuration, secrets masked, problems listed."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EX_CONFIG = 78  # sysexits.h: configuration error


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="inspect snowkit's configuration")
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="print the effective configuration (file + environment, secrets masked)",
        description="Print the effective configuration: defaults, the environment's defaults, "
        "the config file and SNOWKIT_* variables, with secrets masked. Exits 78 with every "
        "problem listed when the configuration is invalid.",
    )
    show.add_argument("--config", dest="config_file", metavar="FILE", help="TOML, JSON or YAML")
    show.add_argument(
        "--environment",
        metavar="ENV",
        help="development, testing, staging, production or unknown (default: $BEAST_ENVIRONMENT)",
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of key = value")
    show.set_defaults(func=show_config)

    def _help(_: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=_help)


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(_flatten(value, name + "."))
        else:
            rows.append((name, value))
    return rows


def show_config(args: argparse.Namespace) -> int:
    from snowkit.config import ConfigurationManager
    from snowkit.ops.errors import ConfigurationError

    try:
        config = ConfigurationManager().load_configuration(
            config_file=args.config_file, environment=args.environment
        )
    except ConfigurationError as exc:
        print(f"snowkit: {exc}", file=sys.stderr)
        return EX_CONFIG
    data = config.masked_dict()
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    for name, value in _flatten(data):
        print(f"{name} = {json.dumps(value)}")
    return 0
