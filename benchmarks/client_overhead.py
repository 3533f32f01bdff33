"""Benchmark: wall time per request of ServiceNowAPIClient vs a bare requests.Session.

Goal: the whole resilience stack (retry → breaker → auth → metrics → log line → error path
checks) costs at most 1.15x the wall time of a bare pooled ``requests.Session`` doing the same
GET against the embedded instance with no injected latency.

Both sides hit the same HTTPS sandbox (started in its own process, so its work does not share
our GIL), the same record, with the same auth and TLS settings and a warm connection pool.
Blocks of N sequential requests alternate (bare, client, client, bare, ...) so drift (CPU
frequency, GC, other load) hits both sides alike. The verdict uses the median over rounds of
the client/bare ratio of each back-to-back pair; per-side medians and this process's CPU time
per request are printed too (CPU is the least noisy view of our own overhead). The client logs
its ``request`` line to a JSON-lines file, as in a real load (console off).

    .venv/bin/python benchmarks/client_overhead.py           # 11 blocks x 300 requests a side
    .venv/bin/python benchmarks/client_overhead.py --quick   # 3 blocks x 60
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

GOAL_RATIO = 1.15


def block(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """(wall, CPU of this process) seconds per call, means over ``n`` sequential calls."""
    gc.collect()
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n, (time.process_time() - start_cpu) / n


@contextlib.contextmanager
def sandbox_process(state_dir: str) -> Iterator[dict]:
    """The embedded instance in its own process, so its CPU does not share our GIL."""
    env = {**os.environ, "SNOWKIT_HOME": state_dir}
    cmd = [
        sys.executable,
        "-m",
        "snowkit.cli",
        "sandbox",
        "serve",
        "--port",
        "0",
        "--db",
        ":memory:",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        yield info
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run")
    parser.add_argument("--blocks", type=int, default=None)
    parser.add_argument("--requests", type=int, default=None, help="requests per block")
    args = parser.parse_args(argv)
    blocks = args.blocks or (3 if args.quick else 11)
    per_block = args.requests or (60 if args.quick else 300)

    from snowkit.credentials import CredentialManager
    from snowkit.ops.logging import configure_logging
    from snowkit.servicenow import ServiceNowAPIClient

    with tempfile.TemporaryDirectory() as tmp, sandbox_process(tmp) as sb:
        configure_logging(level="INFO", file_path=Path(tmp) / "snowkit.jsonl", console=False)
        password = sb["users"]["admin"]
        ca_path = sb["ca_path"]
        credentials = CredentialManager.static(basic=("admin", password))
        client = ServiceNowAPIClient(sb["url"], credentials, verify=ca_path)
        sys_id = client.create("incident", {"short_description": "bench"})["sys_id"]
        params = {"sysparm_display_value": "false", "sysparm_exclude_reference_link": "true"}
        url = f"{sb['url']}/api/now/table/incident/{sys_id}"

        bare = requests.Session()
        bare.auth = ("admin", password)
        bare.headers["Accept"] = "application/json"

        def bare_get() -> object:
            response = bare.get(url, params=params, timeout=(10, 60), verify=ca_path)
            response.raise_for_status()
            return response.json()["result"]

        def client_get() -> object:
            return client.get("incident", sys_id)

        for fn in (bare_get, client_get):  # warm pools, TLS sessions, caches
            block(fn, 30)
        times: dict[str, list[tuple[float, float]]] = {"bare": [], "client": []}
        for i in range(blocks):
            order = (bare_get, client_get) if i % 2 == 0 else (client_get, bare_get)
            for fn in order:
                times["bare" if fn is bare_get else "client"].append(block(fn, per_block))
        client.close()
        bare.close()

    wall = {k: statistics.median(w for w, _ in v) * 1000 for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) * 1000 for k, v in times.items()}
    # Each round ran both sides back to back: the median of the per-round ratios is robust
    # against load that comes and goes on a shared machine.
    ratio = statistics.median(
        c[0] / b[0] for b, c in zip(times["bare"], times["client"], strict=True)
    )
    print(f"blocks={blocks} requests/block={per_block} (alternating, medians of block means;")
    print("sandbox in its own process, HTTPS, keep-alive, no injected latency)")
    print(f"{'side':<28}{'wall ms/req':>12}{'client CPU ms/req':>19}")
    print(f"{'bare requests.Session':<28}{wall['bare']:>12.3f}{cpu['bare']:>19.3f}")
    print(f"{'ServiceNowAPIClient.get':<28}{wall['client']:>12.3f}{cpu['client']:>19.3f}")
    print(
        f"overhead {wall['client'] - wall['bare']:+.3f} ms wall, "
        f"{cpu['client'] - cpu['bare']:+.3f} ms CPU per request; "
        f"median per-round wall ratio {ratio:.3f} (goal <= {GOAL_RATIO})"
    )
    ratios = sorted(c[0] / b[0] for b, c in zip(times["bare"], times["client"], strict=True))
    print("per-round wall ratios: " + " ".join(f"{r:.2f}" for r in ratios))
    print("ok" if ratio <= GOAL_RATIO else "OVER GOAL")
    return 0 if (ratio <= GOAL_RATIO or args.quick) else 1


if __name__ == "__main__":
    sys.exit(main())
