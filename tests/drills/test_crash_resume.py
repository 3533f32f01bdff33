"""Crash and resume: ``kill -9`` the loader at random points; the rerun converges exactly.

The loader is the real command, ``snowkit load --instance URL``, in a subprocess against an
embedded instance this test starts (credentials from ``SERVICENOW_USERNAME`` /
``SERVICENOW_PASSWORD``, the sandbox CA through ``REQUESTS_CA_BUNDLE``, state under the test's
``SNOWKIT_HOME``). A kill point is a number of CMDB rows the test waits to see in the store
(0: during start-up and planning), so kills land all through the write phases; a few ms of
injected latency per request keeps the window wide enough to hit.

After every kill the audit trail must still verify up to its last complete entry (an unsealed
tail is expected: the writer had no chance to seal it); after the final, undisturbed run the
CMDB equals the lab's transform exactly, the trail verifies strictly, every create is audited
once and the outbox holds nothing. Rows a killed run wrote but never audited (killed between
the commit and the audit line) are counted and reported.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from snowkit import paths
from snowkit.cmdb.apply import CrashSimulation
from snowkit.cmdb.job import run_load
from snowkit.cmdb.outbox import Outbox
from snowkit.ops.audit import AuditTrail, read_audit, verify_audit
from snowkit.sandbox import Sandbox
from snowkit.unifi import LabConfig

LAB = LabConfig(sites=2, devices_per_site=5, clients_per_site=40, seed=7)
SID = "u_unifi_source_id"
RUN_TIMEOUT_S = 120.0


def loader_env(sb: Sandbox, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICENOW_", "SNOWKIT_"))}
    env.update(
        SNOWKIT_HOME=str(home),
        SERVICENOW_USERNAME="admin",
        SERVICENOW_PASSWORD=sb.users["admin"],
        REQUESTS_CA_BUNDLE=str(sb.ca_path),
        PYTHONUNBUFFERED="1",
    )
    return env


def loader_cmd(sb: Sandbox) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snowkit.cli",
        "load",
        "--instance",
        sb.url,
        "--json",
        "--lab-sites",
        str(LAB.sites),
        "--lab-devices",
        str(LAB.devices_per_site),
        "--lab-clients",
        str(LAB.clients_per_site),
        "--lab-seed",
        str(LAB.seed),
        "--batch-size",
        "10",
        "--workers",
        "2",
    ]


def rows_written(sb: Sandbox) -> int:
    store = sb.store
    return (
        store.count("cmdb_ci", f"{SID}ISNOTEMPTY")
        + store.count("cmn_location", f"{SID}ISNOTEMPTY")
        + store.count("cmdb_rel_ci", "")
    )


def kill_at(drill: Any, sb: Sandbox, env: dict[str, str], target: int, delay: float) -> str:
    """Start the loader, SIGKILL it once ``target`` rows exist (after ``delay`` s when 0)."""
    proc = subprocess.Popen(
        loader_cmd(sb),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    with drill.reaped(proc):
        deadline = time.monotonic() + RUN_TIMEOUT_S
        started = time.monotonic()
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return "finished before the kill point"
            if (target == 0 and time.monotonic() - started >= delay) or (
                target and rows_written(sb) >= target
            ):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                return f"killed at {rows_written(sb)} rows"
            time.sleep(0.002)
        raise AssertionError("the loader neither reached the kill point nor finished")


def final_run(sb: Sandbox, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        loader_cmd(sb), env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    return json.loads(done.stdout)


def crash_trial(drill: Any, home: Path, rng: random.Random, kills: int) -> dict[str, Any]:
    os.environ["SNOWKIT_HOME"] = str(home)  # monkeypatched per test; the verifiers read it
    with Sandbox.start() as sb:
        drill.setup_schema(sb)
        _inventory, result = drill.lab_result(sb, LAB)
        total = len(result.records) + len(result.relationships)
        sb.set_faults({"latency_ms": 8})
        env = loader_env(sb, home)
        outcomes, half_lines = [], 0
        for _ in range(kills):
            target = rng.randrange(total)
            outcomes.append(kill_at(drill, sb, env, target, rng.uniform(0.0, 0.8)))
            if paths.audit_path().exists():
                after_kill = verify_audit(paths.audit_path(), allow_unsealed_tail=True)
                half_lines += after_kill.problem == "incomplete_last_line"
                assert after_kill.ok or after_kill.problem == "incomplete_last_line", (
                    after_kill.message
                )
        rows_before_final = rows_written(sb)
        sb.set_faults(None)
        report = final_run(sb, env)
        assert report["status"] == "success", report.get("message")
        diff = drill.compare(sb.store, result)
        assert diff.exact, diff.summary()
        held = {
            row["sys_id"]
            for table in ("cmdb_ci", "cmn_location", "cmdb_rel_ci", "core_company")
            for row in sb.store.list(table, "", limit=-1)[0]
        }

    check = verify_audit(paths.audit_path())
    assert check.ok, check.message
    entries = list(read_audit())
    creates = collections.Counter(
        e["source_id"] for e in entries if e["action"] == "create" and e.get("source_id")
    )
    assert not creates or max(creates.values()) == 1, "a record audited as created twice"
    assert all(e["sys_id"] in held for e in entries if e["action"] == "create")
    unaudited = len(result.records) - len(creates)
    assert unaudited == 0, f"{unaudited} records the killed runs created are not in the audit trail"
    with Outbox() as box:
        assert box.count() == 0 and box.count("failed") == 0, box.summary()
    return {
        "kills": outcomes,
        "rows_before_final_run": rows_before_final,
        "expected_rows": total,
        "final_created": report["applied"]["created"],
        "unaudited_records_from_killed_runs": unaudited,
        "audit_half_lines_after_kill": half_lines,
        "audit_entries": check.entries,
    }


def run_trials(drill: Any, tmp_path: Path, trials: int, max_kills: int, seed: int) -> None:
    rng = random.Random(seed)
    figures = []
    for trial in range(trials):
        kills = rng.randint(1, max_kills)
        figures.append(crash_trial(drill, tmp_path / f"trial-{trial}", rng, kills))
    drill.figures(
        "crash_resume",
        variant="long" if drill.long else "fast",
        trials=trials,
        kills=sum(len(f["kills"]) for f in figures),
        kills_before_end=sum(1 for f in figures for k in f["kills"] if k.startswith("killed")),
        converged=trials,
        unaudited_records_from_killed_runs=sum(
            f["unaudited_records_from_killed_runs"] for f in figures
        ),
        audit_half_lines_after_kill=sum(f["audit_half_lines_after_kill"] for f in figures),
        rows_before_final_run=[f["rows_before_final_run"] for f in figures],
        expected_rows=figures[0]["expected_rows"],
    )


def replay_cmd(sb: Sandbox) -> list[str]:
    return [sys.executable, "-m", "snowkit.cli", "outbox", "replay", "--instance", sb.url]


def wait_accepting(sb: Sandbox, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sb.accepting:
            return
        time.sleep(0.02)
    raise AssertionError("the sandbox did not reopen its socket")


def replay_crash_trial(drill: Any, home: Path, rng: random.Random) -> dict[str, Any]:
    """Queue the whole load during an outage, then kill the outbox replay half-way."""
    os.environ["SNOWKIT_HOME"] = str(home)
    with Sandbox.start() as sb:
        drill.setup_schema(sb)
        _inventory, result = drill.lab_result(sb, LAB)
        total = len(result.records) + len(result.relationships)
        env = loader_env(sb, home)
        sb.set_faults({"outage": {"after_seconds": 0, "duration_seconds": 3600}})
        queued = subprocess.run(
            loader_cmd(sb), env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        )
        assert queued.returncode == 4, (queued.returncode, queued.stderr[-2000:])
        with Outbox() as box:
            pending = box.count()
        assert pending > 0
        sb.set_faults({"latency_ms": 8})  # heal, keep the replay slow enough to hit
        wait_accepting(sb)
        target = rng.randrange(1, total)
        proc = subprocess.Popen(
            replay_cmd(sb),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with drill.reaped(proc):
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while time.monotonic() < deadline and proc.poll() is None:
                if rows_written(sb) >= target:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.002)
        killed_at = rows_written(sb)
        sb.set_faults(None)
        again = subprocess.run(
            replay_cmd(sb), env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        )
        assert again.returncode == 0, (again.returncode, again.stdout[-2000:], again.stderr)
        report = final_run(sb, env)
        assert report["status"] == "success", report.get("message")
        diff = drill.compare(sb.store, result)
        assert diff.exact, diff.summary()
    check = verify_audit(paths.audit_path())
    assert check.ok, check.message
    creates = collections.Counter(
        e["source_id"] for e in read_audit() if e["action"] == "create" and e.get("source_id")
    )
    assert max(creates.values()) == 1, "a record audited as created twice"
    with Outbox() as box:
        assert box.count() == 0 and box.count("failed") == 0, box.summary()
    return {"queued": pending, "killed_at_rows": killed_at, "expected_rows": total}


def run_replay_trials(drill: Any, tmp_path: Path, trials: int, seed: int) -> None:
    rng = random.Random(seed)
    figures = [replay_crash_trial(drill, tmp_path / f"r{t}", rng) for t in range(trials)]
    drill.figures(
        "crash_during_replay",
        variant="long" if drill.long else "fast",
        trials=trials,
        converged=trials,
        queued=[f["queued"] for f in figures],
        killed_at_rows=[f["killed_at_rows"] for f in figures],
        expected_rows=figures[0]["expected_rows"],
    )


def test_crash_during_outbox_replay_fast(
    drill: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNOWKIT_HOME", str(tmp_path))
    run_replay_trials(drill, tmp_path, trials=1, seed=8)


@pytest.mark.drill
def test_crash_during_outbox_replay_long(
    drill: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNOWKIT_HOME", str(tmp_path))
    run_replay_trials(drill, tmp_path, trials=6, seed=2027)


def test_crash_resume_fast(drill: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNOWKIT_HOME", str(tmp_path))
    run_trials(drill, tmp_path, trials=3, max_kills=1, seed=5)


@pytest.mark.drill
def test_crash_resume_long(drill: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNOWKIT_HOME", str(tmp_path))
    run_trials(drill, tmp_path, trials=20, max_kills=3, seed=2026)


def test_a_write_committed_just_before_a_crash_is_still_audited(
    drill: Any, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic version of the kill that lands between the commit and the audit line."""
    inventory, result = drill.lab_result(
        sandbox, LabConfig(sites=1, devices_per_site=3, clients_per_site=10, seed=4)
    )
    real = {name: getattr(AuditTrail, name) for name in ("record", "record_many")}

    def die_on_first_audit(self: AuditTrail, *args: Any, **kw: Any) -> Any:
        raise CrashSimulation("the process dies after the batch committed, before auditing")

    for name in real:
        monkeypatch.setattr(AuditTrail, name, die_on_first_audit)
    crashed = run_load(
        sandbox=sandbox,
        inventory=inventory,
        progress=False,
        batch_size=5,
        workers=1,
        client_options={"sleep": drill.no_sleep},
    )
    assert crashed.status == "failed"
    for name, method in real.items():
        monkeypatch.setattr(AuditTrail, name, method)
    rerun = run_load(
        sandbox=sandbox,
        inventory=inventory,
        progress=False,
        client_options={"sleep": drill.no_sleep},
    )
    assert rerun.status == "success", rerun.message
    assert drill.compare(sandbox.store, result).exact

    audited = {e["sys_id"] for e in read_audit() if e["action"] in ("create", "adopt")}
    held = {
        row["sys_id"]
        for table in ("cmdb_ci", "cmn_location")
        for row in sandbox.store.list(table, "u_unifi_source_idISNOTEMPTY", limit=-1)[0]
    }
    assert held - audited == set(), f"{len(held - audited)} record(s) in the CMDB never audited"


def test_a_torn_audit_line_does_not_block_the_next_load(drill: Any, sandbox: Sandbox) -> None:
    """A power cut can leave half a line (the writer fsyncs, the disk may not finish it)."""
    inventory, result = drill.lab_result(
        sandbox, LabConfig(sites=1, devices_per_site=3, clients_per_site=6, seed=4)
    )
    options = {"sleep": drill.no_sleep}
    first = run_load(sandbox=sandbox, inventory=inventory, progress=False, client_options=options)
    assert first.status == "success", first.message
    with open(paths.audit_path(), "ab") as handle:
        handle.write(b'{"seq":9999,"action":"crea')  # the torn tail
    sandbox.store.delete(
        "cmn_location", sandbox.store.list("cmn_location", "", limit=1)[0][0]["sys_id"]
    )
    again = run_load(sandbox=sandbox, inventory=inventory, progress=False, client_options=options)
    if again.status == "success":  # recovered by itself: the evidence is kept, the trail sound
        assert list(paths.audit_path().parent.glob("*.incomplete-*"))
        assert verify_audit(paths.audit_path()).ok
        assert drill.compare(sandbox.store, result).exact
    else:  # or it says which snowkit command recovers, not a Python call
        assert "recover" in again.message and "AuditTrail(" not in again.message, again.message
