"""Every chart renders to PNG from real frames, draws on a given ax, and says "no data"."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # the test picks the backend; the library never does

import pandas as pd
import pytest
from matplotlib.figure import Figure

from snowkit.analysis import (
    breaker_timeline_chart,
    data_quality_chart,
    errors_by_category_severity_chart,
    errors_frame,
    errors_over_time_chart,
    health_frame,
    health_history_chart,
    latency_percentiles_chart,
    logs_frame,
    relationship_chart,
    reports_history_frame,
    retries_chart,
    run_report_frame,
    run_trend_chart,
    samples_frame,
    success_rate_chart,
    throughput_chart,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=60)
    return buffer.getvalue()


def _drawn(fig: Figure) -> int:
    ax = fig.axes[0]
    return len(ax.lines) + len(ax.patches) + len(ax.collections)


@pytest.fixture
def inputs(state: dict[str, Path], b: Any) -> dict[str, Any]:
    logs = logs_frame(state["log"])
    return {
        "logs": logs,
        "samples": samples_frame(state["metrics"]),
        "errors": errors_frame(state["errors"]),
        "report": run_report_frame(state["report"]),
        "health": health_frame(b.health_docs()),
        "relationships": b.run_report()["relationships"],
    }


CHARTS: dict[str, tuple[Callable[..., Figure], str, str]] = {
    "throughput_samples": (throughput_chart, "samples", "Throughput"),
    "throughput_logs": (throughput_chart, "logs", "Throughput"),
    "latency": (latency_percentiles_chart, "samples", "Latency percentiles"),
    "errors_time": (errors_over_time_chart, "errors", "Errors by category"),
    "errors_cat_sev": (errors_by_category_severity_chart, "errors", "category and severity"),
    "success": (success_rate_chart, "report", "Success rate"),
    "retries": (retries_chart, "logs", "Retries and 429s"),
    "breaker": (breaker_timeline_chart, "logs", "Circuit breaker"),
    "health": (health_history_chart, "health", "Health history"),
    "quality": (data_quality_chart, "logs", "Data-quality"),
    "relationships": (relationship_chart, "relationships", "Relationship linking"),
}


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_chart_renders_png_from_real_frames(name: str, inputs: dict[str, Any]) -> None:
    fn, key, title = CHARTS[name]
    fig = fn(inputs[key])
    assert isinstance(fig, Figure)
    assert title in fig.axes[0].get_title()
    assert _drawn(fig) > 0
    assert not any(t.get_text() == "no data" for t in fig.axes[0].texts)
    assert _png(fig).startswith(PNG)


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_chart_draws_on_a_given_ax(name: str, inputs: dict[str, Any]) -> None:
    fn, key, _ = CHARTS[name]
    grid = Figure(figsize=(8, 6))
    axes = grid.subplots(2, 1)
    assert fn(inputs[key], ax=axes[1]) is grid
    assert len(grid.axes) in (2, 3)  # bar charts with a legend keep to their ax (or a colorbar)


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_chart_on_empty_input_says_no_data(name: str) -> None:
    fn, key, title = CHARTS[name]
    empty: Any = {} if key == "relationships" else pd.DataFrame()
    fig = fn(empty)
    assert [t.get_text() for t in fig.axes[0].texts] == ["no data"]
    assert title in fig.axes[0].get_title()
    assert _png(fig).startswith(PNG)


def test_latency_percentiles_are_ordered_and_exact(inputs: dict[str, Any]) -> None:
    fig = latency_percentiles_chart(inputs["samples"])
    heights = [p.get_height() for p in fig.axes[0].patches]
    n_ops = inputs["samples"]["operation"].nunique()
    p50, p95, p99 = heights[:n_ops], heights[n_ops : 2 * n_ops], heights[2 * n_ops :]
    assert all(a <= b <= c for a, b, c in zip(p50, p95, p99, strict=True))
    expected = inputs["samples"].groupby("operation")["duration_ms"].quantile(0.95).sort_index()
    assert p95 == pytest.approx(expected.tolist())


def test_success_rate_is_failed_over_attempted_writes(inputs: dict[str, Any]) -> None:
    fig = success_rate_chart(inputs["report"])
    widths = {
        label.get_text(): patch.get_width()
        for label, patch in zip(fig.axes[0].get_yticklabels(), fig.axes[0].patches, strict=True)
    }
    assert widths["cmdb_ci_netgear"] == pytest.approx(100.0)
    assert widths["cmdb_ci_ip_switch"] == pytest.approx(100 * (1 - 1 / 12))  # create+update
    assert widths["cmdb_ci_wap_network"] == pytest.approx(100 * (1 - 3 / 20))


def test_relationship_chart_counts_created_and_existing_as_linked(b: Any) -> None:
    fig = relationship_chart(b.run_report()["relationships"])
    ax = fig.axes[0]
    bars = {
        t.get_text(): p.get_height() for t, p in zip(ax.get_xticklabels(), ax.patches, strict=True)
    }
    assert bars == {"linked": 30, "orphans": 2, "failed": 1}
    frame = pd.DataFrame({"status": ["linked", "linked", "orphans"]})
    assert [p.get_height() for p in relationship_chart(frame).axes[0].patches] == [2, 1]


def test_data_quality_chart_weights_by_count_or_affected_records(
    inputs: dict[str, Any], b: Any
) -> None:
    from_logs = data_quality_chart(inputs["logs"]).axes[0]
    widths = {
        t.get_text(): p.get_width()
        for t, p in zip(from_logs.get_yticklabels(), from_logs.patches, strict=True)
    }
    assert widths == b.log_records().quality
    by_rule = pd.DataFrame([{"rule": "bad_ip", "count": 4}, {"rule": "missing_mac", "count": 1}])
    assert sorted(p.get_width() for p in data_quality_chart(by_rule).axes[0].patches) == [1, 4]


def test_charts_from_a_real_metrics_collector() -> None:
    metrics = pytest.importorskip("snowkit.ops.metrics")
    collector = metrics.MetricsCollector()
    for i in range(30):
        collector.record_request("GET", "query" if i % 2 else "create", 200, 10.0 + i, table="t")
    samples = samples_frame(collector.snapshot())
    for chart in (latency_percentiles_chart, throughput_chart):
        fig = chart(samples)
        assert _drawn(fig) > 0 and _png(fig).startswith(PNG)


def test_every_line_of_a_counts_chart_fits_its_axis() -> None:
    """The axis had been fixed at the first line's maximum: more failures than successes
    in a bin were drawn off the chart."""
    times = pd.date_range("2026-01-01", periods=24, freq="1s", tz="UTC")
    frame = pd.DataFrame({"timestamp": times, "ok": [True] * 4 + [False] * 20})
    fig = throughput_chart(frame, freq="10s")
    ax = fig.axes[0]
    tallest = max(max(line.get_ydata()) for line in ax.get_lines())
    assert tallest > 4 and ax.get_ylim()[1] >= tallest and ax.get_ylim()[0] == 0


def test_each_runs_breaker_starts_from_its_own_state() -> None:
    """Merged across runs, a run whose breaker began closed showed the previous run's open."""
    times = pd.to_datetime(
        ["2026-01-01T09:19:32Z", "2026-01-01T09:19:35Z", "2026-01-01T09:19:36Z"], utc=True
    )
    logs = pd.DataFrame({
        "timestamp": times, "event": "breaker_state_change", "breaker": "servicenow",
        "run_id": ["a", "b", "b"], "old": ["closed", "closed", "open"],
        "new": ["open", "open", "half_open"],
    })  # fmt: skip
    fig = breaker_timeline_chart(logs)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2  # one per run
    assert list(lines[1].get_ydata())[:2] == [0, 2]  # run b: closed, then open
    assert len({line.get_color() for line in lines}) == 1  # one breaker, one colour
    assert len(fig.axes[0].get_legend().get_texts()) == 1


def test_a_run_without_a_duration_is_marked_on_the_trend(tmp_path: Path, b: Any) -> None:
    b.reports_tree(tmp_path)  # holds one run whose run.json is torn
    fig = run_trend_chart(reports_history_frame(tmp_path))
    (marked,) = [c for c in fig.axes[0].collections if c.get_label().startswith("no duration")]
    assert len(marked.get_offsets()) == 1 and marked.get_offsets()[0][1] == 0
    legend = [t.get_text() for t in fig.axes[0].get_legend().texts]
    assert "no duration: killed or unfinished (1)" in legend
    assert _png(fig).startswith(PNG)
