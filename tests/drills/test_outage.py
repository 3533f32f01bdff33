"""Outage: the instance goes away in the middle of a load and comes back later.

The sandbox's outage fault closes its listening socket (connection refused) and resets open
connections; the drill starts it from the load's own ``on_batch`` hook after the second batch,
so it always lands mid-write. Then:

- the load stops knocking: after the first batch that cannot reach the instance, no request
  fails but that batch's own retries and, if it was cut off mid-send, one lookup of its
  creates (or the circuit breaker opens first: a ``breaker_state_change`` to ``open`` in the
  run's log), and the run ends ``queued`` with a message naming ``snowkit outbox replay``;
- the writes not sent are in the outbox file (read back through a fresh connection);
- ``snowkit outbox replay`` during the outage keeps them and exits 4 (queued);
- after the window ``snowkit outbox replay`` sends them all (exit 0) and the CMDB equals the
  expected state exactly; the next load writes nothing; the audit trail verifies and holds
  one create per record.

A second, fast case puts the instance into hibernation mid-load (200 answers with an HTML
page): the writes are queued, never taken for successes, and the next run sends them.

The long variant waits out a real 30 s outage. The fast one opens a 60 s window on the
sandbox's clock and, once the queued state is checked (about 1-2 s of real time), moves that
clock past the window, so the end of the outage is deterministic and costs no waiting. The
client's own back-offs use a no-op sleep in both.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from snowkit import paths
from snowkit.cli import main
from snowkit.cmdb.job import run_load
from snowkit.cmdb.outbox import Outbox
from snowkit.ops.audit import read_audit, verify_audit
from snowkit.sandbox import Sandbox
from snowkit.unifi import LabConfig

FAST_LAB = LabConfig(sites=2, devices_per_site=5, clients_per_site=25, seed=21)
LONG_LAB = LabConfig(sites=3, devices_per_site=8, clients_per_site=60, seed=21)


def cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def run_events(run_id: str) -> list[dict[str, Any]]:
    log = paths.runs_dir() / run_id / "log.jsonl"
    events = []
    for line in log.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def stopped_knocking(run_id: str, attempts: int = 3) -> bool:
    """The breaker opened, or the failures stop at one batch's ``attempts`` plus one lookup's
    (a batch cut off mid-send is ambiguous: its creates are looked up once before they are
    queued, and that lookup is what finds the instance gone)."""
    events = run_events(run_id)
    if any(e.get("event") == "breaker_state_change" and e.get("new") == "open" for e in events):
        return True
    failed = [e for e in events if e.get("event") == "request" and e.get("error")]
    return 0 < len(failed) <= 2 * attempts


def wait_until(predicate: Any, timeout: float) -> float:
    """Poll (bounded) until ``predicate()``; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout} s")


class ShiftableClock:
    """Wall time plus an offset the drill can move forward (the sandbox's outage clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def outage_drill(
    drill: Any, monkeypatch: pytest.MonkeyPatch, outage_s: float, *, skip_wait: bool
) -> None:
    clock = ShiftableClock()
    with Sandbox.start(clock=clock) as sb:
        drill.setup_schema(sb)
        inventory, result = drill.lab_result(sb, drill.size(FAST_LAB, LONG_LAB))
        monkeypatch.setenv("SERVICENOW_USERNAME", "admin")
        monkeypatch.setenv("SERVICENOW_PASSWORD", sb.users["admin"])
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sb.ca_path))

        def start_outage(done: int) -> None:
            if done == 2:
                sb.set_faults({"outage": {"after_seconds": 0, "duration_seconds": outage_s}})
                wait_until(lambda: not sb.accepting, 5)

        report = run_load(
            sandbox=sb,
            inventory=inventory,
            progress=False,
            batch_size=10,
            workers=1,
            on_batch=start_outage,
            client_options={"sleep": drill.no_sleep},
        )
        down_at = time.monotonic()
        assert report.status == "queued", report.message
        assert "snowkit outbox replay" in report.message
        assert stopped_knocking(report.run_id), "the load kept sending to a dead instance"
        with Outbox() as box:  # a fresh connection: the queue is on disk
            queued = box.count()
            assert queued == report.outbox["pending"] > 0
        landed_before = len(result.records) - len(drill.compare(sb.store, result).lost)

        assert not sb.accepting, "the outage ended before the drill could check the queue"
        code, _out, err = cli(["outbox", "replay", "--instance", sb.url])
        assert code == 4, err  # still down: the replay keeps everything queued
        assert "outbox replay" in err
        with Outbox() as box:
            assert box.count() == queued

        if skip_wait:
            clock.offset += outage_s
        wait_until(lambda: sb.accepting, outage_s + 15)
        back_at = time.monotonic()
        sb.set_faults(None)
        code, out, err = cli(["outbox", "replay", "--instance", sb.url, "--json"])
        replayed_at = time.monotonic()
        assert code == 0, (out, err)
        replay = json.loads(out)
        assert replay["remaining"] == 0 and not replay["failed"], replay
        final = drill.compare(sb.store, result)
        assert final.exact, final.summary()

        again = run_load(sandbox=sb, inventory=inventory, progress=False)
        assert again.status == "success", again.message
        assert again.applied["batches"] == 0 and again.action_totals()["create"] == 0

    check = verify_audit(paths.audit_path())
    assert check.ok, check.message
    creates = collections.Counter(
        e["source_id"] for e in read_audit() if e["action"] == "create" and e.get("source_id")
    )
    assert set(creates) == {r.source_id for r in result.records}
    assert max(creates.values()) == 1
    drill.figures(
        "outage",
        variant="long" if drill.long else "fast",
        outage_window_seconds=outage_s,
        clock_jumped=skip_wait,
        records=len(result.records),
        relationships=final.expected_links,
        landed_before_outage=landed_before,
        queued_in_outbox=queued,
        replayed=replay["sent"],
        lost=len(final.lost),
        duplicated=len(final.duplicated) + len(final.links_duplicated),
        seconds_down_observed=round(back_at - down_at, 2),
        replay_seconds_after_recovery=round(replayed_at - back_at, 2),
        audit_entries=check.entries,
    )


def test_outage_fast(drill: Any, monkeypatch: pytest.MonkeyPatch, snowkit_home: Path) -> None:
    outage_drill(drill, monkeypatch, outage_s=60.0, skip_wait=True)


@pytest.mark.drill
def test_outage_long(drill: Any, monkeypatch: pytest.MonkeyPatch, snowkit_home: Path) -> None:
    outage_drill(drill, monkeypatch, outage_s=30.0, skip_wait=False)


def test_hibernation_mid_load_queues_then_the_next_run_replays(
    drill: Any, sandbox: Sandbox
) -> None:
    """A developer instance that goes to sleep mid-load answers 200 with an HTML page: the
    writes must be queued (not taken for successes), and the next run must send them."""
    inventory, result = drill.lab_result(sandbox, FAST_LAB)

    def hibernate(done: int) -> None:
        if done == 2:
            sandbox.set_faults({"hibernating": True})

    options = {"sleep": drill.no_sleep}
    asleep = run_load(
        sandbox=sandbox,
        inventory=inventory,
        progress=False,
        batch_size=10,
        workers=1,
        on_batch=hibernate,
        client_options=options,
    )
    assert asleep.status == "queued", asleep.message
    assert "hibernat" in asleep.message and "snowkit outbox replay" in asleep.message
    assert asleep.outbox["pending"] > 0
    sandbox.set_faults(None)
    awake = run_load(sandbox=sandbox, inventory=inventory, progress=False, client_options=options)
    assert awake.status == "success", awake.message
    assert awake.outbox["pending"] == 0
    final = drill.compare(sandbox.store, result)
    assert final.exact, final.summary()
    assert verify_audit(paths.audit_path()).ok
