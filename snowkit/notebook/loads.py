"""A load's outcome as notebook tables, and the end-of-notebook verdict on it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from snowkit.notebook.output import markdown

if TYPE_CHECKING:
    from snowkit.cmdb.report import RunReport

#: Load statuses that do not fail a load notebook (see raise_for_status).
RAN_STATUSES = ("success", "partial", "dry_run")


def summary_frame(report: RunReport | Mapping[str, Any]) -> pd.DataFrame:
    """The headline numbers of one load as a two-column table (what, value)."""
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    totals = data.get("totals") or {}
    applied = data.get("applied") or {}
    requests = data.get("requests") or {}
    rel = data.get("relationships") or {}
    quality = data.get("data_quality") or {}
    rows: list[tuple[str, Any]] = [
        ("run id", data.get("run_id")),
        ("status", data.get("status")),
        ("instance", data.get("instance")),
        ("source", data.get("source")),
        ("duration (s)", data.get("duration_s")),
        ("planned", ", ".join(f"{k} {v}" for k, v in totals.items() if v) or "nothing"),
        ("written", ", ".join(f"{k} {v}" for k, v in applied.items() if v) or "nothing"),
        ("success rate", _rate(data)),
        ("relationships linked", f"{rel.get('created', 0)} new, {rel.get('existing', 0)} kept"),
        ("relationship orphans", rel.get("orphans", 0)),
        ("relationships not made (end quarantined)", rel.get("dropped", 0)),
        ("requests", requests.get("total", 0)),
        ("retries", requests.get("retries", 0)),
        ("429 rate limited", requests.get("rate_limited", 0)),
        ("quarantined records", _count(quality.get("quarantined"))),
        ("outbox pending", (data.get("outbox") or {}).get("pending", 0)),
    ]
    return pd.DataFrame(rows, columns=["what", "value"]).astype({"value": str})


def _count(value: Any) -> int:
    if isinstance(value, list | tuple | dict):
        return len(value)
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def show_summary(report: RunReport | Mapping[str, Any]) -> pd.DataFrame:
    """Show a load's one-line summary, its message and suggestions; return the summary table.

    Also ``emit()``s the table as ``data/summary.csv`` when running under ``snowkit run``.
    """
    from snowkit.reports import emit

    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    lines = [f"**Run `{data.get('run_id')}`: {data.get('status')}**"]
    if data.get("message"):
        lines.append(f"> {data['message']}")
    for tip in data.get("suggestions") or []:
        lines.append(f"- {tip}")
    markdown("\n\n".join(lines))
    table = summary_frame(data)
    emit("summary", table)
    return table


def counts_table(report: RunReport | Mapping[str, Any]) -> pd.DataFrame:
    """Planned records per class (rows) and action (columns) of one load."""
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    counts = data.get("counts") or {}
    frame = pd.DataFrame(counts).T.fillna(0).astype("int64")
    frame.index.name = "class"
    ordered = [a for a in ("create", "update", "no_change", "not_seen", "retire") if a in frame]
    return frame[ordered + [c for c in frame.columns if c not in ordered]].sort_index()


def inventory_frame(inventory: Any) -> pd.DataFrame:
    """How many of each kind the collector found (sites, gateways, switches, ...)."""
    counts = inventory.counts() if hasattr(inventory, "counts") else {}
    return pd.DataFrame(list(counts.items()), columns=["kind", "count"])


class LoadFailedError(RuntimeError):
    """Raised at the end of a load notebook so ``snowkit run`` / papermill exit non-zero."""


def raise_for_status(report: RunReport | Mapping[str, Any]) -> None:
    """Fail the notebook when the load failed or only queued its writes (the instance was
    unreachable), after its report has been shown, so a scheduler sees a non-zero exit.

    ``partial`` (some items failed, listed in the report) does not fail the notebook; the next
    run retries those items. Queued writes are kept in the outbox either way.
    """
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    status = data.get("status")
    if status not in RAN_STATUSES:
        raise LoadFailedError(
            f"load {data.get('run_id')} {status}: {data.get('message') or 'see the run report'}"
            f" ({(data.get('paths') or {}).get('report', 'report.json')})"
        )


def _rate(report: dict[str, Any]) -> str:
    rate = report.get("success_rate", 1.0)
    return "— (a dry run writes nothing)" if rate is None else f"{100 * float(rate):.1f} %"
