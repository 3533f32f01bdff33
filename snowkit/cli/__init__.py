"""The `snowkit` command: a thin argparse front over the library.

Each command group lives in its own module exposing ``register(subparsers)``; the parser sets
``func`` (returning an exit code) on the namespace. Keeping groups apart lets each part of the
library own its command without a central switchboard.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from snowkit import __version__

# Modules under snowkit.cli that contribute commands, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "sandbox",
    "load",
    "health",
    "run",
    "inventory",
    "audit",
    "metrics",
    "config",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snowkit",
        description="Load UniFi inventory into a ServiceNow CMDB, resiliently, and report on it.",
    )
    parser.add_argument("--version", action="version", version=f"snowkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"snowkit.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # a local file (outbox, intent journal, sync state) is unreadable: the message names
        # it and says what to do (matched by name: importing snowkit.cmdb here costs start-up)
        if type(exc).__name__ != "LocalStoreError":
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
