"""`snowkit demo`: the whole kit on the embedded default, end to end, in one command.

Runs the notebooks load → health_check → error_analysis → operations_report through
``snowkit.reports.run`` (what ``snowkit run`` does), each against the embedded instance and the
bundled UniFi lab, and prints where the HTML reports are. Nothing outside the machine is
contacted. Exit 0 when every notebook ran, 1 when one failed (its report shows the error),
2 on usage errors.

All notebooks share one state folder (``$SNOWKIT_HOME`` or ``./.snowkit``, resolved by the
runner and handed to the kernels), so the later notebooks analyse what the load just did, and
``snowkit audit verify`` / ``snowkit reports list`` see the same files afterwards.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from snowkit.cli import positive_float

#: The demo's notebooks, in the order they run.
DEMO_NOTEBOOKS: tuple[str, ...] = ("load", "health_check", "error_analysis", "operations_report")
DRILL_NOTEBOOK = "chaos_drill"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the ``snowkit`` command."""
    parser = subparsers.add_parser(
        "demo",
        help="run the notebooks end to end on the embedded instance and print the reports",
        description="Load the bundled UniFi lab into the embedded ServiceNow instance and run "
        "the load, health_check, error_analysis and operations_report notebooks through the "
        "report runner. Offline; nothing to configure. Exit 0 ok, 1 a notebook failed.",
    )
    parser.add_argument(
        "--reports-dir",
        type=Path,
        help="where report folders go (default: $SNOWKIT_REPORTS or reports/)",
    )
    parser.add_argument(
        "--notebooks-dir",
        type=Path,
        help="where the notebooks are (default: notebooks/ here or in the source tree)",
    )
    parser.add_argument("--lab-sites", type=_positive, default=3, help="lab: number of sites")
    parser.add_argument(
        "--lab-devices", type=_positive, default=8, help="lab: network devices per site"
    )
    parser.add_argument(
        "--lab-clients", type=_non_negative, default=30, help="lab: clients per site"
    )
    parser.add_argument("--lab-seed", type=int, default=7, help="lab: generator seed")
    parser.add_argument(
        "--drill", action="store_true", help="also run the chaos drill notebook at the end"
    )
    parser.add_argument("--kernel", help="Jupyter kernel (default: the notebooks' python3)")
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=300.0,
        help="per-cell timeout in seconds (default 300)",
    )
    parser.set_defaults(func=run_demo)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def find_notebooks(explicit: Path | None = None) -> Path:
    """The notebooks folder: the argument, else ``./notebooks``, else the source tree's."""
    candidates = (
        [explicit]
        if explicit
        else [Path.cwd() / "notebooks", Path(__file__).resolve().parents[2] / "notebooks"]
    )
    for folder in candidates:
        if folder is not None and all(
            (folder / f"{name}.ipynb").is_file() for name in DEMO_NOTEBOOKS
        ):
            return folder.resolve()
    looked = ", ".join(str(c) for c in candidates if c is not None)
    raise FileNotFoundError(
        f"the demo notebooks ({', '.join(DEMO_NOTEBOOKS)}) are not in {looked}; run the demo "
        "from the snowkit source tree or pass --notebooks-dir"
    )


def demo_parameters(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """What each notebook runs with: the embedded instance, the lab size from the options."""
    lab = {
        "lab_sites": args.lab_sites,
        "lab_devices_per_site": args.lab_devices,
        "lab_clients_per_site": args.lab_clients,
    }
    return {
        "load": {"instance": "embedded", **lab, "lab_seed": args.lab_seed},
        "health_check": {"instance": "embedded"},
        "error_analysis": {"instance": "embedded"},
        "operations_report": {"instance": "embedded"},
        DRILL_NOTEBOOK: {"instance": "embedded", "seed": args.lab_seed},
    }


def run_demo(args: argparse.Namespace, *, out: Callable[[str], None] = print) -> int:
    """Run the demo notebooks in order; see the module docstring for exit codes."""
    from snowkit import paths
    from snowkit.reports import EXIT_FAILED, EXIT_OK, EXIT_USAGE, RunUsageError, run

    try:
        folder = find_notebooks(args.notebooks_dir)
    except FileNotFoundError as exc:
        print(f"snowkit demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    reports_dir = (args.reports_dir or paths.reports_dir()).resolve()
    names = [*DEMO_NOTEBOOKS, *([DRILL_NOTEBOOK] if args.drill else [])]
    parameters = demo_parameters(args)

    out(f"snowkit demo: embedded ServiceNow instance + UniFi lab ({args.lab_sites} sites)")
    out(f"  state:   {paths.state_dir()}  (the instance's data: sandbox/sandbox.sqlite3)")
    out(f"  reports: {reports_dir}")
    results = []
    for name in names:
        out(f"running {name} ...")
        try:
            result = run(
                folder / f"{name}.ipynb",
                parameters[name],
                kernel=args.kernel,
                timeout=args.timeout,
                reports_dir=reports_dir,
            )
        except RunUsageError as exc:
            print(f"snowkit demo: {name}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        results.append((name, result))
        if result.ok:
            out(f"  ok      {name:<18} {result.duration_s:6.1f}s  {result.html}")
        else:
            error = result.error
            what = f"{error.ename}: {error.evalue}" if error else "unknown error"
            out(f"  FAILED  {name:<18} {result.duration_s:6.1f}s  {what}")
            out(f"          report: {result.html}")

    failed = [(name, r) for name, r in results if not r.ok]
    out("")
    out("HTML reports (open in a browser):")
    for name, result in results:
        out(f"  {name:<18} {result.html}")
    out("More: `snowkit reports list`, `snowkit audit verify`, `make lab` for JupyterLab.")
    if failed:
        for name, result in failed:
            print(f"snowkit demo: {name} failed; see {result.html}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
