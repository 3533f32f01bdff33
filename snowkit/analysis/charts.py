"""Chart functions for notebooks and reports: a frame in, a matplotlib ``Figure`` out.

Conventions (notebook-kit notes §5): every function takes ``ax=None``, draws on it when given
(so a notebook can compose a grid) and otherwise creates a ``matplotlib.figure.Figure`` outside
pyplot's global registry (no figure leaks in loops, no double display in Jupyter: a returned
figure is shown once as the cell's value). The backend is never forced here. An empty or
missing input draws a titled "no data" panel instead of raising, so a report on a quiet day
still renders.

Time axes use matplotlib's ``AutoDateLocator`` + ``ConciseDateFormatter`` (a run of a few
seconds reads ``13.6`` under a ``2026-03-01 08:31`` offset, not ``31:13.600000``), and counts
over time are binned by :func:`bin_width`: about :data:`TARGET_BINS` bins over the data's span,
so a ten-second run and a week of scheduled runs both show their shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

FIGSIZE = (9.0, 3.6)
WRITE_ACTIONS = frozenset({"create", "update", "retire"})
FAILURE_ACTIONS = frozenset({"failed", "failure", "error", "quarantined"})
BREAKER_LEVELS = {"closed": 0, "half_open": 1, "open": 2}
HEALTH_LEVELS = {"pass": 0, "healthy": 0, "warn": 1, "degraded": 1, "fail": 2, "unhealthy": 2}
STATUS_COLORS = {0: "tab:green", 1: "tab:orange", 2: "tab:red"}


def _axes(ax: Axes | None, figsize: tuple[float, float] = FIGSIZE) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _no_data(fig: Figure, ax: Axes, title: str) -> Figure:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _has(frame: pd.DataFrame | None, *columns: str) -> bool:
    return frame is not None and not frame.empty and all(c in frame.columns for c in columns)


def _events(logs: pd.DataFrame | None, *names: str) -> pd.DataFrame:
    if not _has(logs, "event", "timestamp"):
        return pd.DataFrame()
    assert logs is not None
    return logs.loc[logs["event"].isin(names) & logs["timestamp"].notna()]


#: Bins per chart the width is chosen for (span / TARGET_BINS, rounded up to a nice width).
TARGET_BINS = 40
#: The narrowest bin: finer than the clock resolution of most log lines is noise.
MIN_BIN = pd.Timedelta("100ms")
_NICE_WIDTHS = tuple(
    pd.Timedelta(w)
    for w in (
        "100ms", "200ms", "250ms", "500ms", "1s", "2s", "5s", "10s", "15s", "30s",
        "1min", "2min", "5min", "10min", "15min", "30min",
        "1h", "2h", "3h", "6h", "12h", "1D", "2D", "7D",
    )
)  # fmt: skip
_WEEK = pd.Timedelta("7D")


def bin_width(times: pd.Series | pd.Index, *, bins: int = TARGET_BINS) -> pd.Timedelta:
    """The bin width for counting events at ``times``: span / ``bins`` rounded up to a nice
    width (100 ms, 200 ms, 250 ms, 500 ms, 1 s, 2 s, 5 s, ... 1 h, 2 h, ... 1 day, 2 days,
    then whole weeks), never below :data:`MIN_BIN`."""
    valid = pd.Series(times).dropna()
    span = valid.max() - valid.min() if len(valid) > 1 else pd.Timedelta(0)
    bins = max(bins, 1)
    # compared as ``width x bins >= span``: span / bins rounds down to the times' unit (a
    # 10.000001 s span of microsecond stamps gave 250 ms, i.e. 41 bins)
    for width in _NICE_WIDTHS:
        if width >= MIN_BIN and width * bins >= span:
            return width
    weeks = max(1, math.ceil(span / (_WEEK * bins)))
    while _WEEK * weeks * bins < span:  # the float ratio may round down as well
        weeks += 1
    return _WEEK * weeks


def _naive_utc(times: Any) -> pd.DatetimeIndex:
    """Times as a tz-naive UTC index: what matplotlib's date axis handles without surprises."""
    index = pd.DatetimeIndex(pd.to_datetime(times, utc=True))
    return index.tz_convert("UTC").tz_localize(None)


def _time_axis(ax: Axes, label: str = "time (UTC)") -> None:
    """Readable ticks on a date x axis at any span (call after plotting)."""
    locator = AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_xlabel(label)


def _per_bin(
    frame: pd.DataFrame,
    freq: str | pd.Timedelta | None,
    by: str | None = None,
    bins: int = TARGET_BINS,
) -> tuple[pd.DataFrame, pd.Timedelta]:
    """Event counts per time bin (every bin from the first to the last, empty ones as 0), one
    column per value of ``by`` (or ``count``), indexed by the bin start (naive UTC)."""
    times = _naive_utc(frame["timestamp"])
    width = pd.Timedelta(freq) if freq is not None else bin_width(times.to_series(), bins=bins)
    starts = times.floor(width)
    keys = (
        pd.Series("count", index=frame.index)
        if by is None
        else frame[by].fillna("unknown").astype(str)
    )
    counts = pd.crosstab(starts, keys.to_numpy())
    full = pd.date_range(starts.min(), starts.max(), freq=width)
    counts = counts.reindex(full, fill_value=0)
    counts.columns = [str(c) for c in counts.columns]
    return counts, width


def _binned_steps(
    fig: Figure,
    ax: Axes,
    binned: pd.DataFrame,
    width: pd.Timedelta,
    series: Sequence[tuple[str, str]],
    *,
    title: str,
    ylabel: str,
) -> Figure:
    """Step lines for each (column, colour) present in ``binned``, on a labelled time axis."""
    for column, color in series:
        if column in binned.columns:
            _steps(ax, binned, column, width, label=column, color=color)
    ax.set(title=f"{title}, {_describe(width)} bins", ylabel=ylabel)
    _time_axis(ax)
    ax.legend(loc="upper left")
    return fig


def _steps(ax: Axes, binned: pd.DataFrame, column: str, width: pd.Timedelta, **style: Any) -> None:
    """Counts as steps that span their whole bin (a single bin still draws a segment)."""
    x = [*binned.index, binned.index[-1] + width]
    y = [*binned[column], binned[column].iloc[-1]]
    ax.step(x, y, where="post", **style)
    # counts: a scale from zero, or small changes look dramatic; the top fits every line
    # drawn so far (fixed at the first line's maximum, a taller second one ran off the chart)
    ax.autoscale(enable=True, axis="y")
    ax.set_ylim(bottom=0)


def throughput_chart(
    frame: pd.DataFrame, *, freq: str | None = None, ax: Axes | None = None
) -> Figure:
    """Requests per time bin (``freq``, else :func:`bin_width`), split into ok and failed.

    Takes ``samples_frame()`` (``ok`` column) or ``logs_frame()`` (its ``request`` events,
    failures by ``status_code >= 400``).
    """
    fig, ax = _axes(ax)
    title = "Throughput (requests per interval)"
    data = frame
    if _has(frame, "event"):
        data = _events(frame, "request")
    if not _has(data, "timestamp"):
        return _no_data(fig, ax, title)
    data = data.loc[data["timestamp"].notna()]
    if data.empty:
        return _no_data(fig, ax, title)
    if "ok" in data.columns:
        ok = data["ok"].fillna(False).astype(bool)
    elif "status_code" in data.columns:
        ok = pd.to_numeric(data["status_code"], errors="coerce").fillna(0).lt(400)
    else:
        ok = pd.Series(True, index=data.index)
    outcome = ok.map({True: "ok", False: "failed"})
    binned, width = _per_bin(data.assign(outcome=outcome), freq, by="outcome")
    series = (("ok", "tab:blue"), ("failed", "tab:red"))
    return _binned_steps(fig, ax, binned, width, series, title=title, ylabel="requests")


def latency_percentiles_chart(samples: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """p50 / p95 / p99 request latency per operation, exact from the stored samples."""
    fig, ax = _axes(ax)
    title = "Latency percentiles by operation"
    if not _has(samples, "operation", "duration_ms"):
        return _no_data(fig, ax, title)
    durations = samples.dropna(subset=["duration_ms"])
    if durations.empty:
        return _no_data(fig, ax, title)
    grouped = durations.groupby(durations["operation"].fillna("unknown").astype(str))["duration_ms"]
    table = pd.DataFrame({f"p{q}": grouped.quantile(q / 100) for q in (50, 95, 99)})
    table.plot.bar(ax=ax, color=["tab:green", "tab:orange", "tab:red"], rot=0)
    ax.set(title=title, xlabel="operation", ylabel="latency (ms)")
    return fig


def errors_over_time_chart(
    errors: pd.DataFrame,
    *,
    by: str = "category",
    freq: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Error contexts per time bin (``freq``, else :func:`bin_width`), stacked by ``category``
    (or ``severity``)."""
    fig, ax = _axes(ax)
    title = f"Errors by {by} over time"
    if not _has(errors, "timestamp", by):
        return _no_data(fig, ax, title)
    data = errors.loc[errors["timestamp"].notna()]
    if data.empty:
        return _no_data(fig, ax, title)
    binned, width = _per_bin(data, freq, by=by, bins=30)  # bars: keep them countable
    bottom = np.zeros(len(binned))
    x = binned.index.to_numpy()
    for column in binned.columns:
        heights = binned[column].to_numpy()
        bar_width = width.to_timedelta64() * 0.9
        ax.bar(x, heights, width=bar_width, bottom=bottom, align="edge", label=column)
        bottom = bottom + heights
    ax.set(title=f"{title}, {_describe(width)} bins", ylabel="errors")
    _time_axis(ax)
    ax.legend(title=by, fontsize="small")
    return fig


def errors_by_category_severity_chart(errors: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """Error counts per category, stacked by severity (a summary without the time axis)."""
    fig, ax = _axes(ax)
    title = "Errors by category and severity"
    if not _has(errors, "category", "severity"):
        return _no_data(fig, ax, title)
    table = pd.crosstab(
        errors["category"].fillna("unknown").astype(str),
        errors["severity"].fillna("unknown").astype(str),
    )
    order = [s for s in ("low", "medium", "high", "critical") if s in table.columns]
    table = table[order + [c for c in table.columns if c not in order]]
    table.plot.barh(ax=ax, stacked=True)
    ax.set(title=title, xlabel="errors", ylabel="category")
    ax.legend(title="severity", fontsize="small")
    return fig


def success_rate_chart(report: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """Share of attempted writes that landed, per CMDB class, from ``run_report(s)_frame``.

    Attempted = create + update + retire rows; failed = ``failed`` (and ``quarantined``) rows.
    A class with nothing to write shows 100 %.
    """
    fig, ax = _axes(ax)
    title = "Success rate by class"
    if not _has(report, "table", "action", "count"):
        return _no_data(fig, ax, title)
    action = report["action"].astype(str).str.lower()
    by_table = report.groupby("table")["count"]
    attempted = report.loc[action.isin(WRITE_ACTIONS)].groupby("table")["count"].sum()
    failed = report.loc[action.isin(FAILURE_ACTIONS)].groupby("table")["count"].sum()
    tables = by_table.sum().index
    attempted = attempted.reindex(tables, fill_value=0)
    failed = failed.reindex(tables, fill_value=0)
    denominator = attempted.where(attempted > 0)
    rate = (1 - failed / denominator).clip(lower=0).mul(100).fillna(100.0).sort_values()
    colors = ["tab:green" if r >= 99 else "tab:orange" if r >= 90 else "tab:red" for r in rate]
    ax.barh(rate.index.astype(str), rate.to_numpy(), color=colors)
    ax.set_xlim(0, 100)
    ax.set(title=title, xlabel="attempted writes that succeeded (%)", ylabel="class")
    return fig


def retries_chart(logs: pd.DataFrame, *, freq: str | None = None, ax: Axes | None = None) -> Figure:
    """Retries scheduled and HTTP 429 (rate limited) responses per time bin, from the log."""
    fig, ax = _axes(ax)
    title = "Retries and 429s over time"
    retries = _events(logs, "retry_scheduled").assign(kind="retries")
    limited = _events(logs, "rate_limited").assign(kind="429 rate limited")
    data = pd.concat([retries, limited], ignore_index=True)
    if data.empty:
        return _no_data(fig, ax, title)
    binned, width = _per_bin(data, freq, by="kind")
    series = (("retries", "tab:orange"), ("429 rate limited", "tab:red"))
    return _binned_steps(fig, ax, binned, width, series, title=title, ylabel="events")


def breaker_timeline_chart(logs: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """Circuit-breaker state (closed / half-open / open) over time, one line per breaker."""
    fig, ax = _axes(ax)
    title = "Circuit breaker state"
    changes = _events(logs, "breaker_state_change")
    if changes.empty or "new" not in changes.columns:
        return _no_data(fig, ax, title)
    names = (
        changes["breaker"] if "breaker" in changes.columns else pd.Series("breaker", changes.index)
    )
    runs = changes["run_id"] if "run_id" in changes.columns else pd.Series("", changes.index)
    changes = changes.assign(breaker=names.fillna("breaker"), run_id=runs.fillna(""))
    colors: dict[str, Any] = {}
    # each run's breaker is its own: one segment per run, starting from its first ``old``
    # (merged, a run that began closed had shown the previous run's open breaker)
    for (name, _run), group in changes.groupby(["breaker", "run_id"], sort=False):
        group = group.sort_values("timestamp")
        levels = group["new"].astype(str).str.lower().map(BREAKER_LEVELS)
        first_old = str(group["old"].iloc[0]).lower() if "old" in group.columns else "closed"
        stamps = _naive_utc(group["timestamp"])
        times = [stamps[0], *stamps]
        values = [BREAKER_LEVELS.get(first_old, 0), *levels.fillna(0)]
        style = {"color": colors[name]} if name in colors else {"label": str(name)}
        (line,) = ax.step(times, values, where="post", **style)
        colors.setdefault(name, line.get_color())
    ax.set_yticks(list(BREAKER_LEVELS.values()), ["closed", "half-open", "open"])
    ax.set_ylim(-0.3, 2.3)
    ax.set_title(title)
    _time_axis(ax)
    ax.legend(loc="upper left")
    return fig


def health_history_chart(health: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """Each health check's status (pass / warn / fail) over time, from ``health_frame``."""
    fig, ax = _axes(ax)
    title = "Health history"
    if not _has(health, "checked_at", "check", "status"):
        return _no_data(fig, ax, title)
    data = health.loc[health["checked_at"].notna()]
    if data.empty:
        return _no_data(fig, ax, title)
    levels = data["status"].astype(str).str.lower().map(HEALTH_LEVELS).fillna(2).astype(int)
    checks = sorted(data["check"].astype(str).unique())
    rows = data["check"].astype(str).map({c: i for i, c in enumerate(checks)})
    times = _naive_utc(data["checked_at"])
    ax.scatter(times, rows, c=[STATUS_COLORS[v] for v in levels], s=60, marker="s")
    ax.set_yticks(range(len(checks)), checks)
    ax.set_ylim(-0.5, len(checks) - 0.5)
    ax.set_title(f"{title} (green pass · orange warn · red fail)")
    _time_axis(ax)
    return fig


def data_quality_chart(issues: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """Data-quality issues per validation rule (weighted by ``affected_records`` if present).

    Takes a frame with a ``rule`` (or ``issue_type``) column: the sync engine's quality frame
    (one row per issue), ``pd.DataFrame(report["data_quality"]["by_rule"])`` (a ``count``
    per rule), or the ``data_quality_issue`` events of a log (``affected_records``).
    """
    fig, ax = _axes(ax)
    title = "Data-quality issues by rule"
    data = issues
    if _has(issues, "event"):
        data = issues.loc[issues["event"] == "data_quality_issue"]
    column = next((c for c in ("rule", "issue_type") if _has(data, c)), None)
    if column is None:
        return _no_data(fig, ax, title)
    weight_column = next((c for c in ("affected_records", "count") if c in data.columns), None)
    weights = (
        pd.to_numeric(data[weight_column], errors="coerce").fillna(1)
        if weight_column
        else pd.Series(1, index=data.index)
    )
    counts = weights.groupby(data[column].fillna("unknown").astype(str)).sum().sort_values()
    ax.barh(counts.index, counts.to_numpy(), color="tab:purple")
    ax.set(title=title, xlabel="records affected", ylabel="rule")
    return fig


def _linking_counts(stats: Mapping[str, Any]) -> dict[str, float]:
    """Counts from a report's ``relationships`` (``created``/``existing`` are both linked)."""
    numbers = {
        str(k): v
        for k, v in stats.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("wanted", "rate")
    }
    if "created" in numbers or "existing" in numbers:
        numbers["linked"] = numbers.pop("created", 0) + numbers.pop("existing", 0)
    return {k: v for k, v in numbers.items() if v or k in ("linked", "orphans", "failed")}


def relationship_chart(
    linking: Mapping[str, Any] | pd.DataFrame, *, ax: Axes | None = None
) -> Figure:
    """Relationship linking outcome: linked / orphans / failed.

    Takes counts (a run report's ``relationships`` section: ``created`` + ``existing`` count as
    linked, plus ``orphans``, ``failed``, ``queued``; or ``{"linked": .., "orphans": ..}``),
    or a frame with one row per relationship and a ``status`` column.
    """
    fig, ax = _axes(ax)
    title = "Relationship linking"
    if isinstance(linking, pd.DataFrame):
        column = next((c for c in ("status", "outcome") if c in linking.columns), None)
        counts = (
            linking[column].astype(str).value_counts().to_dict()
            if column and not linking.empty
            else {}
        )
    else:
        counts = _linking_counts(linking or {})
    if not counts or not any(counts.values()):
        return _no_data(fig, ax, title)
    order = ["linked", "orphans", "failed"]
    labels = [k for k in order if k in counts] + sorted(k for k in counts if k not in order)
    colors = {"linked": "tab:green", "orphans": "tab:orange", "failed": "tab:red"}
    bars = ax.bar(
        labels, [counts[k] for k in labels], color=[colors.get(k, "grey") for k in labels]
    )
    ax.bar_label(bars)
    ax.set_title(title)
    ax.set_ylabel("relationships")
    return fig


def run_trend_chart(runs: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """Duration of each run over time, failed runs marked red: a load history
    (``started``: ``snowkit.notebook.History.runs_table()``) or notebook runs
    (``started_at``: ``reports_history_frame``; one line per ``notebook``). A run without a
    duration (killed, or unfinished) is a red cross on the time axis."""
    fig, ax = _axes(ax)
    title = "Run duration over time"
    time_column = "started" if "started" in runs.columns else "started_at"
    if not _has(runs, time_column, "duration_s"):
        return _no_data(fig, ax, title)
    timed = runs.dropna(subset=[time_column])
    data = timed.dropna(subset=["duration_s"])
    unfinished = timed[timed["duration_s"].isna()]
    if data.empty and unfinished.empty:
        return _no_data(fig, ax, title)
    groups = data.groupby("notebook") if "notebook" in data.columns else [("load", data)]
    for name, group in groups:
        group = group.sort_values(time_column)
        times = _naive_utc(group[time_column])
        ax.plot(times, group["duration_s"].to_numpy(), marker="o", label=str(name))
        status = group["status"] if "status" in group.columns else pd.Series("ok", group.index)
        failed = ~status.isin(["ok", "success", "dry_run"]).to_numpy()
        if failed.any():
            durations = group["duration_s"].to_numpy()
            ax.scatter(times[failed], durations[failed], color="tab:red", zorder=3)
    if not unfinished.empty:
        times = _naive_utc(unfinished[time_column])
        ax.scatter(
            times,
            [0.0] * len(times),
            marker="x",
            color="tab:red",
            zorder=3,
            clip_on=False,
            label=f"no duration: killed or unfinished ({len(times)})",
        )
    ax.set(title=f"{title} (red: not successful)", ylabel="seconds")
    ax.set_ylim(bottom=0)
    _time_axis(ax, "started (UTC)")
    ax.legend(loc="best", fontsize="small")
    return fig


def _describe(width: pd.Timedelta) -> str:
    """A bin width for a title: ``250 ms``, ``5 s``, ``10 min``, ``2 h``, ``1 d``."""
    seconds = width.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds * 1000:g} ms"


__all__ = [
    "MIN_BIN",
    "TARGET_BINS",
    "bin_width",
    "breaker_timeline_chart",
    "data_quality_chart",
    "errors_by_category_severity_chart",
    "errors_over_time_chart",
    "health_history_chart",
    "latency_percentiles_chart",
    "relationship_chart",
    "retries_chart",
    "run_trend_chart",
    "success_rate_chart",
    "throughput_chart",
]
