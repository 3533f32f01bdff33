"""The chaos drill's building blocks: fault profiles from parameters, one breaker and retry
manager shared across loads, a table of phases, and the check that the final state is exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from snowkit import paths

if TYPE_CHECKING:
    from snowkit.cmdb.report import RunReport


def drill_home(name: str = "chaos") -> Path:
    """Where a drill keeps its own state: ``<state>/drills/<name>/`` (see ``use_state``)."""
    return paths.state_dir() / "drills" / name


def fault_profile(**settings: Any) -> dict[str, Any] | None:
    """A fault profile from notebook parameters, or None when every setting is off (0/None).

    ``fault_profile(error_rate=0.0, latency_ms=0)`` is None, so a notebook can pass it to
    :func:`connect` for a real instance too. ``seed`` alone does not make a profile.
    """
    profile = {k: v for k, v in settings.items() if v not in (None, 0, 0.0, False, {}, [])}
    if set(profile) <= {"seed"}:
        return None
    return profile


class Resilience:
    """One circuit breaker shared by several loads, and fast retries for each of them.

    Every load builds a new client; ``session.load(..., client_options=r.options())`` hands
    each one the same breaker, so its state carries from run to run: a drill sees it open
    during an outage, then go half-open and closed after it. Each call gets a fresh retry
    manager (a client registers a hook on it). Short delays keep a drill to seconds;
    production uses the configured policy.
    """

    def __init__(
        self,
        *,
        breaker_threshold: int = 5,
        breaker_recovery_s: float = 1.0,
        retry_attempts: int = 4,
        retry_base_delay_s: float = 0.05,
    ) -> None:
        from snowkit.ops.breaker import CircuitBreaker
        from snowkit.ops.retry import RetryPolicy

        self.breaker = CircuitBreaker(
            failure_threshold=breaker_threshold, recovery_timeout_seconds=breaker_recovery_s
        )
        self.policy = RetryPolicy(
            max_attempts=retry_attempts,
            base_delay_seconds=retry_base_delay_s,
            max_delay_seconds=max(retry_base_delay_s * 16, 0.5),
        )

    def options(self) -> dict[str, Any]:
        """``client_options`` for one load: the shared breaker and a new retry manager."""
        from snowkit.ops.retry import RetryManager

        return {"circuit_breaker": self.breaker, "retry_manager": RetryManager(self.policy)}


def phase_table(reports: Mapping[str, RunReport]) -> pd.DataFrame:
    """One row per named load (a drill's phases): status, writes, queue, requests, retries."""
    rows = []
    for phase, report in reports.items():
        data = report.to_dict()
        applied = data.get("applied") or {}
        requests = data.get("requests") or {}
        replayed = (data.get("outbox") or {}).get("replayed") or {}
        rows.append(
            {
                "phase": phase,
                "status": data.get("status"),
                "duration_s": data.get("duration_s"),
                "created": applied.get("created", 0),
                "updated": applied.get("updated", 0),
                "failed": applied.get("failed", 0),
                "queued": applied.get("queued", 0),
                "replayed": replayed.get("sent", 0),
                "outbox_pending": (data.get("outbox") or {}).get("pending", 0),
                "requests": requests.get("total", 0),
                "retries": requests.get("retries", 0),
                "server_errors": requests.get("server_errors", 0),
            }
        )
    return pd.DataFrame(rows)


def duplicate_source_ids(
    client: Any, tables: tuple[str, ...] = ("cmdb_ci", "cmn_location")
) -> list[str]:
    """Source ids held by more than one record (a write sent twice would show up here)."""
    from collections import Counter

    from snowkit.cmdb.verify import SOURCE_ID_FIELD

    seen: Counter[str] = Counter()
    for table in tables:
        for row in client.query(table, f"{SOURCE_ID_FIELD}ISNOTEMPTY", fields=[SOURCE_ID_FIELD]):
            value = row.get(SOURCE_ID_FIELD)
            if value:
                seen[f"{table}:{value}"] += 1
    return sorted(key for key, n in seen.items() if n > 1)


class NotConvergedError(AssertionError):
    """The CMDB does not hold exactly what the source says after the drill healed."""


def assert_converged(final_plan: RunReport, client: Any) -> pd.DataFrame:
    """Check the final state is exact: nothing left to create or update, an empty outbox and
    no duplicate source ids; return the checks as a table, raise if one fails."""
    data = final_plan.to_dict()
    totals = data.get("totals") or {}
    duplicates = duplicate_source_ids(client)
    from snowkit.cmdb.outbox import Outbox

    with contextlib.closing(Outbox()) as outbox:
        pending = outbox.count()
    checks = [
        ("nothing left to create", totals.get("create", 0), totals.get("create", 0) == 0),
        ("nothing left to update", totals.get("update", 0), totals.get("update", 0) == 0),
        ("records in sync", totals.get("no_change", 0), totals.get("no_change", 0) > 0),
        ("outbox empty", pending, pending == 0),
        ("no duplicate source ids", len(duplicates), not duplicates),
    ]
    table = pd.DataFrame(checks, columns=["check", "observed", "ok"])
    if not table["ok"].all():
        failing = ", ".join(table.loc[~table["ok"], "check"])
        raise NotConvergedError(
            f"the CMDB did not converge after the drill ({failing}); examples of duplicates: "
            f"{duplicates[:5]}"
        )
    return table
