"""`snowkit run NOTEBOOK` and `snowkit reports list`: a thin front over snowkit.reports.

Exit codes for schedulers: 0 the notebook ran, 1 it failed (the HTML report still shows the
error), 2 usage error (missing notebook, bad or secret-looking parameter, unknown kernel).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from snowkit.cli import positive_float, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``run`` and ``reports`` to the ``snowkit`` command."""
    run_parser = subparsers.add_parser(
        "run",
        help="run a notebook with papermill and write a report folder",
        description="Execute NOTEBOOK and write reports/<notebook>/<date>/<run_id>/ with the "
        "executed notebook, report.html (no code), figures/*.png and run.json. "
        "Never pass secrets as parameters: configure credentials instead.",
    )
    run_parser.add_argument("notebook", type=Path, help="path to an .ipynb notebook")
    run_parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a parameter; VALUE typed like papermill: True/False/None, int, float, else str",
    )
    run_parser.add_argument(
        "-y",
        "--yaml",
        metavar="YAML",
        help="parameters as a YAML mapping (for lists and dicts), e.g. -y 'sites: [a, b]'",
    )
    run_parser.add_argument("--kernel", help="Jupyter kernel name (default: the notebook's)")
    run_parser.add_argument("--timeout", type=positive_float, help="per-cell timeout in seconds")
    run_parser.add_argument(
        "--reports-dir",
        type=Path,
        help="where run folders go (default: $SNOWKIT_REPORTS or reports/)",
    )
    run_parser.add_argument("--run-id", help="use this run id instead of a generated one")
    run_parser.set_defaults(func=_run)

    reports = subparsers.add_parser("reports", help="past notebook runs")
    reports_sub = reports.add_subparsers(dest="reports_command", metavar="COMMAND")
    list_parser = reports_sub.add_parser("list", help="list runs, newest first")
    list_parser.add_argument("--notebook", help="only runs of this notebook (stem or file name)")
    list_parser.add_argument(
        "--reports-dir", type=Path, help="default: $SNOWKIT_REPORTS or reports/"
    )
    list_parser.add_argument("--limit", type=positive_int, help="at most this many runs")
    list_parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    list_parser.set_defaults(func=_list)
    reports.set_defaults(func=lambda _args: reports.print_help() or 2)


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    from snowkit.reports import RunUsageError, resolve_parameter

    params: dict[str, Any] = {}
    if args.yaml:
        import yaml
        from papermill.iorw import NoDatesSafeLoader  # dates stay strings, as with papermill -y

        try:
            loaded = yaml.load(args.yaml, Loader=NoDatesSafeLoader)  # a SafeLoader subclass
        except yaml.YAMLError as exc:
            raise RunUsageError(f"-y is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise RunUsageError("-y must be a YAML mapping of parameter names to values")
        params.update(loaded)
    for name, value in args.parameter:
        params[name] = resolve_parameter(value)
    return params


def _run(args: argparse.Namespace) -> int:
    from snowkit.reports import EXIT_USAGE, RunUsageError, run

    try:
        result = run(
            args.notebook,
            _parameters(args),
            kernel=args.kernel,
            timeout=args.timeout,
            reports_dir=args.reports_dir,
            run_id=args.run_id,
        )
    except RunUsageError as exc:
        print(f"snowkit run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if result.ok:
        print(f"ok: {result.html}")
    else:
        error = result.error
        where = (
            f" in cell {error.cell_index + 1} of {args.notebook} (counting from 1)"
            if error and error.cell_index is not None
            else ""
        )
        what = f"{error.ename}: {error.evalue}" if error else "unknown error"
        print(f"failed{where}: {what}", file=sys.stderr)
        print(f"report: {result.html}", file=sys.stderr)
    return result.exit_code


def _list(args: argparse.Namespace) -> int:
    from snowkit.reports import list_runs

    entries = list_runs(args.reports_dir, notebook=args.notebook, limit=args.limit)
    if args.json:
        for entry in entries:
            print(json.dumps(entry.to_dict()))
        return 0
    if not entries:
        print("no runs yet; start one with `snowkit run notebooks/<name>.ipynb`")
        return 0
    header = f"{'notebook':<24} {'date':<10} {'run_id':<24} {'status':<10} {'duration':>9}"
    print(header)
    for e in entries:
        duration = f"{e.duration_s:.1f}s" if isinstance(e.duration_s, int | float) else "-"
        print(f"{e.notebook:<24} {e.date:<10} {e.run_id:<24} {e.status:<10} {duration:>9}")
    return 0
