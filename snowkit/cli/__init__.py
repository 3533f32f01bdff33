"""The `snowkit` command: a thin argparse front over the library.

Each command group lives in its own module exposing ``register(subparsers)``; the parser sets
``func`` (returning an exit code) on the namespace. Keeping groups apart lets each part of the
library own its command without a central switchboard.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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
    _apply_configured_home(args)
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `snowkit ... | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return 141
    except Exception as exc:
        # a local file (outbox, intent journal, sync state) is unreadable: the message names
        # it and says what to do (matched by name: importing snowkit.cmdb here costs start-up)
        message = _local_problem(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


#: the SNOWKIT_HOME this process took from a configuration (a later command may change it)
_configured_home: str | None = None


def _apply_configured_home(args: argparse.Namespace) -> None:
    """A configuration's ``state_dir`` moves the state tree unless ``SNOWKIT_HOME`` already does.

    Set for the whole process (and the notebook kernels it starts) before the command runs, so
    every command, including ``audit`` and ``run``, finds the state the loads wrote. Only looked
    at when a configuration is named; the command itself reports a configuration's problems. A
    relative ``state_dir`` in a file is taken from the file's folder, as a scheduler running in
    another folder must find the same state.
    """
    global _configured_home
    from snowkit import paths

    current = os.environ.get(paths.HOME_ENV)
    if current and current != _configured_home:
        return  # the user's own SNOWKIT_HOME
    if _configured_home is not None and current == _configured_home:
        del os.environ[paths.HOME_ENV]  # an earlier command's configuration: not this one's
        _configured_home = None
    config_file = getattr(args, "config_file", None)
    environment = getattr(args, "environment", None)
    named = ("SNOWKIT_CONFIG", "BEAST_ENVIRONMENT")
    if not (config_file or environment or any(os.environ.get(name) for name in named)):
        return
    from snowkit.cli.load import load_config
    from snowkit.ops.errors import ConfigurationError

    try:
        config = load_config(config_file, environment)
    except ConfigurationError:
        return
    if config is None or not config.state_dir:
        return
    home = Path(config.state_dir).expanduser()
    source = config_file or os.environ.get("SNOWKIT_CONFIG")
    if not home.is_absolute() and source and not os.environ.get("SNOWKIT_STATE_DIR"):
        home = Path(source).expanduser().resolve().parent / home
    _configured_home = os.environ[paths.HOME_ENV] = str(home.resolve())


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0 (a timeout of 0, -5 or nan had failed every
    health check of a healthy instance)."""
    return _float(text, lambda v: math.isfinite(v) and v > 0, "a number above 0")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a number of at least 0 (nan refused)."""
    return _float(text, lambda v: v >= 0, "0 or more")


def _float(text: str, accept: Callable[[float], bool], need: str) -> float:
    """``text`` as a number ``accept`` takes, else the argparse error saying what is needed."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not accept(value):
        raise argparse.ArgumentTypeError(f"must be {need}, not {text}")
    return value


def _local_problem(exc: BaseException) -> str | None:
    """What to tell a user whose local state cannot be read or written (None: not that)."""
    if type(exc).__name__ == "LocalStoreError":
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in _NOT_WRITABLE and exc.filename:
        from snowkit import paths

        home = paths.state_dir()
        where = Path(str(exc.filename))
        if where == home or home in where.parents:
            return (
                f"snowkit cannot write its state under {home} ({exc.strerror}): point "
                f"{paths.HOME_ENV} at a writable directory (without it, the state goes to "
                "./.snowkit of the directory you run in)"
            )
    return None


_NOT_WRITABLE = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}
)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
