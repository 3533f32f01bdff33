"""Analysis of what snowkit records: frames (pandas), charts (matplotlib), suggestions.

Notebooks call these; they hold the logic so notebooks stay thin. Loaders read the on-disk
formats of docs/architecture.md, so they work on any past run without the process that wrote it.
"""

from snowkit.analysis.charts import (
    breaker_timeline_chart,
    data_quality_chart,
    errors_by_category_severity_chart,
    errors_over_time_chart,
    health_history_chart,
    latency_percentiles_chart,
    relationship_chart,
    retries_chart,
    run_trend_chart,
    success_rate_chart,
    throughput_chart,
)
from snowkit.analysis.frames import (
    audit_frame,
    errors_frame,
    health_frame,
    logs_frame,
    metrics_frame,
    reports_history_frame,
    run_report_frame,
    run_reports_frame,
    samples_frame,
)
from snowkit.analysis.suggestions import Suggestion, suggestions, suggestions_frame
from snowkit.analysis.summaries import error_summary

__all__ = [
    "Suggestion",
    "audit_frame",
    "breaker_timeline_chart",
    "data_quality_chart",
    "error_summary",
    "errors_by_category_severity_chart",
    "errors_frame",
    "errors_over_time_chart",
    "health_frame",
    "health_history_chart",
    "latency_percentiles_chart",
    "logs_frame",
    "metrics_frame",
    "relationship_chart",
    "reports_history_frame",
    "retries_chart",
    "run_report_frame",
    "run_reports_frame",
    "run_trend_chart",
    "samples_frame",
    "success_rate_chart",
    "suggestions",
    "suggestions_frame",
    "throughput_chart",
]
