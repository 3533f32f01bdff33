"""Benchmark: collect a lab of 100,000 clients over HTTP from all three APIs and transform it.

Goal (issue 5): <= 20 s and peak RSS <= 500 MB. The lab server runs in this process (one
thread per request), so the RSS figure includes the server: a conservative measure.

    .venv/bin/python benchmarks/unifi_collect.py [--quick] [--clients N]
        [--apis sitemanager,network,integration]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

from werkzeug.serving import WSGIRequestHandler, make_server

from snowkit.cmdb import transform
from snowkit.unifi import (
    IntegrationCollector,
    Inventory,
    LabConfig,
    LastKnownGoodCache,
    NetworkAppCollector,
    SiteManagerCollector,
    generate_lab,
    lab_app,
)


class _Quiet(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real consoles and api.ui.com do

    def log_request(self, *args: object, **kwargs: object) -> None:
        pass


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 clients instead of 100,000")
    parser.add_argument("--clients", type=int, default=None, help="total clients")
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--apis", default="sitemanager,network,integration")
    args = parser.parse_args(argv)
    total = args.clients or (10_000 if args.quick else 100_000)
    config = LabConfig(sites=args.sites, devices_per_site=8, clients_per_site=total // args.sites)
    lab = generate_lab(config)
    app = lab_app(lab, api_key="bench-key", username="bench", password="bench-password")
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    apis = args.apis.split(",")
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = LastKnownGoodCache(Path(cache_dir))
        collectors = {
            "sitemanager": lambda: SiteManagerCollector(
                base + "/sitemanager", "bench-key", cache=cache
            ),
            "network": lambda: NetworkAppCollector(
                base + "/network", "bench", "bench-password", cache=cache
            ),
            "integration": lambda: IntegrationCollector(
                base + "/network", "bench-key", cache=cache
            ),
        }
        started = time.perf_counter()
        cpu_started = time.process_time()
        parts = []
        for name in apis:
            t0 = time.perf_counter()
            with collectors[name]() as collector:
                parts.append(collector.collect())
            timings[f"collect_{name}_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        inventory = Inventory.merge(*parts)
        result = transform(inventory)
        timings["transform_s"] = round(time.perf_counter() - t0, 2)
        elapsed = time.perf_counter() - started
    server.shutdown()
    figures = {
        "clients_in_lab": lab.total_clients,
        "apis": apis,
        "clients_collected": len(inventory.clients),
        "records": len(result.records),
        "relationships": len(result.relationships),
        "quarantined": len(result.quarantined),
        "duplicates": len(result.duplicates),
        **timings,
        "total_s": round(elapsed, 2),
        "cpu_s": round(time.process_time() - cpu_started, 2),  # server + client threads
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "goal": "total_s <= 20 and peak_rss_mb <= 500",
    }
    print(json.dumps(figures, indent=2))
    ok = elapsed <= 20 and figures["peak_rss_mb"] <= 500
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
