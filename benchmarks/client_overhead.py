"""Benchmark: wall time per request of ServiceNowAPIClient vs a bare requests.Session.

Goal: the whole resilience stack (retry → breaker → auth → metrics → log line → error path
checks) costs at most 1.15x the wall time of a bare pooled ``requests.Session`` doing the same
GET against the embedded instance with no injected latency.

Both sides hit the same in-process HTTPS sandbox, the same record, with the same auth and TLS
settings and a warm connection pool. Blocks of N sequential requests alternate (bare, client,
bare, client, ...) so drift (CPU frequency, GC, the sandbox's SQLite cache) hits both sides
alike; the figure per side is the median over blocks of the per-request mean. The client logs
its ``request`` line to a JSON-lines file, as in a real load (console off).

    .venv/bin/python benchmarks/client_overhead.py           # 9 blocks x 300 requests a side
    .venv/bin/python benchmarks/client_overhead.py --quick   # 3 blocks x 60
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

GOAL_RATIO = 1.15


def block(fn: Callable[[], object], n: int) -> float:
    """Mean seconds per call over ``n`` sequential calls."""
    gc.collect()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run")
    parser.add_argument("--blocks", type=int, default=None)
    parser.add_argument("--requests", type=int, default=None, help="requests per block")
    args = parser.parse_args(argv)
    blocks = args.blocks or (3 if args.quick else 9)
    per_block = args.requests or (60 if args.quick else 300)

    from snowkit.credentials import CredentialManager
    from snowkit.ops.logging import configure_logging
    from snowkit.sandbox import Sandbox
    from snowkit.servicenow import ServiceNowAPIClient

    with tempfile.TemporaryDirectory() as tmp, Sandbox.start(state_dir=tmp) as sb:
        configure_logging(level="INFO", file_path=Path(tmp) / "snowkit.jsonl", console=False)
        password = sb.users["admin"]
        credentials = CredentialManager.static(basic=("admin", password))
        client = ServiceNowAPIClient(sb.url, credentials, verify=str(sb.ca_path))
        sys_id = client.create("incident", {"short_description": "bench"})["sys_id"]
        params = {"sysparm_display_value": "false", "sysparm_exclude_reference_link": "true"}
        url = f"{sb.url}/api/now/table/incident/{sys_id}"

        bare = requests.Session()
        bare.verify = str(sb.ca_path)
        bare.auth = ("admin", password)
        bare.headers["Accept"] = "application/json"

        def bare_get() -> object:
            response = bare.get(url, params=params, timeout=(10, 60), verify=str(sb.ca_path))
            response.raise_for_status()
            return response.json()["result"]

        def client_get() -> object:
            return client.get("incident", sys_id)

        for fn in (bare_get, client_get):  # warm pools, TLS sessions, caches
            block(fn, 30)
        bare_times: list[float] = []
        client_times: list[float] = []
        for i in range(blocks):
            order = (bare_get, client_get) if i % 2 == 0 else (client_get, bare_get)
            for fn in order:
                (bare_times if fn is bare_get else client_times).append(block(fn, per_block))
        client.close()
        bare.close()

    bare_ms = statistics.median(bare_times) * 1000
    client_ms = statistics.median(client_times) * 1000
    ratio = client_ms / bare_ms
    print(f"blocks={blocks} requests/block={per_block} (alternating, medians of block means)")
    print(f"{'side':<28}{'ms/request':>12}")
    print(f"{'bare requests.Session':<28}{bare_ms:>12.3f}")
    print(f"{'ServiceNowAPIClient.get':<28}{client_ms:>12.3f}")
    print(
        f"overhead {client_ms - bare_ms:+.3f} ms/request; ratio {ratio:.3f} (goal <= {GOAL_RATIO})"
    )
    print("ok" if ratio <= GOAL_RATIO else "OVER GOAL")
    return 0 if (ratio <= GOAL_RATIO or args.quick) else 1


if __name__ == "__main__":
    sys.exit(main())
