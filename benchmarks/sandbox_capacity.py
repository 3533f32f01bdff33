"""Capacity of the embedded instance: list GETs/s and single-record inserts/s from N clients.

Goal (issue 2): with no injected latency, >= 1,000 list GETs/s and >= 500 inserts/s from 8
concurrent clients on a 2-core machine, so the sandbox is never the bottleneck of a load test.
Clients run in separate processes so they do not share the server's GIL: by default each is a
keep-alive requests.Session over HTTPS (like pysnc and snowkit's client); ``--lean`` uses bare
http.client connections, whose much lower client CPU shows the server's own capacity when the
clients share the machine's two cores with it.

    .venv/bin/python benchmarks/sandbox_capacity.py                   # 10 s per phase
    .venv/bin/python benchmarks/sandbox_capacity.py --quick           # 2 s per phase
    .venv/bin/python benchmarks/sandbox_capacity.py --quick --lean    # lean clients
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing as mp
import os
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests


@dataclass
class PhaseResult:
    name: str
    clients: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    server_cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def server_cpu_ms(self) -> float:
        """Server-process CPU time per request: the sandbox's own cost, free of client noise."""
        return self.server_cpu_seconds * 1000 / self.requests if self.requests else 0.0

    def row(self) -> str:
        lat = sorted(self.latencies_ms) or [0.0]
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (
            f"| {self.name:<22} | {self.clients:>7} | {self.requests:>8} | {self.errors:>6} "
            f"| {self.rate:>9.0f} | {p50:>6.2f} | {p99:>6.2f} | {self.server_cpu_ms:>13.3f} |"
        )


LIST_PATH = "/api/now/table/incident?sysparm_limit=10&sysparm_query=active%3Dtrue%5EORDERBYnumber"
INSERT_PATH = "/api/now/table/incident"

Send = Callable[[str, str, bytes | None], tuple[int, bool]]


def _requests_sender(url: str, password: str, ca_path: str | None) -> Send:
    """requests.Session, as pysnc and snowkit's client use it."""
    session = requests.Session()
    session.trust_env = False
    session.auth = ("admin", password)
    session.verify = ca_path or True
    session.headers["Accept"] = "application/json"

    def send(method: str, path: str, body: bytes | None) -> tuple[int, bool]:
        headers = {"Content-Type": "application/json"} if body else {}
        response = session.request(method, url + path, data=body, headers=headers)
        return response.status_code, "X-Total-Count" in response.headers

    return send


def _lean_sender(url: str, password: str, ca_path: str | None) -> Send:
    """A bare keep-alive http.client connection: far less client CPU, so the server shows."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=ca_path)
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, context=context
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port)
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    base = {"Authorization": f"Basic {token}", "Accept": "application/json"}

    def send(method: str, path: str, body: bytes | None) -> tuple[int, bool]:
        headers = {**base, "Content-Type": "application/json"} if body else base
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("X-Total-Count") is not None

    return send


def _client(
    args: tuple[str, str, str | None, str, bool, float, float],
) -> tuple[int, int, list[float]]:
    """One client process: loop the operation from ``start_at`` for ``duration`` seconds."""
    url, password, ca_path, operation, lean, start_at, duration = args
    send = (_lean_sender if lean else _requests_sender)(url, password, ca_path)
    ok = errors = 0
    latencies: list[float] = []
    counter = 0
    pid = os.getpid()
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = start_at + duration
    while time.time() < deadline:
        began = time.perf_counter()
        if operation == "list":
            status, counted = send("GET", LIST_PATH, None)
            good = status == 200 and counted
        else:
            counter += 1
            body = json.dumps({"short_description": f"bench {pid}-{counter}", "priority": "3"})
            status, _ = send("POST", INSERT_PATH, body.encode())
            good = status == 201
        latencies.append((time.perf_counter() - began) * 1000)
        if good:
            ok += 1
        else:
            errors += 1
    return ok, errors, latencies


def _warm_up(_: int) -> int:
    return os.getpid()


def run_phase(
    sb: Any, pool: Any, operation: str, clients: int, duration: float, lean: bool
) -> PhaseResult:
    start_at = time.time() + 0.5  # every worker is already running; start them together
    ca_path = str(sb.ca_path) if sb.ca_path else None
    args = [(sb.url, sb.users["admin"], ca_path, operation, lean, start_at, duration)] * clients
    cpu_before = time.process_time()
    results = pool.map(_client, args, chunksize=1)
    server_cpu = time.process_time() - cpu_before
    name = "list GET (10 rows)" if operation == "list" else "insert (1 record)"
    return PhaseResult(
        name=name,
        clients=clients,
        requests=sum(r[0] for r in results),
        errors=sum(r[1] for r in results),
        seconds=duration,
        latencies_ms=[lat for r in results for lat in r[2]],
        server_cpu_seconds=server_cpu,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s per phase instead of 10 s")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=None, help="duration of each phase")
    parser.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS")
    parser.add_argument(
        "--lean",
        action="store_true",
        help="clients use bare http.client keep-alive connections instead of requests",
    )
    parser.add_argument("--db", default=":memory:", help="SQLite file or :memory: (default)")
    args = parser.parse_args(argv)
    duration = args.seconds or (2.0 if args.quick else 10.0)

    from snowkit.sandbox import Sandbox  # not at module level: spawned workers skip it

    with (
        tempfile.TemporaryDirectory() as state,
        Sandbox.start(https=not args.http, db=args.db, state_dir=state) as sb,
        mp.get_context("spawn").Pool(args.clients) as pool,
    ):
        pool.map(_warm_up, range(args.clients * 4))
        session = requests.Session()
        session.trust_env = False
        session.auth = ("admin", sb.users["admin"])
        session.verify = str(sb.ca_path) if sb.ca_path else True
        for i in range(200):  # something to list
            session.post(f"{sb.url}/api/now/table/incident", json={"short_description": f"s{i}"})
        phases = [
            run_phase(sb, pool, op, args.clients, duration, args.lean) for op in ("list", "insert")
        ]

    print(
        f"sandbox capacity: {args.clients} client processes, {duration:.0f} s per phase, "
        f"{'HTTP' if args.http else 'HTTPS'}, keep-alive, "
        f"{'http.client' if args.lean else 'requests'} clients, db={args.db}, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    print(
        "| operation              | clients | requests | errors | per second | p50 ms | p99 ms "
        "| server CPU ms/req |"
    )
    print(
        "|------------------------|--------:|---------:|-------:|-----------:|-------:|-------:"
        "|------------------:|"
    )
    for phase in phases:
        print(phase.row())
    return 0 if all(p.errors == 0 for p in phases) else 1


if __name__ == "__main__":
    sys.exit(main())
