"""Tables that summarise a frame for a reader: what went wrong, how often, and what to do.

The frames in ``snowkit.analysis.frames`` hold one row per recorded event; the tables here
are what a report shows above the charts.
"""

from __future__ import annotations

import pandas as pd

ERROR_SUMMARY_COLUMNS = (
    "category",
    "severity",
    "operation",
    "count",
    "last_seen",
    "example",
    "guidance",
)
_GROUP_KEYS = ["category", "severity", "operation"]
EXAMPLE_CHARS = 160


def error_summary(errors: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """Error contexts (``errors_frame``) grouped by category, severity and operation: how
    many, when last, the latest message as an example (cut to 160 characters) and what to do
    (the category's guidance); the ``top`` most frequent groups first."""
    from snowkit.ops.errors import DEFAULT_GUIDANCE, ErrorCategory

    columns = list(ERROR_SUMMARY_COLUMNS)
    if errors.empty:
        return pd.DataFrame(columns=columns)
    data = errors.assign(
        **{k: errors.get(k, pd.Series(index=errors.index, dtype=object)) for k in _GROUP_KEYS}
    )
    data = data.assign(**{k: data[k].fillna("unknown").astype(str) for k in _GROUP_KEYS})
    grouped = data.sort_values("timestamp", kind="stable").groupby(_GROUP_KEYS, sort=False)
    table = grouped.agg(
        count=("timestamp", "size"),
        last_seen=("timestamp", "max"),
        example=("error_message", "last"),
    ).reset_index()

    def guidance(category: str) -> str:
        try:
            return DEFAULT_GUIDANCE.get(ErrorCategory(category), "")
        except ValueError:
            return ""

    table["example"] = table["example"].astype(str).str.slice(0, EXAMPLE_CHARS)
    table["guidance"] = table["category"].map(guidance)
    table = table.sort_values("count", ascending=False, kind="stable")
    return table.head(top).reset_index(drop=True)[columns]


__all__ = ["ERROR_SUMMARY_COLUMNS", "error_summary"]
