"""Run every benchmark script in this folder, one after the other.

``python -m benchmarks`` runs the full versions (minutes); ``--quick`` runs the smoke versions
that the test suite also uses so the harness cannot rot. Each script prints its own table of
ratios against a baseline measured in the same run; this runner only sequences them and
reports which failed. Scripts run as subprocesses so one benchmark's memory high-water mark
never pollutes another's RSS figures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover(only: list[str] | None = None) -> list[Path]:
    scripts = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_"))
    if only:
        wanted = set(only)
        scripts = [p for p in scripts if p.stem in wanted]
        missing = wanted - {p.stem for p in scripts}
        if missing:
            raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(missing))}")
    return scripts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke-sized runs (seconds)")
    parser.add_argument("names", nargs="*", help="benchmark script names (default: all)")
    args = parser.parse_args(argv)
    failures: list[str] = []
    for script in discover(args.names):
        cmd = [sys.executable, str(script), *(["--quick"] if args.quick else [])]
        print(f"\n=== {script.stem} ({'quick' if args.quick else 'full'}) ===", flush=True)
        started = time.perf_counter()
        result = subprocess.run(cmd, cwd=HERE.parent, check=False)
        elapsed = time.perf_counter() - started
        print(f"--- {script.stem}: exit {result.returncode} in {elapsed:.1f} s", flush=True)
        if result.returncode != 0:
            failures.append(script.stem)
    if failures:
        print(f"\nfailed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
