"""Benchmark: load 5,000 CIs with relationships: snowkit sync vs pysnc vs requests vs the limit.

The instance is the embedded one in its own process (so its CPU never shares our GIL), with
the issue's fault profile: 50 ms latency + 0-10 ms uniform jitter per request, at most 8
requests in progress. Every contender gets a fresh, empty instance per repetition and writes
the same workload (the lab's records in dependency order, then their ``cmdb_rel_ci`` links):

- **snowkit**: the real job, ``snowkit.cmdb.job.run_load`` (schema check, transform, plan,
  Batch API writes by ``--workers`` threads, relationships, read-back verification);
- **pysnc loop**: ServiceNow's official client as a user writes it: one
  ``GlideRecord.insert()`` per record, sequential, references resolved from earlier inserts;
- **requests loop**: the same loop with one plain ``requests.Session.post`` per record.

The two sequential loops take minutes at 5,000 records x 55 ms, so in full mode they run on a
sample of the same shape (``--sample-cis``) and their time is scaled linearly by the number of
write operations; linearity is checked once by timing the pysnc loop on a sample twice as big.
The theoretical limit is ``cap x operations per request / mean latency``: for snowkit's Batch
API requests of ``--batch-size`` items. Contenders alternate in rotating order; the table shows
medians over ``--reps`` repetitions, and ratios are medians of per-repetition ratios.

    .venv/bin/python benchmarks/load_throughput.py           # 5,000 CIs, 3 repetitions
    .venv/bin/python benchmarks/load_throughput.py --quick   # 30 CIs, 2 ms latency (seconds)

The helpers in the first half (the instance in its own process, the lab workload, the job,
the machine summary, table printing) are shared by rerun_nochange.py, memory_scaling.py and
rate_limited.py, which import this module (their folder is on ``sys.path`` when run as scripts).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests

GOAL_VS_PYSNC = 25.0
GOAL_VS_LIMIT = 0.70
ADMIN = "admin"

# ----------------------------------------------------------------------------------------
# shared harness
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """A running embedded instance in another process."""

    url: str
    ca_path: str
    password: str
    pid: int

    def server_cpu_s(self) -> float:
        """CPU seconds the instance's process has used so far (user + system)."""
        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system


def trust_only_explicit_cas() -> None:
    """requests lets REQUESTS_CA_BUNDLE override ``session.verify`` (which pysnc sets): every
    contender here passes the sandbox CA explicitly, so drop the override for this process."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(name, None)


def quiet_logs() -> None:
    """The lab's werkzeug access log would flood the benchmark's table."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)


@contextlib.contextmanager
def sandbox_process(
    faults: dict[str, Any] | None, state_dir: Path, *, set_up: bool = True
) -> Iterator[Instance]:
    """``snowkit sandbox serve`` (in-memory database) with ``faults``, stopped on exit.

    ``set_up``: as a user's instance is before its first load, the source-id fields exist
    (``snowkit setup``, once per instance, by an admin), so every contender starts from the
    same empty, set-up CMDB and no timing includes their creation."""
    state_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snowkit.cli", "sandbox", "serve", "--db", ":memory:"]
    if faults:
        fault_file = state_dir / "faults.json"
        fault_file.write_text(json.dumps(faults), encoding="utf-8")
        cmd += ["--faults", str(fault_file)]
    env = {**os.environ, "SNOWKIT_HOME": str(state_dir)}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the embedded instance did not start (no start-up line)")
        info = json.loads(line)
        instance = Instance(info["url"], info["ca_path"], info["users"][ADMIN], proc.pid)
        if set_up:
            prepare_schema(instance)
        yield instance
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def lab_config(cis: int, seed: int = 7) -> Any:
    """A lab of about ``cis`` CIs, one site per 500 (10% network gear, 90% clients), no
    defects or duplicates so every contender writes exactly the same records."""
    from snowkit.unifi import LabConfig

    sites = max(1, round(cis / 500))
    per_site = max(2, cis // sites)
    devices = max(1, per_site // 10)
    return LabConfig(
        sites=sites,
        devices_per_site=devices,
        clients_per_site=per_site - devices,
        seed=seed,
        defect_rate=0.0,
        duplicate_rate=0.0,
    )


def collect(cis: int, seed: int = 7) -> Any:
    """The lab's inventory through the real collector (the lab served on loopback)."""
    from snowkit.cmdb.job import collect_inventory

    quiet_logs()
    return collect_inventory("lab", lab=lab_config(cis, seed))


def workload(inventory: Any) -> Any:
    """The transform result: records and relationships every contender writes."""
    from snowkit.cmdb.transform import transform

    return transform(inventory)


def client_for(instance: Instance, **options: Any) -> Any:
    from snowkit.credentials import CredentialManager
    from snowkit.servicenow import ServiceNowAPIClient

    credentials = CredentialManager.static(basic=(ADMIN, instance.password))
    return ServiceNowAPIClient(instance.url, credentials, verify=instance.ca_path, **options)


def prepare_schema(instance: Instance) -> None:
    """Create the source-id fields (what ``snowkit setup`` does), outside any timing."""
    from snowkit.cmdb.schema import ensure_schema

    with client_for(instance) as client:
        ensure_schema(client, create=True)


def run_job(
    instance: Instance, inventory: Any, *, workers: int, batch_size: int, verify: bool = True
) -> Any:
    """The real load job (``run_load``) against ``instance``; returns its RunReport."""
    from snowkit.cmdb.job import run_load
    from snowkit.credentials import CredentialManager

    return run_load(
        instance=instance.url,
        credentials=CredentialManager.static(basic=(ADMIN, instance.password)),
        verify_tls=instance.ca_path,
        setup_schema=True,
        inventory=inventory,
        workers=workers,
        batch_size=batch_size,
        progress=False,
        verify=verify,
    )


def require_success(report: Any, what: str) -> None:
    if report.status != "success":
        raise SystemExit(f"{what}: the load ended {report.status!r}: {report.message}")


def machine_summary() -> str:
    """nproc, CPU model, Python, load average: printed with every table."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {os.cpu_count()} CPUs, {model}, Python {platform.python_version()}, "
        f"load average {load}"
    )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Markdown table (pasted as is into docs/performance.md)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        padded = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("| " + " | ".join(padded) + " |")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@contextlib.contextmanager
def use_home(home: Path) -> Iterator[Path]:
    """Point SNOWKIT_HOME (runs, audit, outbox, sync state, logs) at ``home`` for a while.

    Each load that stands for a first run gets its own, so no state of an earlier repetition
    (the sync state a rerun reads, the audit chain, the outbox) leaks into it.
    """
    from snowkit.ops.logging import configure_logging

    old = os.environ.get("SNOWKIT_HOME")
    os.environ["SNOWKIT_HOME"] = str(home)
    configure_logging(file_path=home / "bench.jsonl", console=False)
    try:
        yield home
    finally:
        if old is None:
            os.environ.pop("SNOWKIT_HOME", None)
        else:
            os.environ["SNOWKIT_HOME"] = old


@contextlib.contextmanager
def snowkit_home() -> Iterator[Path]:
    """A throw-away directory for this benchmark process, also its SNOWKIT_HOME."""
    with tempfile.TemporaryDirectory(prefix="snowkit-bench-") as tmp, use_home(Path(tmp) / "home"):
        yield Path(tmp)


# ----------------------------------------------------------------------------------------
# the sequential per-record contenders
# ----------------------------------------------------------------------------------------


def write_order(records: Sequence[Any]) -> list[Any]:
    """Records so that each comes after the records it references (what a loop must do)."""
    by_sid = {r.source_id: r for r in records}
    ordered: list[Any] = []
    placed: set[str] = set()

    def place(record: Any, stack: frozenset[str]) -> None:
        if record.source_id in placed:
            return
        for target in record.references.values():
            dep = by_sid.get(target)
            if dep is not None and target not in stack:
                place(dep, stack | {record.source_id})
        placed.add(record.source_id)
        ordered.append(record)

    for record in sorted(records, key=lambda r: r.table != "cmn_location"):
        place(record, frozenset())
    return ordered


def record_body(record: Any, sys_ids: dict[str, str]) -> dict[str, str]:
    from snowkit.cmdb.plan import SOURCE_ID_FIELD

    body = dict(record.values)
    for fld, target in record.references.items():
        if target in sys_ids:
            body[fld] = sys_ids[target]
    body[SOURCE_ID_FIELD] = record.source_id
    return body


def relation_types(instance: Instance, names: set[str]) -> dict[str, str]:
    """cmdb_rel_type name -> sys_id (each loop looks them up once, as a user script would)."""
    session = _plain_session(instance)
    out = {}
    for name in sorted(names):
        response = session.get(
            f"{instance.url}/api/now/table/cmdb_rel_type",
            params={"sysparm_query": f"name={name}", "sysparm_fields": "sys_id"},
            timeout=30,
        )
        response.raise_for_status()
        out[name] = response.json()["result"][0]["sys_id"]
    session.close()
    return out


def _plain_session(instance: Instance) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE must not override verify (see docs/sandbox.md)
    session.verify = instance.ca_path
    session.auth = (ADMIN, instance.password)
    session.headers.update({"Accept": "application/json", "Content-Type": "application/json"})
    return session


def requests_loop(instance: Instance, result: Any) -> int:
    """One ``POST`` per record, then one per relationship; returns the writes made."""
    types = relation_types(instance, {r.type_name for r in result.relationships})
    session = _plain_session(instance)
    sys_ids: dict[str, str] = {}
    writes = 0

    def post(table: str, body: dict[str, str]) -> str:
        response = session.post(
            f"{instance.url}/api/now/table/{table}", json=body, timeout=(10, 60)
        )
        response.raise_for_status()
        return response.json()["result"]["sys_id"]

    for record in write_order(result.records):
        sys_ids[record.source_id] = post(record.table, record_body(record, sys_ids))
        writes += 1
    for rel in result.relationships:
        parent, child = sys_ids.get(rel.parent_source_id), sys_ids.get(rel.child_source_id)
        if parent and child:
            post("cmdb_rel_ci", {"parent": parent, "child": child, "type": types[rel.type_name]})
            writes += 1
    session.close()
    return writes


def pysnc_loop(instance: Instance, result: Any) -> int:
    """One ``GlideRecord.insert()`` per record, then one per relationship."""
    from pysnc import ServiceNowClient

    types = relation_types(instance, {r.type_name for r in result.relationships})
    client = ServiceNowClient(instance.url, (ADMIN, instance.password), verify=instance.ca_path)
    client.session.trust_env = False
    sys_ids: dict[str, str] = {}
    writes = 0

    def insert(table: str, body: dict[str, str]) -> str:
        gr = client.GlideRecord(table)
        gr.initialize()
        for name, value in body.items():
            gr.set_value(name, value)
        sys_id = gr.insert()
        if not sys_id:
            raise RuntimeError(f"pysnc insert into {table} returned nothing")
        return str(sys_id)

    for record in write_order(result.records):
        sys_ids[record.source_id] = insert(record.table, record_body(record, sys_ids))
        writes += 1
    for rel in result.relationships:
        parent, child = sys_ids.get(rel.parent_source_id), sys_ids.get(rel.child_source_id)
        if parent and child:
            insert("cmdb_rel_ci", {"parent": parent, "child": child, "type": types[rel.type_name]})
            writes += 1
    client.session.close()
    return writes


# ----------------------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------------------


@dataclass
class Run:
    contender: str
    seconds: float  # wall time of the work itself (full size, scaled for sampled contenders)
    measured_s: float  # wall time actually measured
    writes: int  # write operations actually made
    server_cpu_s: float
    client_cpu_s: float
    timings: dict[str, float]


def instance_home(state: Path, prefix: str) -> Path:
    return state / f"{prefix}-{time.monotonic_ns()}"


def timed(
    instance: Instance, fn: Callable[[], int]
) -> tuple[float, int, float, float]:  # wall, writes, server CPU, client CPU
    cpu0, srv0 = time.process_time(), instance.server_cpu_s()
    start = time.perf_counter()
    writes = fn()
    wall = time.perf_counter() - start
    return wall, writes, instance.server_cpu_s() - srv0, time.process_time() - cpu0


def one_run(
    contender: str,
    faults: dict[str, Any],
    inventory: Any,
    result: Any,
    full_ops: int,
    args: argparse.Namespace,
    state: Path,
) -> Run:
    with sandbox_process(faults, state / f"sb-{contender}-{time.monotonic_ns()}") as instance:
        timings: dict[str, float] = {}
        if contender == "snowkit":
            holder: dict[str, Any] = {}

            def job() -> int:
                report = run_job(
                    instance, inventory, workers=args.workers, batch_size=args.batch_size
                )
                require_success(report, "snowkit")
                holder["report"] = report
                return report.applied["created"] + report.relationships.created

            with use_home(instance_home(state, "home-snowkit")):
                wall, writes, srv, cpu = timed(instance, job)
            timings = dict(holder["report"].timings)
            for slow in holder["report"].slow_operations:
                if slow.get("operation") == "batch":
                    timings["batch_p50_ms"] = float(slow["p50_ms"])
            return Run(contender, wall, wall, writes, srv, cpu, timings)
        loop = pysnc_loop if contender == "pysnc" else requests_loop
        wall, writes, srv, cpu = timed(instance, lambda: loop(instance, result))
        return Run(contender, wall * full_ops / writes, wall, writes, srv, cpu, timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (seconds)")
    parser.add_argument("--cis", type=int, default=None, help="CIs to load (default 5000)")
    parser.add_argument("--sample-cis", type=int, default=None, help="CIs for the loops")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--workers", type=int, default=8, help="snowkit workers (= the cap)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=None)
    parser.add_argument("--jitter-ms", type=float, default=None)
    parser.add_argument("--cap", type=int, default=8, help="the instance's concurrency cap")
    parser.add_argument("--no-linearity", action="store_true", help="skip the linearity check")
    args = parser.parse_args(argv)
    cis = args.cis or (30 if args.quick else 5000)
    sample_cis = args.sample_cis or (cis if args.quick else 250)
    reps = args.reps or (1 if args.quick else 3)
    latency = args.latency_ms if args.latency_ms is not None else (2.0 if args.quick else 50.0)
    jitter = args.jitter_ms if args.jitter_ms is not None else (1.0 if args.quick else 10.0)
    faults = {"latency_ms": latency, "latency_jitter_ms": jitter, "max_concurrency": args.cap}

    trust_only_explicit_cas()
    print(machine_summary(), flush=True)
    with snowkit_home() as state:
        inventory = collect(cis)
        result = workload(inventory)
        sample_inventory = inventory if sample_cis >= cis else collect(sample_cis)
        sample = result if sample_inventory is inventory else workload(sample_inventory)
        full_ops = len(result.records) + len(result.relationships)
        sample_ops = len(sample.records) + len(sample.relationships)
        cis_loaded = sum(1 for r in result.records if r.table != "cmn_location")
        print(
            f"workload: {len(result.records)} records ({cis_loaded} CIs), "
            f"{len(result.relationships)} relationships = {full_ops} writes; "
            f"sequential loops on {len(sample.records)} records + {len(sample.relationships)} "
            f"relationships = {sample_ops} writes, scaled x{full_ops / sample_ops:.2f}",
            flush=True,
        )
        print(
            f"instance faults: {json.dumps(faults)}; snowkit workers={args.workers} "
            f"batch_size={args.batch_size}",
            flush=True,
        )
        contenders = ["snowkit", "pysnc", "requests"]
        runs: dict[str, list[Run]] = {c: [] for c in contenders}
        for rep in range(reps):
            order = contenders[rep % 3 :] + contenders[: rep % 3]
            for name in order:
                inv, res = (inventory, result) if name == "snowkit" else (sample_inventory, sample)
                run = one_run(name, faults, inv, res, full_ops, args, state)
                runs[name].append(run)
                print(
                    f"  rep {rep + 1} {name:<9} {run.measured_s:8.2f} s measured "
                    f"({run.writes} writes) -> {run.seconds:8.2f} s for {full_ops} writes",
                    flush=True,
                )
        linearity = None
        if not args.quick and not args.no_linearity:
            big_inventory = collect(sample_cis * 2, seed=11)
            big = workload(big_inventory)
            run = one_run("pysnc", faults, big_inventory, big, full_ops, args, state)
            per_op_big = run.measured_s / run.writes
            per_op_small = median([r.measured_s / r.writes for r in runs["pysnc"]])
            linearity = (run.writes, per_op_big / per_op_small)
        load_after = os.getloadavg()

    report(runs, full_ops, cis_loaded, faults, args, linearity, sample_ops, load_after)
    return 0


def report(
    runs: dict[str, list[Run]],
    full_ops: int,
    cis: int,
    faults: dict[str, Any],
    args: argparse.Namespace,
    linearity: tuple[int, float] | None,
    sample_ops: int,
    load_after: tuple[float, float, float],
) -> None:
    latency_s = (faults["latency_ms"] + faults["latency_jitter_ms"] / 2) / 1000
    limit_rate = args.cap * args.batch_size / latency_s
    limit_s = full_ops / limit_rate
    snow = runs["snowkit"]
    t = {name: median([r.seconds for r in rs]) for name, rs in runs.items()}
    vs_pysnc = median([p.seconds / s.seconds for s, p in zip(snow, runs["pysnc"], strict=True)])
    vs_requests = median(
        [q.seconds / s.seconds for s, q in zip(snow, runs["requests"], strict=True)]
    )
    vs_limit = median([limit_s / s.seconds for s in snow])
    apply_s = median([s.timings.get("apply_total", float("nan")) for s in snow])
    srv_ms = median([r.server_cpu_s * 1000 / r.writes for r in snow])
    cli_ms = median([r.client_cpu_s * 1000 / r.writes for r in snow])
    print()
    print(
        f"{full_ops} writes ({cis} CIs + locations + relationships); medians of {len(snow)} "
        f"alternating repetitions; load average at the end {load_after[0]:.2f}"
    )
    rows = []
    scaled = " (scaled)" if sample_ops != full_ops else ""
    for name, label in (
        ("snowkit", f"snowkit sync (run_load, {args.workers} workers, batch {args.batch_size})"),
        ("pysnc", "pysnc GlideRecord.insert loop" + scaled),
        ("requests", "requests POST loop" + scaled),
    ):
        rows.append(
            [
                label,
                f"{t[name]:.2f}",
                f"{full_ops / t[name]:.0f}",
                f"{cis / t[name]:.0f}",
                f"{t[name] / t['snowkit']:.1f}x",
            ]
        )
    rows.append(
        [
            "theoretical limit (cap x batch / mean latency)",
            f"{limit_s:.2f}",
            f"{limit_rate:.0f}",
            f"{cis * limit_rate / full_ops:.0f}",
            f"{limit_s / t['snowkit']:.2f}x",
        ]
    )
    print_table(["contender", "time s", "writes/s", "CIs/s", "time vs snowkit"], rows)
    print()

    def verdict(ok: bool) -> str:
        return "(quick mode: not judged)" if args.quick else ("met" if ok else "MISSED")

    print(
        f"snowkit vs pysnc loop:    {vs_pysnc:6.1f}x faster (goal >= {GOAL_VS_PYSNC:.0f}x) "
        f"{verdict(vs_pysnc >= GOAL_VS_PYSNC)}"
    )
    print(f"snowkit vs requests loop: {vs_requests:6.1f}x faster")
    print(
        f"snowkit vs limit:         {vs_limit:6.1%} of the limit (goal >= {GOAL_VS_LIMIT:.0%}) "
        f"{verdict(vs_limit >= GOAL_VS_LIMIT)}"
    )
    print(
        f"  apply phase alone (writes only): {apply_s:.2f} s = {limit_s / apply_s:.1%} of the limit"
    )
    batch_times = [s.timings["batch_p50_ms"] for s in snow if "batch_p50_ms" in s.timings]
    if batch_times:  # only when batch is among the report's slowest operations
        batch_ms = median(batch_times)
        measured_limit_s = full_ops / (args.cap * args.batch_size / (batch_ms / 1000))
        print(
            f"  Batch API requests took {batch_ms:.0f} ms (p50) against {latency_s * 1000:.0f} ms "
            f"injected: the limit at that request time is {measured_limit_s:.2f} s; the apply "
            f"phase reaches {measured_limit_s / apply_s:.0%} of it"
        )
    phases = {
        k: median([s.timings.get(k, 0.0) for s in snow])
        for k in snow[0].timings
        if k != "batch_p50_ms"
    }
    print(
        "  snowkit phases (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items() if v)
    )
    print(
        f"  CPU per write: instance {srv_ms:.2f} ms, snowkit process {cli_ms:.2f} ms "
        f"-> CPU floor on {os.cpu_count()} cores ~ "
        f"{max(srv_ms, (srv_ms + cli_ms) / (os.cpu_count() or 1)) * full_ops / 1000:.2f} s"
    )
    if linearity is not None:
        writes, ratio = linearity
        print(
            f"linearity: pysnc loop per-write time at {writes} writes / at {sample_ops} "
            f"writes = {ratio:.2f} (1.00 = linear)"
        )


if __name__ == "__main__":
    sys.exit(main())
