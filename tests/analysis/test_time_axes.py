"""Time axes and time bins read well at any span: a 10-second run and a week of runs."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from matplotlib.dates import ConciseDateFormatter
from matplotlib.figure import Figure

from snowkit.analysis import (
    breaker_timeline_chart,
    errors_over_time_chart,
    health_history_chart,
    retries_chart,
    run_trend_chart,
    throughput_chart,
)
from snowkit.analysis.charts import MIN_BIN, TARGET_BINS, bin_width

START = pd.Timestamp("2026-03-01T08:31:13.6Z")


def _times(span: pd.Timedelta, n: int) -> pd.Series:
    """``n`` times spread over ``span`` from START, bunched towards the middle."""
    fractions = [(i / (n - 1)) ** 2 if i < n // 2 else i / (n - 1) for i in range(n)]
    return pd.Series([START + span * f for f in fractions])


def _frames(span: pd.Timedelta) -> dict[str, pd.DataFrame]:
    times = _times(span, 60)
    n = len(times)
    events = ["request"] * n
    for i in range(0, n, 3):
        events[i] = "retry_scheduled"
    for i in range(1, n, 7):
        events[i] = "rate_limited"
    logs = pd.DataFrame(
        {"timestamp": times, "event": events, "status_code": [200] * (n - 5) + [503] * 5}
    )
    breaker = pd.DataFrame(
        {
            "timestamp": [times[10], times[20], times[21]],
            "event": ["breaker_state_change"] * 3,
            "breaker": ["servicenow"] * 3,
            "old": ["closed", "open", "half_open"],
            "new": ["open", "half_open", "closed"],
        }
    )
    return {
        "logs": pd.concat([logs, breaker], ignore_index=True).sort_values("timestamp"),
        "errors": pd.DataFrame(
            {"timestamp": times, "category": ["network", "rate_limit"] * (n // 2)}
        ),
        "health": pd.DataFrame(
            {
                "checked_at": times[::6],
                "check": ["servicenow", "system"] * 5,
                "status": ["pass", "warn", "pass", "fail", "pass"] * 2,
            }
        ),
        "runs": pd.DataFrame(
            {
                "started": times[::10],
                "duration_s": [3.0, 4.5, 2.0, 8.0, 3.3, 2.9],
                "status": ["success", "success", "failed", "success", "partial", "success"],
            }
        ),
    }


TIME_CHARTS: dict[str, tuple[Callable[..., Figure], str]] = {
    "throughput": (throughput_chart, "logs"),
    "errors": (errors_over_time_chart, "errors"),
    "retries": (retries_chart, "logs"),
    "breaker": (breaker_timeline_chart, "logs"),
    "health": (health_history_chart, "health"),
    "run_trend": (run_trend_chart, "runs"),
}
SPANS = {"12s": pd.Timedelta("12s"), "3d": pd.Timedelta("3D")}


def _labels(fig: Figure) -> tuple[list[str], str]:
    fig.canvas.draw()
    ax = fig.axes[0]
    return [t.get_text() for t in ax.get_xticklabels()], ax.xaxis.get_major_formatter().get_offset()


@pytest.mark.parametrize("span", sorted(SPANS))
@pytest.mark.parametrize("name", sorted(TIME_CHARTS))
def test_time_axes_are_concise_at_any_span(name: str, span: str) -> None:
    fn, key = TIME_CHARTS[name]
    fig = fn(_frames(SPANS[span])[key])
    ax = fig.axes[0]
    assert isinstance(ax.xaxis.get_major_formatter(), ConciseDateFormatter)
    labels, offset = _labels(fig)
    shown = [t for t in labels if t]
    assert len(shown) >= 2, labels
    assert not any(re.search(r"\.\d{4,}", t) for t in shown), labels  # no 31:13.600000
    assert all(len(t) <= 8 for t in shown), labels  # the rest is in the offset
    assert "2026" in offset or any("2026" in t for t in shown), (labels, offset)


def test_a_short_runs_retries_are_binned_finely_enough_to_show_their_shape(
    tmp_path: Path,
) -> None:
    fig = retries_chart(_frames(pd.Timedelta("12s"))["logs"])
    assert "500 ms bins" in fig.axes[0].get_title()  # 12 s / 40 = 300 ms, rounded up
    retries = next(line for line in fig.axes[0].lines if line.get_label() == "retries")
    assert len(set(retries.get_ydata())) >= 3  # not one flat level
    fig.savefig(tmp_path / "retries_12s.png", dpi=80)


def test_a_single_bin_still_draws_a_visible_step() -> None:
    logs = pd.DataFrame({"timestamp": [START, START], "event": ["retry_scheduled"] * 2})
    line = retries_chart(logs).axes[0].lines[0]
    xs = line.get_xdata()
    assert len(xs) == 2 and xs[1] > xs[0] and list(line.get_ydata()) == [2, 2]


def test_an_explicit_freq_wins() -> None:
    fig = throughput_chart(_frames(pd.Timedelta("3D"))["logs"], freq="1D")
    assert "1 d bins" in fig.axes[0].get_title()


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        ("0s", "100ms"),
        ("4s", "100ms"),
        ("12s", "500ms"),
        ("60s", "2s"),
        ("30min", "1min"),
        ("3D", "2h"),
        ("365D", "14D"),
    ],
)
def test_bin_width_rounds_span_over_40_up_to_a_nice_width(span: str, expected: str) -> None:
    times = pd.Series([START, START + pd.Timedelta(span)])
    assert bin_width(times) == pd.Timedelta(expected)


@given(st.integers(min_value=0, max_value=10**15))  # up to ~11 days in microseconds
@example(10_000_001)  # span / bins rounded down to the stamps' microseconds: 41 bins
def test_bin_width_bounds(span_us: int) -> None:
    span = pd.Timedelta(microseconds=span_us)
    width = bin_width(pd.Series([START, START + span]))
    assert width >= MIN_BIN
    assert width * TARGET_BINS >= span  # at most TARGET_BINS (+1 for alignment) bins
    assert width <= max(MIN_BIN, 3.5 * span / TARGET_BINS)  # never needlessly coarse


def test_bin_width_ignores_missing_times() -> None:
    times = pd.Series([START, pd.NaT, START + pd.Timedelta("4s")])
    assert bin_width(times) == pd.Timedelta("100ms")
