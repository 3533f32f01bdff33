"""Frames from the on-disk formats: columns, counts, UTC timestamps, torn lines."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snowkit.analysis import (
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


def _is_utc(series: pd.Series) -> bool:
    return isinstance(series.dtype, pd.DatetimeTZDtype) and str(series.dt.tz) == "UTC"


def test_logs_frame_reads_events_and_counts_torn_and_blank_lines(
    state: dict[str, Path], b: ModuleType
) -> None:
    plan = b.log_records()
    frame = logs_frame(state["log"])
    assert len(frame) == len(plan.records)
    assert frame.attrs["skipped_lines"] == 3  # two blank lines and the torn last one
    assert _is_utc(frame["timestamp"]) and frame["timestamp"].notna().all()
    assert frame["timestamp"].iloc[0] == pd.Timestamp(b.BASE)
    requests = frame.loc[frame["event"] == "request"]
    assert len(requests) == plan.requests
    assert (requests["status_code"] == 429).sum() == plan.status_429
    # fields of other events are missing (NaN/None) on request rows, not an error
    assert frame.loc[frame["event"] == "breaker_state_change", "new"].tolist() == [
        "open",
        "half_open",
        "closed",
    ]


def test_logs_frame_accepts_several_files_in_order(state: dict[str, Path], tmp_path: Path) -> None:
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"timestamp": "2026-03-02T00:00:00Z", "event": "x"}) + "\n")
    frame = logs_frame([state["log"], extra, tmp_path / "absent.jsonl"])
    assert frame["event"].iloc[-1] == "x"


def test_missing_or_empty_sources_give_empty_frames_with_the_columns(tmp_path: Path) -> None:
    frame = logs_frame(tmp_path / "nope.jsonl")
    assert frame.empty and {"timestamp", "event", "level"} <= set(frame.columns)
    assert frame.attrs["skipped_lines"] == 0
    assert errors_frame(tmp_path / "nope").empty
    assert audit_frame(tmp_path / "nope").empty
    assert metrics_frame(tmp_path / "nope.json").empty
    assert samples_frame({}).empty
    assert run_reports_frame(tmp_path).empty
    assert health_frame([]).empty
    assert reports_history_frame(tmp_path).empty


def test_non_object_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_text('[1, 2]\n"text"\n{"timestamp": "2026-03-01T08:00:00+00:00", "event": "a"}\n')
    frame = logs_frame(path)
    assert frame["event"].tolist() == ["a"] and frame.attrs["skipped_lines"] == 2


def test_errors_frame(state: dict[str, Path]) -> None:
    frame = errors_frame(state["errors"])
    assert len(frame) == 40
    assert _is_utc(frame["timestamp"])
    assert frame.groupby("category").size().to_dict() == {
        "authentication": 10,
        "data_validation": 10,
        "rate_limit": 10,
        "servicenow_api": 10,
    }
    assert frame["details"].iloc[0] == {"attempt": 1}


def test_audit_frame_spans_rotated_files_and_drops_checkpoints_and_chain(
    state: dict[str, Path],
) -> None:
    frame = audit_frame(state["audit"])
    assert frame["seq"].tolist() == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 14]
    assert frame.attrs["checkpoints"] == 2
    assert "hash" not in frame.columns and "hmac" not in frame.columns
    assert set(frame["action"]) == {"create", "update", "delete"}
    chained = audit_frame(state["audit"], keep_chain=True)
    assert (chained["prev_hash"].iloc[1:].to_numpy() == chained["hash"].iloc[:-1].to_numpy()).all()
    assert len(audit_frame(state["audit"], rotated=False)) == 6


def test_audit_frame_reads_rotated_segments_in_chain_order(tmp_path: Path, b: ModuleType) -> None:
    # Audit segments number up with age (.1 is the oldest), unlike rotated logs.
    first, last = b.audit_records(n=2, checkpoint_every=10)
    second, last = b.audit_records(n=2, checkpoint_every=10, start_seq=3, prev_hash=last)
    third, _ = b.audit_records(n=2, checkpoint_every=10, start_seq=5, prev_hash=last)
    b.write_jsonl(tmp_path / "audit.jsonl.1", first)
    b.write_jsonl(tmp_path / "audit.jsonl.2", second)
    current = b.write_jsonl(tmp_path / "audit.jsonl", third)
    assert audit_frame(current)["seq"].tolist() == [1, 2, 3, 4, 5, 6]


def test_metrics_and_samples_frames(state: dict[str, Path]) -> None:
    ops = metrics_frame(state["metrics"])
    assert ops["operation_name"].tolist() == ["query", "create", "update"]
    assert ops.attrs["system"]["circuit_breaker_states"] == {"servicenow": "closed"}
    assert _is_utc(ops["last_updated"])
    samples = samples_frame(state["metrics"])
    assert len(samples) == 200 and _is_utc(samples["timestamp"])
    assert samples["duration_ms"].dtype.kind == "f"


def test_run_report_frames(state: dict[str, Path], b: ModuleType) -> None:
    one = run_report_frame(state["report"])
    assert (
        one.set_index(["table", "action"])["count"].to_dict()[("cmdb_ci_ip_switch", "create")] == 10
    )
    report = b.run_report()
    planned = sum(sum(v.values()) for v in report["counts"].values())
    assert one["count"].sum() == planned + len(report["failures"])
    failed = one.loc[one["action"] == "failed"].set_index("table")["count"].to_dict()
    assert failed == {"cmdb_ci_ip_switch": 1, "cmdb_ci_wap_network": 3}
    assert one["started_at"].iloc[0] == pd.Timestamp(b.BASE)  # from the report's "started"
    assert one.attrs["report"]["relationships"]["created"] == 20
    both = run_reports_frame(state["runs"])
    assert both["run_id"].unique().tolist() == [b.RUN_ID, "20260302T080000Z-d4e5f6"]
    assert _is_utc(both["started_at"])
    as_rows = run_report_frame(
        {"run_id": "r", "counts": [{"class": "cmdb_ci_netgear", "action": "create", "count": 4}]}
    )
    assert as_rows[["table", "count"]].values.tolist() == [["cmdb_ci_netgear", 4]]


def test_health_frame_from_documents_and_files(b: ModuleType, tmp_path: Path) -> None:
    docs = b.health_docs()
    frame = health_frame(docs)
    assert len(frame) == 6 * 3 and _is_utc(frame["checked_at"])
    assert (frame["status"] == "warn").sum() == 1
    path = tmp_path / "health.json"
    path.write_text(json.dumps(docs[0]))
    assert len(health_frame(path)) == 3
    lines = tmp_path / "health.jsonl"
    lines.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    assert len(health_frame(lines)) == 18


def test_reports_history_frame(tmp_path: Path, b: ModuleType) -> None:
    b.reports_tree(tmp_path)
    frame = reports_history_frame(tmp_path)
    assert len(frame) == 7 and frame.attrs["incomplete_runs"] == 1  # the torn run.json
    assert frame["started_at"].is_monotonic_increasing
    assert frame.loc[frame["status"] == "failed", "error"].tolist() == ["RuntimeError"]
    assert frame.groupby("notebook")["duration_s"].mean().to_dict() == {
        "health_check": 31.0,
        "load": 31.0,
    }


def test_a_killed_run_is_in_the_history_and_the_running_one_is_not(
    tmp_path: Path, b: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs killed before their run.json had been left out of the operations report."""
    b.reports_tree(tmp_path)
    killed = tmp_path / "load" / "2026-03-05" / "20260305T040000Z-dead01"
    running = tmp_path / "operations_report" / "2026-03-05" / "20260305T050000Z-live01"
    for folder in (killed, running):
        folder.mkdir(parents=True)
        (folder / "load.ipynb").write_text("{}")
    monkeypatch.setenv("SNOWKIT_RUN_DIR", str(running))
    frame = reports_history_frame(tmp_path)
    last = frame.iloc[-1]
    assert last["run_id"] == killed.name and last["status"] == "incomplete"
    assert last["started_at"] == pd.Timestamp("2026-03-05T04:00:00Z")
    assert pd.isna(last["duration_s"]) and frame.attrs["incomplete_runs"] == 2
    assert running.name not in set(frame["run_id"])


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.text(max_size=8),
    st.floats(allow_nan=False),
)
_records = st.lists(
    st.dictionaries(st.sampled_from(["a", "b", "c", "event", "x y"]), _values, max_size=5),
    max_size=30,
)
_garbage = st.lists(st.sampled_from(["", "   ", "{", '{"a": 1', "nope", "[1]", "3"]), max_size=5)


@settings(max_examples=60, deadline=None)
@given(records=_records, garbage=_garbage, data=st.data())
def test_property_every_object_line_is_a_row_and_everything_else_is_counted(
    tmp_path_factory, records: list[dict], garbage: list[str], data: st.DataObject
) -> None:
    lines = [json.dumps(r) for r in records]
    for junk in garbage:
        lines.insert(data.draw(st.integers(0, len(lines))), junk)
    path = tmp_path_factory.mktemp("prop") / "x.jsonl"
    text = "".join(line + "\n" for line in lines)
    if lines and lines[-1] and data.draw(st.booleans()):
        text = text[:-1]  # the last line without its newline: a torn or unflushed write
    path.write_text(text)
    frame = logs_frame(path)
    assert len(frame) == len(records)
    assert frame.attrs["skipped_lines"] == len(garbage)
    for i, record in enumerate(records):
        for key, value in record.items():
            got = frame[key].iloc[i]
            assert (
                got == value
                or (value is None and pd.isna(got))
                or (isinstance(value, float) and abs(got - value) <= 1e-9 * max(1.0, abs(value)))
            ), (key, value, got)


def test_health_frame_also_reads_the_simple_shape() -> None:
    doc = {
        "status": "fail",
        "checked_at": "2026-03-01T08:00:00Z",
        "checks": {"db": {"status": "fail", "message": "down", "response_time_ms": 5}},
    }
    row = health_frame(doc).iloc[0]
    assert (row["check"], row["status"], row["message"], row["overall"]) == (
        "db",
        "fail",
        "down",
        "fail",
    )
    assert row["checked_at"] == pd.Timestamp("2026-03-01T08:00:00Z")


def test_nan_and_infinity_written_by_stdlib_json_are_read(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"timestamp": "2026-03-01T08:00:00Z", "value": NaN, "top": Infinity}\n')
    frame = logs_frame(path)
    assert frame.attrs["skipped_lines"] == 0 and pd.isna(frame["value"].iloc[0])
    assert frame["top"].iloc[0] == float("inf")


def test_logs_frame_reads_a_rotated_family_oldest_first(tmp_path: Path, b: ModuleType) -> None:
    log = tmp_path / "snowkit.jsonl"
    for name, second in (("snowkit.jsonl.2", 0), ("snowkit.jsonl.1", 1), ("snowkit.jsonl", 2)):
        b.write_jsonl(tmp_path / name, [{"timestamp": b.ts(second), "event": name}])
    (tmp_path / "snowkit.jsonl.bak").write_text("not part of the family\n")
    assert logs_frame(log, rotated=True)["event"].tolist() == [
        "snowkit.jsonl.2",
        "snowkit.jsonl.1",
        "snowkit.jsonl",
    ]
    assert len(logs_frame(log)) == 1
