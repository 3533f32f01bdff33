"""Turn slow operations and error patterns into concrete next steps for an operator.

A chart shows that something is wrong; the operations report should also say what to change.
Each rule here reads the frames of ``snowkit.analysis.frames`` and, when it fires, yields one
:class:`Suggestion` naming the evidence (with numbers) and the knob to turn. Thresholds are
arguments so a team can tune them from a notebook parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import pandas as pd

Severity = Literal["critical", "warning", "info"]
_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Suggestion:
    """One finding and the action that addresses it."""

    severity: Severity
    finding: str
    action: str


def _events(logs: pd.DataFrame | None, name: str) -> pd.DataFrame:
    if logs is None or logs.empty or "event" not in logs.columns:
        return pd.DataFrame()
    return logs.loc[logs["event"] == name]


def _label(row: pd.Series) -> str:
    """``create`` or ``create on cmdb_ci_ip_switch`` when the metrics are per table."""
    table = row.get("table")
    name = str(row["operation_name"])
    return f"{name} on {table}" if isinstance(table, str) and table else name


def _rate_limit_rule(metrics: pd.DataFrame, logs: pd.DataFrame | None) -> list[Suggestion]:
    limited = len(_events(logs, "rate_limited"))
    if not limited and logs is not None and {"event", "status_code"} <= set(logs.columns):
        requests = _events(logs, "request")
        limited = int(pd.to_numeric(requests["status_code"], errors="coerce").eq(429).sum())
    if not limited and "rate_limited" in metrics.columns:
        limited = int(pd.to_numeric(metrics["rate_limited"], errors="coerce").fillna(0).sum())
    if not limited:
        return []
    return [
        Suggestion(
            "warning",
            f"the instance answered 429 (rate limited) {limited} times",
            "lower --workers (servicenow.workers) or ask the ServiceNow admin to raise the "
            "rate-limit rule for the integration user (System Web Services > Rate Limit Rules)",
        )
    ]


def _slow_operation_rule(metrics: pd.DataFrame, p95_threshold_ms: float) -> list[Suggestion]:
    if metrics.empty or "p95_response_time_ms" not in metrics.columns:
        return []
    p95 = pd.to_numeric(metrics["p95_response_time_ms"], errors="coerce")
    slow = metrics.loc[p95 > p95_threshold_ms]
    return [
        Suggestion(
            "warning",
            f"operation {_label(row)} has p95 latency "
            f"{float(row['p95_response_time_ms']):.0f} ms (threshold {p95_threshold_ms:.0f} ms)",
            "use a smaller page size (--page-size / servicenow.page_size) and request fewer "
            "fields (sysparm_fields); for writes, smaller batches (servicenow.batch_size)",
        )
        for _, row in slow.iterrows()
    ]


def _error_rate_rule(metrics: pd.DataFrame, error_rate_percent: float) -> list[Suggestion]:
    if metrics.empty or "error_rate_percent" not in metrics.columns:
        return []
    rate = pd.to_numeric(metrics["error_rate_percent"], errors="coerce")
    failing = metrics.loc[rate > error_rate_percent]
    return [
        Suggestion(
            "warning",
            f"operation {_label(row)} failed {float(row['error_rate_percent']):.1f}% "
            "of its requests",
            "open the error_analysis notebook for that operation: the error categories say "
            "whether to fix data, permissions or the instance",
        )
        for _, row in failing.iterrows()
    ]


def _breaker_rule(metrics: pd.DataFrame, logs: pd.DataFrame | None) -> list[Suggestion]:
    changes = _events(logs, "breaker_state_change")
    opened = 0
    if not changes.empty and "new" in changes.columns:
        opened = int(changes["new"].astype(str).str.lower().eq("open").sum())
    states = (metrics.attrs.get("system") or {}).get("circuit_breaker_states") or {}
    open_now = sorted(name for name, state in states.items() if str(state).lower() == "open")
    if not opened and not open_now:
        return []
    finding = f"the circuit breaker opened {opened} time(s)"
    if open_now:
        finding += f"; open now: {', '.join(open_now)}"
    return [
        Suggestion(
            "critical",
            finding,
            "check instance health (`snowkit health`, the health_check notebook): the instance "
            "may be hibernating, overloaded or unreachable; the outbox keeps queued writes",
        )
    ]


def _server_retry_rule(logs: pd.DataFrame | None, min_retries: int) -> list[Suggestion]:
    retries = _events(logs, "retry_scheduled")
    if retries.empty or "reason" not in retries.columns:
        return []
    reasons = retries["reason"].astype(str).str.lower()
    server = int(reasons.str.contains(r"\b5\d\d\b|server|unavailable|gateway", regex=True).sum())
    if server < min_retries:
        return []
    return [
        Suggestion(
            "warning",
            f"{server} retries were caused by server errors (5xx)",
            "check instance health (node status, slow transactions, scheduled jobs) before "
            "raising retry limits; retries only hide an unhealthy instance",
        )
    ]


def _quarantine_rule(report: Mapping[str, Any] | pd.DataFrame | None) -> list[Suggestion]:
    quarantined = 0
    if isinstance(report, pd.DataFrame):
        if {"action", "count"} <= set(report.columns):
            is_q = report["action"].astype(str).str.lower().eq("quarantined")
            quarantined = int(report.loc[is_q, "count"].sum())
        report = report.attrs.get("report") if not quarantined else None
    if isinstance(report, Mapping):
        quality = report.get("data_quality")
        value = quality.get("quarantined") if isinstance(quality, Mapping) else None
        value = report.get("quarantined") if value is None else value
        quarantined = len(value) if isinstance(value, list) else int(value or 0)
    if not quarantined:
        return []
    return [
        Suggestion(
            "warning",
            f"{quarantined} record(s) were quarantined by validation",
            "fix them at the source (UniFi device names, MACs, site assignment); the "
            "data-quality chart lists the failing rules; the next load picks them up",
        )
    ]


def _report_dict(report: Mapping[str, Any] | pd.DataFrame | None) -> Mapping[str, Any]:
    """The ``report.json`` dict behind ``report`` (a frame keeps it in ``attrs``), or {}."""
    if isinstance(report, pd.DataFrame):
        report = report.attrs.get("report")
    return report if isinstance(report, Mapping) else {}


def _linking_rule(report: Mapping[str, Any] | pd.DataFrame | None) -> list[Suggestion]:
    """Links that were not made: an end missing from the CMDB, or lost to quarantine."""
    links = _report_dict(report).get("relationships")
    if not isinstance(links, Mapping):
        return []
    found = []
    orphans = int(links.get("orphans") or 0)
    if orphans:
        example = next(iter(links.get("orphan_examples") or []), "")
        found.append(
            Suggestion(
                "warning",
                f"{orphans} relationship(s) orphaned: an end is not in the CMDB"
                + (f" (e.g. {example})" if example else ""),
                "load the source that reports the missing device, or check the quarantine and "
                "not-seen lists; the next load links them once both ends exist",
            )
        )
    dropped = int(links.get("dropped") or 0)
    if dropped:
        found.append(
            Suggestion(
                "warning",
                f"{dropped} relationship(s) not made because an end was quarantined",
                "fix the quarantined record at the source (the data-quality chart names the "
                "rule); the next load makes its links",
            )
        )
    return found


def _verification_rule(report: Mapping[str, Any] | pd.DataFrame | None) -> list[Suggestion]:
    """Fields that read back different from what was written."""
    mismatches = _report_dict(report).get("mismatches") or []
    if not isinstance(mismatches, list) or not mismatches:
        return []
    fields = sorted(
        {f"{m.get('table')}.{m.get('field')}" for m in mismatches if isinstance(m, Mapping)}
    )
    return [
        Suggestion(
            "warning",
            f"{len(mismatches)} field(s) read back different from what was written "
            f"({', '.join(fields[:3])}{', ...' if len(fields) > 3 else ''})",
            "a business rule, data policy or column length on the instance changes them; ask "
            "the ServiceNow admin, or stop mapping that field (every load would rewrite it)",
        )
    ]


def _credential_rule(logs: pd.DataFrame | None) -> list[Suggestion]:
    access = _events(logs, "credential_access")
    if access.empty or "success" not in access.columns:
        return []
    failures = int(access["success"].eq(False).sum())
    if not failures:
        return []
    return [
        Suggestion(
            "critical",
            f"{failures} credential lookup(s) failed",
            "verify the credentials configured for the instance (the 1Password reference or "
            "the environment variables); the health_check notebook shows which source fails",
        )
    ]


def suggestions(
    metrics_frame: pd.DataFrame,
    logs_frame: pd.DataFrame | None = None,
    report: Mapping[str, Any] | pd.DataFrame | None = None,
    *,
    p95_threshold_ms: float = 2000.0,
    error_rate_percent: float = 5.0,
    min_server_retries: int = 5,
) -> list[Suggestion]:
    """Suggestions from metrics (``metrics_frame``), the log and a run report, worst first.

    ``report`` is a ``report.json`` dict or a ``run_report_frame``. Each rule ignores inputs it
    does not have, so any subset works.
    """
    found = [
        *_breaker_rule(metrics_frame, logs_frame),
        *_credential_rule(logs_frame),
        *_rate_limit_rule(metrics_frame, logs_frame),
        *_slow_operation_rule(metrics_frame, p95_threshold_ms),
        *_error_rate_rule(metrics_frame, error_rate_percent),
        *_server_retry_rule(logs_frame, min_server_retries),
        *_quarantine_rule(report),
        *_linking_rule(report),
        *_verification_rule(report),
    ]
    return sorted(found, key=lambda s: _ORDER[s.severity])


def suggestions_frame(items: list[Suggestion]) -> pd.DataFrame:
    """Suggestions as a table for display in a notebook or ``emit()``."""
    return pd.DataFrame([asdict(s) for s in items], columns=["severity", "finding", "action"])


__all__ = ["Suggestion", "suggestions", "suggestions_frame"]
