"""RunReport: what one load did, as JSON (``report.json``) and as pandas frames.

The report is the contract between the loader and everything that watches it (CLI ``--json``,
notebooks, ``snowkit.analysis``): counts per class and action, success rates, timings per
phase, relationship linking, data quality, failures item by item and concrete suggestions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snowkit.cmdb.plan import ACTIONS
from snowkit.ops.redaction import redact

if TYPE_CHECKING:  # a load never needs pandas: only the frames do (see ``frames``)
    import pandas as pd

STATUSES = ("success", "partial", "queued", "failed", "dry_run")


@dataclass
class ItemFailure:
    """One write that did not happen (or whose outcome could not be settled)."""

    source_id: str | None
    table: str
    action: str
    error: str
    status_code: int | None = None
    sys_id: str | None = None


@dataclass
class RelationshipStats:
    """How linking went: ``rate`` = (created + existing) / (wanted + dropped).

    ``dropped``: links the inventory implies whose end the transform quarantined; they are not
    wanted from the CMDB but count against the rate (they had vanished, with the rate at 100 %).
    """

    wanted: int = 0
    created: int = 0
    existing: int = 0
    orphans: int = 0
    failed: int = 0
    queued: int = 0
    not_attempted: int = 0  #: left unsent after a 403 stopped the run
    dropped: int = 0
    orphan_examples: list[str] = field(default_factory=list)
    dropped_examples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        total = self.wanted + self.dropped
        return 1.0 if total == 0 else (self.created + self.existing) / total

    def note_dropped(self, specs: Sequence[Any]) -> None:
        self.dropped = len(specs)
        self.dropped_examples = [
            f"{s.parent_source_id} -> {s.child_source_id} ({s.type_name})" for s in specs[:10]
        ]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rate"] = round(self.rate, 4)
        return data


@dataclass
class Mismatch:
    """A field that reads back different from what was written."""

    source_id: str
    table: str
    field: str
    expected: str
    actual: str | None


@dataclass
class RunReport:
    """The outcome of one load run."""

    run_id: str
    status: str = "success"
    message: str = ""
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished: str | None = None
    duration_s: float = 0.0
    dry_run: bool = False
    ire: bool = False
    instance: str | None = None
    #: what the run's sync state and outbox entries are keyed by (``job.instance_key``):
    #: ``snowkit rollback`` checks it names the instance it is about to change
    instance_key: str | None = None
    source: str | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # table → action → n
    applied: dict[str, int] = field(default_factory=dict)  # created/updated/failed/queued...
    timings: dict[str, float] = field(default_factory=dict)  # phase → seconds
    relationships: RelationshipStats = field(default_factory=RelationshipStats)
    failures: list[ItemFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fallbacks: dict[str, str] = field(default_factory=dict)  # class table → table used
    verification: dict[str, Any] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)
    data_quality: dict[str, Any] = field(default_factory=dict)
    stale_data: list[str] = field(default_factory=list)
    ire_operations: dict[str, int] = field(default_factory=dict)
    outbox: dict[str, Any] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    suggestions: list[str] = field(default_factory=list)
    slow_operations: list[dict[str, Any]] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)

    # -- derived ---------------------------------------------------------------------------
    def action_totals(self) -> dict[str, int]:
        """Planned records per action, over every table."""
        totals = dict.fromkeys(ACTIONS, 0)
        for per_action in self.counts.values():
            for action, n in per_action.items():
                totals[action] = totals.get(action, 0) + n
        return totals

    @property
    def success_rate(self) -> float:
        """Share of the writes a run set out to make that landed (1.0 when nothing needed
        writing). A write queued in the outbox has not landed: a run that queued half its
        writes had shown 100 %, and one stopped by a 403 99.8 % (its unsent writes uncounted)."""
        landed = sum(self.applied.get(k, 0) for k in ("created", "updated", "retired"))
        missed = sum(self.applied.get(k, 0) for k in ("failed", "queued", "not_attempted"))
        total = landed + missed
        return 1.0 if total == 0 else landed / total

    def finish(self, status: str | None = None, *, clock_s: float | None = None) -> None:
        """Stamp the end time and (optionally) the final status."""
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"unknown run status {status!r}")
            self.status = status
        now = datetime.now(UTC)
        self.finished = now.isoformat()
        if clock_s is not None:
            self.duration_s = round(clock_s, 3)
        else:
            started = datetime.fromisoformat(self.started)
            self.duration_s = round((now - started).total_seconds(), 3)

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["relationships"] = self.relationships.to_dict()
        data["totals"] = self.action_totals()
        # a dry run set out to write nothing: no rate (it had read as 100 %)
        data["success_rate"] = None if self.dry_run else round(self.success_rate, 4)

        return redact(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str)

    def write(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, path: Path | str) -> dict[str, Any]:
        """A written report as plain data."""
        return json.loads(Path(path).read_text(encoding="utf-8"))

    def frames(self) -> dict[str, pd.DataFrame]:
        """``counts`` (table, action, n), ``failures``, ``timings``, ``mismatches``."""
        import pandas as pd

        counts = pd.DataFrame(
            [
                {"table": table, "action": action, "count": n}
                for table, per_action in sorted(self.counts.items())
                for action, n in per_action.items()
            ],
            columns=["table", "action", "count"],
        )
        failures = pd.DataFrame(
            [asdict(f) for f in self.failures],
            columns=["source_id", "table", "action", "error", "status_code", "sys_id"],
        )
        timings = pd.DataFrame(
            [{"phase": k, "seconds": v} for k, v in self.timings.items()],
            columns=["phase", "seconds"],
        )
        mismatches = pd.DataFrame(
            [asdict(m) for m in self.mismatches],
            columns=["source_id", "table", "field", "expected", "actual"],
        )
        return {
            "counts": counts,
            "failures": failures,
            "timings": timings,
            "mismatches": mismatches,
        }

    def summary_line(self) -> str:
        """One human line: status, counts per action, where the report lives."""
        totals = self.action_totals()
        parts = ", ".join(f"{k} {v}" for k, v in totals.items() if v)
        rel = self.relationships
        line = (
            f"run {self.run_id}: {self.status} in {self.duration_s:.1f}s — {parts or 'nothing'}; "
            f"relationships {rel.created} created, {rel.existing} existing, "
            f"{rel.orphans} orphans"
        )
        if self.message:
            line += f". {self.message}"
        return line


def suggestions_from(
    *,
    rate_limited: int = 0,
    retries: int = 0,
    server_errors: int = 0,
    ambiguous: int = 0,
    fallbacks: dict[str, str] | None = None,
    p99_ms: float | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
) -> list[str]:
    """Concrete advice for the next run, from what this run met."""
    out: list[str] = []
    if rate_limited:
        out.append(
            f"429s hit {rate_limited} times → lower --workers"
            + (f" (now {workers})" if workers else "")
            + " or raise the instance's REST rate-limit rule for this user"
        )
    if server_errors:
        out.append(
            f"{server_errors} server errors (5xx) → check the instance's node health, "
            "or lower --batch-size to make each request cheaper"
        )
    if ambiguous:
        out.append(
            f"{ambiguous} writes had an unknown outcome (connection dropped after sending); "
            "they were resolved by source-id lookups — check the network path / proxy timeouts"
        )
    if retries and not rate_limited and not server_errors:
        out.append(f"{retries} retries → the network or the instance is unsteady")
    for table, used in (fallbacks or {}).items():
        out.append(
            f"class table {table} is missing (plugin not installed) → records went to {used} "
            f"with sys_class_name={table}; install the plugin or accept the fallback"
        )
    if p99_ms is not None and p99_ms > 5000:
        out.append(
            f"slow requests (p99 {p99_ms:.0f} ms) → lower --batch-size"
            + (f" (now {batch_size})" if batch_size else "")
            + " so each batch finishes well under the 30 s batch quota"
        )
    return out
