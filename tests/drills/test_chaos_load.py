"""Chaos load: a lab inventory through the embedded instance while it misbehaves.

Faults per HTTP request (the sandbox's fault profile): 10 % answered 500/502/503, 2 % connection
reset, 1 % of successful writes committed and then the connection dropped (an ambiguous write),
and 5 % answered 429 with ``Retry-After``. The sandbox has no "429 share" knob, so the 5 % comes
from its rate-limit rule driven by a request-counting clock: the clock advances one second per
counted request and the rule allows 19 requests per 20-second window, so exactly every 20th
request is throttled with ``Retry-After: 1``.

Claims checked, per seed:
- the final CMDB equals the transform's records and relationships exactly (0 lost,
  0 duplicated, every field and reference right, every relationship present once);
- a run that ends ``partial`` (an item out of attempts) explains every record it did not write,
  loses nothing silently, and the rerun converges (bounded: at most ``MAX_RUNS`` runs);
- the audit trail verifies, and records each created record exactly once;
- ``rollback`` of the load's runs, under the same faults, leaves none of the load's rows, and
  the trail (now holding the rollback too) still verifies.

Back-offs cost no time: the client gets a no-op ``sleep``, a retry policy and a breaker sized
for a 17 % failure rate (8 attempts; open on 10 failures in a row), as an operator would
configure them for such an instance.
"""

from __future__ import annotations

import collections
import itertools
import time
from typing import Any

import pytest

from snowkit import paths
from snowkit.cmdb.job import run_load
from snowkit.cmdb.rollback import NothingToRollBackError, rollback
from snowkit.config import CircuitBreakerConfig, OperationalConfig, RetryConfig
from snowkit.ops.audit import AuditTrail, read_audit, verify_audit
from snowkit.sandbox import Sandbox
from snowkit.unifi import LabConfig

MAX_RUNS = 3
FAULTS: dict[str, Any] = {
    "error_rate": 0.10,
    "reset_rate": 0.02,
    "ambiguous_write_rate": 0.01,
    "rate_limit": {"requests": 19, "window_seconds": 20},
}
FAST_LAB = {"sites": 2, "devices_per_site": 10, "clients_per_site": 130}  # ~280 records
LONG_LAB = {"sites": 10, "devices_per_site": 50, "clients_per_site": 460}  # >= 5,000 records


def counting_clock() -> Any:
    """A sandbox clock that advances one second per call (thread-safe: itertools.count)."""
    ticks = itertools.count()
    return lambda: float(next(ticks))


def chaos_run(drill: Any, seed: int, lab_size: dict[str, int], batch_size: int) -> dict[str, Any]:
    """Load one lab under the fault profile with ``seed``; returns the figures of the drill."""
    # sized for a 17 % failure rate, as an operator would: 8 attempts, and a breaker that
    # opens on 10 failures in a row (at 5, the four workers' and the plan's concurrent reads
    # met a streak often enough to park whole runs in the outbox)
    config = OperationalConfig(
        retry=RetryConfig(max_attempts=8),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=10),
    )
    options = {"sleep": drill.no_sleep, "config": config}
    with Sandbox.start(clock=counting_clock()) as sb:
        drill.setup_schema(sb)
        inventory, result = drill.lab_result(sb, LabConfig(seed=seed, **lab_size))
        sb.set_faults({"seed": seed, **FAULTS})
        started = time.perf_counter()
        reports = []
        for _ in range(MAX_RUNS):
            report = run_load(
                sandbox=sb,
                inventory=inventory,
                progress=False,
                batch_size=batch_size,
                workers=4,
                client_options=options,
            )
            reports.append(report)
            assert report.status in ("success", "partial"), report.message
            diff = drill.compare(sb.store, result)
            assert not diff.duplicated and not diff.links_duplicated, diff.summary()
            explained = {f.source_id for f in report.failures if f.source_id}
            silently_lost = set(diff.lost) - explained
            assert not silently_lost, f"lost without a word: {sorted(silently_lost)[:5]}"
            if report.status == "partial":
                assert report.message, "a partial run says what failed"
            if report.status == "success":
                break
        elapsed = time.perf_counter() - started
        sb.set_faults(None)
        final = drill.compare(sb.store, result)
        assert final.exact, f"seed {seed}: {final.summary()}"
        assert reports[-1].status == "success", reports[-1].message
        check = verify_audit(paths.audit_path())
        assert check.ok, check.message
        creates = collections.Counter(
            e["source_id"]
            for e in read_audit()
            if e["action"] == "create" and e["outcome"] == "success" and e.get("source_id")
        )
        assert set(creates) == {r.source_id for r in result.records}
        assert max(creates.values()) == 1, "a record audited as created twice"
        rollback_s = rollback_under_faults(drill, sb, seed, [r.run_id for r in reports], config)

    def total(group: str, key: str) -> int:
        return sum(int(getattr(r, group).get(key, 0)) for r in reports)

    return {
        "seed": seed,
        "records": final.expected_records,
        "relationships": final.expected_links,
        "runs": len(reports),
        "requests": total("requests", "total"),
        "http_5xx": total("requests", "server_errors"),
        "http_429": total("requests", "rate_limited"),
        "ambiguous_items": total("applied", "ambiguous"),
        "adopted_after_ambiguity": total("applied", "resolved_by_lookup"),
        "lost": len(final.lost),
        "duplicated": len(final.duplicated) + len(final.links_duplicated),
        "links_missing": len(final.links_missing),
        "audit_entries": check.entries,
        "rollback_seconds": rollback_s,
        "seconds": round(elapsed, 2),
        "first_run": reports[0].status,
        "first_run_failures": sorted(
            {f"{f.action} {f.table}: {f.error[:120]}" for f in reports[0].failures}
        )[:3],
    }


def rollback_under_faults(
    drill: Any, sb: Sandbox, seed: int, run_ids: list[str], config: Any
) -> float:
    """Undo the load's runs (newest first) with the faults back on: the CMDB must end empty of
    everything the load wrote, and the audit trail (now with the rollback) must verify."""
    started = time.perf_counter()
    sb.set_faults({"seed": seed + 1000, **FAULTS})
    with drill.admin_client(sb, config=config) as client, AuditTrail() as audit:
        for run_id in reversed(run_ids):
            for _ in range(MAX_RUNS):  # "safe to run twice": a rollback cut short is rerun
                try:
                    if rollback(client, run_id, audit=audit).ok:
                        break
                except NothingToRollBackError:
                    break  # a run that wrote nothing
                except Exception as exc:  # unreachable under faults: rerun it
                    assert type(exc).__name__ in ("NetworkError", "CircuitOpenError"), exc
    sb.set_faults(None)
    for table in ("cmdb_ci", "cmn_location", "cmdb_rel_ci"):
        query = "" if table == "cmdb_rel_ci" else "u_unifi_source_idISNOTEMPTY"
        assert sb.store.count(table, query) == 0, f"rollback left rows in {table}"
    check = verify_audit(paths.audit_path())
    assert check.ok, check.message
    return round(time.perf_counter() - started, 2)


def check_seeds(drill: Any, seeds: list[int], lab_size: dict[str, int], batch: int) -> None:
    figures = [chaos_run(drill, seed, lab_size, batch) for seed in seeds]
    for f in figures:
        drill.figures("chaos_load", variant="long" if drill.long else "fast", **f)
    # the faults really happened (else the drill proves nothing)
    assert sum(f["http_5xx"] for f in figures) > 0
    assert sum(f["http_429"] for f in figures) > 0
    assert sum(f["ambiguous_items"] for f in figures) > 0


def test_chaos_load_fast(drill: Any, snowkit_home: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seeds = [11, 12]
    for seed in seeds:  # one state dir per seed: each audit trail is checked on its own
        monkeypatch.setenv("SNOWKIT_HOME", str(snowkit_home / f"seed-{seed}"))
        check_seeds(drill, [seed], FAST_LAB, batch=10)


@pytest.mark.drill
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_chaos_load_long(drill: Any, seed: int) -> None:
    check_seeds(drill, [seed], LONG_LAB, batch=25)


def test_the_state_comparison_sees_every_kind_of_damage(drill: Any, sandbox: Sandbox) -> None:
    """The drills' yardstick can fail: a duplicate, a lost record, a wrong field, a lost and
    a doubled link are each reported."""
    inventory, result = drill.lab_result(
        sandbox, LabConfig(sites=1, devices_per_site=3, clients_per_site=4, seed=2)
    )
    report = run_load(
        sandbox=sandbox,
        inventory=inventory,
        progress=False,
        client_options={"sleep": drill.no_sleep},
    )
    assert report.status == "success", report.message
    assert drill.compare(sandbox.store, result).exact
    store = sandbox.store
    ci = store.list("cmdb_ci", "u_unifi_source_idISNOTEMPTY", limit=-1)[0]
    first, second = ci[0], ci[1]
    store.insert(
        first["sys_class_name"],
        {**{k: first[k] for k in ("name", "u_unifi_source_id")}},
        user="admin",
    )
    store.delete("cmdb_ci", second["sys_id"])
    store.update("cmdb_ci", ci[2]["sys_id"], {"name": "renamed by hand"}, user="admin")
    link = store.list("cmdb_rel_ci", "", limit=-1)[0][0]
    store.insert("cmdb_rel_ci", {k: link[k] for k in ("parent", "child", "type")}, user="admin")
    diff = drill.compare(store, result)
    assert diff.duplicated == [first["u_unifi_source_id"]]
    assert second["u_unifi_source_id"] in diff.lost
    assert f"{ci[2]['u_unifi_source_id']}.name" in diff.field_mismatches
    assert diff.links_duplicated and not diff.exact


def test_ire_mode_keeps_devices_with_the_same_name_apart(drill: Any, sandbox: Sandbox) -> None:
    """Even without faults: IRE mode must load every record once, like the Table API mode."""
    lab = LabConfig(seed=1, sites=2, devices_per_site=10, clients_per_site=60)
    inventory, result = drill.lab_result(sandbox, lab)
    names = collections.Counter(r.values.get("name") for r in result.records)
    assert max(names.values()) > 1, "the lab has devices sharing a name (the case under test)"
    options = {"sleep": drill.no_sleep}
    first = run_load(
        sandbox=sandbox, inventory=inventory, progress=False, ire=True, client_options=options
    )
    diff = drill.compare(sandbox.store, result)
    assert diff.exact, f"{first.status}: {diff.summary()}"
    second = run_load(
        sandbox=sandbox, inventory=inventory, progress=False, ire=True, client_options=options
    )
    assert second.action_totals()["update"] == 0 and second.status == "success"


def test_damage_between_runs_is_repaired_by_the_next_run(drill: Any, sandbox: Sandbox) -> None:
    """Someone deletes a CI and a link and edits a field on the instance between two loads
    (after a no-change rerun has warmed any local snapshot): the next load repairs all three."""
    lab = LabConfig(sites=2, devices_per_site=4, clients_per_site=10, seed=4)
    inventory, result = drill.lab_result(sandbox, lab)
    options = {"sleep": drill.no_sleep}
    for _ in range(2):
        report = run_load(
            sandbox=sandbox, inventory=inventory, progress=False, client_options=options
        )
        assert report.status == "success", report.message
    store = sandbox.store
    cis = store.list("cmdb_ci", "u_unifi_source_idISNOTEMPTY", limit=-1)[0]
    store.delete("cmdb_ci", cis[0]["sys_id"])
    store.update("cmdb_ci", cis[1]["sys_id"], {"name": "edited by hand"}, user="admin")
    store.delete("cmdb_rel_ci", store.list("cmdb_rel_ci", "", limit=1)[0][0]["sys_id"])
    damaged = drill.compare(store, result)
    assert damaged.lost and damaged.field_mismatches and damaged.links_missing
    repaired = run_load(
        sandbox=sandbox, inventory=inventory, progress=False, client_options=options
    )
    assert repaired.status == "success", repaired.message
    final = drill.compare(store, result)
    assert final.exact, final.summary()
    assert verify_audit(paths.audit_path()).ok
