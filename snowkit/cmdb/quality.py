"""Data-quality summary of a transform: a DataFrame for notebooks and log events for the run.

Events are aggregated per (record kind, field, rule, severity) so 100,000 randomised phone MACs
make one ``data_quality_issue`` line, not 100,000.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from snowkit.cmdb.transform import TransformResult
from snowkit.ops.logging import get_logger

if TYPE_CHECKING:
    import pandas as pd

FRAME_COLUMNS = [
    "source_id",
    "record_kind",
    "field",
    "value",
    "rule",
    "message",
    "severity",
    "quarantined",
]
EXAMPLES = 3


def quality_frame(result: TransformResult) -> pd.DataFrame:
    """One row per field issue; ``quarantined`` says whether its record was held back."""
    import pandas as pd  # imported here: the transform itself must not pay for pandas

    held = {q.source_id for q in result.quarantined}
    rows = [
        (
            i.source_id,
            i.record_kind,
            i.field,
            i.value,
            i.rule,
            i.message,
            i.severity,
            i.source_id in held,
        )
        for i in result.issues
    ]
    return pd.DataFrame.from_records(rows, columns=FRAME_COLUMNS)


def quality_summary(result: TransformResult) -> dict[str, Any]:
    by_rule = Counter((i.record_kind, i.field, i.rule, i.severity) for i in result.issues)
    return {
        "records": len(result.records),
        "quarantined": len(result.quarantined),
        "duplicates": len(result.duplicates),
        "issues": len(result.issues),
        "errors": sum(1 for i in result.issues if i.severity == "error"),
        "warnings": sum(1 for i in result.issues if i.severity == "warning"),
        "by_rule": [
            {"record_kind": k, "field": f, "rule": r, "severity": s, "count": n}
            for (k, f, r, s), n in sorted(by_rule.items())
        ],
    }


def emit_quality_events(result: TransformResult, logger: Any = None) -> dict[str, Any]:
    """Log one ``data_quality_issue`` per rule group plus a ``data_quality_summary``."""
    log = logger or get_logger("snowkit.cmdb.quality")
    summary = quality_summary(result)
    examples: dict[tuple[str, str, str, str], list[str]] = {}
    for issue in result.issues:
        key = (issue.record_kind, issue.field, issue.rule, issue.severity)
        bucket = examples.setdefault(key, [])
        if len(bucket) < EXAMPLES:
            bucket.append(issue.source_id)
    for group in summary["by_rule"]:
        key = (group["record_kind"], group["field"], group["rule"], group["severity"])
        method = log.warning if group["severity"] == "error" else log.info
        method(
            "data_quality_issue",
            issue_type=group["rule"],
            affected_records=group["count"],
            record_kind=group["record_kind"],
            field=group["field"],
            severity=group["severity"],
            examples=examples.get(key, []),
        )
    for dup in result.duplicates[:EXAMPLES]:
        log.info(
            "duplicate_resolved",
            key=dup.key,
            kept=dup.kept_source_id,
            kept_source=dup.kept_source,
            sources=list(dup.sources),
        )
    log.info("data_quality_summary", **{k: v for k, v in summary.items() if k != "by_rule"})
    return summary
