"""`snowkit sandbox serve`: run the embedded ServiceNow-compatible instance in the foreground.

On start it prints one JSON line (url, ca_path, users, oauth_client, api_key) so scripts can
connect; Ctrl-C or SIGTERM stops it cleanly. The credentials are local test passwords generated
for this run, printed to stdout only (never logged).
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from types import FrameType

from snowkit import paths


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sandbox", help="the embedded ServiceNow-compatible instance")
    commands = parser.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve the embedded instance in the foreground (Ctrl-C stops it)",
        description="Serve the embedded instance. Prints one JSON line with url, ca_path, "
        "users, oauth_client and api_key on start.",
    )
    serve.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument(
        "--db",
        default=None,
        help="SQLite file (default: <state>/sandbox/sandbox.sqlite3; ':memory:' for none)",
    )
    serve.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS")
    serve.add_argument("--faults", type=Path, default=None, help="fault profile JSON file")
    serve.set_defaults(func=_serve)
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)


def _serve(args: argparse.Namespace) -> int:
    from snowkit.sandbox import Sandbox
    from snowkit.sandbox.server import info_json

    db = args.db or str(paths.ensure_dir(paths.sandbox_dir()) / "sandbox.sqlite3")
    try:
        sandbox = Sandbox.start(
            port=args.port, db=db, https=not args.http, faults=args.faults, host=args.host
        )
    except (OSError, ValueError, sqlite3.Error) as exc:  # sqlite3: --db is not a database
        print(
            f"snowkit sandbox: could not start: {exc}. Pick a free --port (0 chooses one), "
            "check that --db is writable and that --faults is a valid profile (docs/sandbox.md).",
            file=sys.stderr,
        )
        return 1
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, _on_signal)
    try:
        print(info_json(sandbox), flush=True)
        print(f"snowkit sandbox serving at {sandbox.url} (Ctrl-C to stop)", file=sys.stderr)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sandbox.stop()
        print("snowkit sandbox stopped", file=sys.stderr)
    return 0
