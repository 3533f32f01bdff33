"""`snowkit audit verify|show` and `snowkit metrics`: exit codes and what they print."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from snowkit import paths
from snowkit.cli import main
from snowkit.ops.audit import AuditTrail
from snowkit.ops.metrics import MetricsCollector

KEY = "cli-test-key-0123456789abcdef"


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SNOWKIT_AUDIT_KEY", raising=False)
    path = tmp_path / "audit.key"
    path.write_text(KEY + "\n")
    return path


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    with AuditTrail(path, key=KEY.encode(), checkpoint_every=5, fsync=False) as t:
        for i in range(1, 13):
            t.record("create", "cmdb_ci", f"{i:032x}", run_id="run-a" if i <= 6 else "run-b")
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _verify(trail: Path, key_file: Path, *extra: str) -> int:
    return main(["audit", "verify", str(trail), "--key-file", str(key_file), *extra])


def test_intact_trail_exits_zero_with_a_summary(
    trail: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _verify(trail, key_file) == 0
    out = capsys.readouterr().out
    assert "ok: 12 entries" in out and len(out.strip().splitlines()) == 1


def test_edited_entry_exits_one_naming_seq_and_line(
    trail: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _lines(trail)
    lines[2] = lines[2].replace(b'"create"', b'"delete"')
    trail.write_bytes(b"".join(lines))
    assert _verify(trail, key_file) == 1
    err = capsys.readouterr().err
    assert "edited" in err and "seq 3" in err and "line 3" in err


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda lines: lines[:3] + lines[4:], "deleted"),
        (lambda lines: [lines[1], lines[0], *lines[2:]], "reordered"),
        (lambda lines: lines[:-2], "truncated"),
    ],
)
def test_tampering_kinds_exit_one(
    trail: Path,
    key_file: Path,
    capsys: pytest.CaptureFixture[str],
    mutate: object,
    problem: str,
) -> None:
    trail.write_bytes(b"".join(mutate(_lines(trail))))  # type: ignore[operator]
    assert _verify(trail, key_file) == 1
    assert problem in capsys.readouterr().err


def test_wrong_key_is_a_bad_signature(
    trail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], key_file: Path
) -> None:
    other = tmp_path / "other.key"
    other.write_text("not-the-right-key")
    assert _verify(trail, other) == 1
    assert "bad_signature" in capsys.readouterr().err


def test_half_written_last_line_has_its_own_exit_code(
    trail: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(trail, "ab") as handle:
        handle.write(b'{"seq":13')
    assert _verify(trail, key_file) == 3
    assert "half-written" in capsys.readouterr().err


def test_missing_trail_or_key_cannot_verify(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _verify(tmp_path / "nothing.jsonl", key_file) == 4
    assert main(["audit", "verify", str(tmp_path / "x"), "--key-file", str(tmp_path / "no")]) == 4


def test_environment_key_is_used(
    trail: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SNOWKIT_AUDIT_KEY", KEY)
    assert main(["audit", "verify", str(trail)]) == 0
    assert KEY not in capsys.readouterr().out


def test_default_path_and_generated_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNOWKIT_AUDIT_KEY", raising=False)
    with AuditTrail() as trail:
        trail.record("create", "cmdb_ci", "a" * 32)
    assert main(["audit", "verify"]) == 0


def test_verify_json_output(
    trail: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _verify(trail, key_file, "--json") == 0
    result = orjson.loads(capsys.readouterr().out)
    assert result["ok"] is True and result["entries"] == 12


def test_show_lists_entries_and_filters_by_run(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "show", str(trail), "--run", "run-a"]) == 0
    out = capsys.readouterr().out
    assert "6 entries" in out and "run-b" not in out
    assert main(["audit", "show", str(trail), "--json"]) == 0
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in rows] == list(range(1, 13))


def test_metrics_command_formats(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["metrics"]) == 1  # no runs yet
    capsys.readouterr()
    collector = MetricsCollector()
    collector.record_request("GET", "query", 200, 12.0, table="cmdb_ci")
    for run_id in ("20261128T000000Z-aaaaaa", "20261129T000000Z-bbbbbb"):
        run_dir = paths.runs_dir() / run_id
        collector.write_snapshot(run_dir / "metrics.json")
        collector.write_textfile(run_dir / "metrics.prom")
    assert main(["metrics"]) == 0
    out = capsys.readouterr().out
    assert "20261129T000000Z-bbbbbb" in out and "cmdb_ci" in out
    assert main(["metrics", "--run", "20261128T000000Z-aaaaaa", "--format", "json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["operations"][0]["total_requests"] == 1
    assert main(["metrics", "--format", "prom"]) == 0
    assert "snowkit_requests_total" in capsys.readouterr().out
    prom = paths.runs_dir() / "20261129T000000Z-bbbbbb" / "metrics.prom"
    assert main(["metrics", "--textfile", str(prom)]) == 0
    assert 'snowkit_requests_total{method="GET"' in capsys.readouterr().out


def test_audit_recover_moves_a_torn_line_aside(
    trail: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(trail, "ab") as handle:
        handle.write(b'{"seq":13,"act')
    assert _verify(trail, key_file) == 3
    capsys.readouterr()
    assert main(["audit", "recover", str(trail), "--key-file", str(key_file)]) == 0
    out = capsys.readouterr().out
    side_files = list(trail.parent.glob("audit.jsonl.incomplete-*"))
    assert len(side_files) == 1 and str(side_files[0]) in out
    assert side_files[0].read_bytes() == b'{"seq":13,"act'
    assert _verify(trail, key_file) == 0
    err = capsys.readouterr().err
    assert "recovered from a crash" in err and str(side_files[0]) in err
    assert main(["audit", "recover", str(trail), "--key-file", str(key_file)]) == 0
    assert "nothing to recover" in capsys.readouterr().out


def test_audit_recover_without_a_trail_exits_4(
    tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.jsonl"
    assert main(["audit", "recover", str(missing), "--key-file", str(key_file)]) == 4
    assert "no audit trail" in capsys.readouterr().err


def _cut_after_first_checkpoint(trail: Path) -> None:
    lines = _lines(trail)
    first = next(i for i, raw in enumerate(lines) if b'"type":"checkpoint"' in raw)
    trail.write_bytes(b"".join(lines[: first + 1]))


def test_a_cut_after_a_checkpoint_is_caught_by_the_default_anchor(
    trail: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _verify(trail, key_file) == 0
    assert "anchored at seq 12" in capsys.readouterr().out
    _cut_after_first_checkpoint(trail)  # the trail alone still looks whole
    assert _verify(trail, key_file) == 1
    err = capsys.readouterr().err
    assert "truncated" in err and "seq 12" in err and "seals seq 5" in err
    assert _verify(trail, key_file, "--no-anchor") == 0  # the documented limit without it


def test_anchor_option_and_missing_anchor_warning(
    tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "elsewhere" / "audit.jsonl"
    anchor = tmp_path / "other-storage" / "anchor.json"
    with AuditTrail(path, key=KEY.encode(), fsync=False, anchor_path=anchor) as trail:
        trail.record("create", "cmdb_ci", "a" * 32)
    assert _verify(path, key_file) == 0  # the default place holds no anchor: a warning
    captured = capsys.readouterr()
    assert "no audit anchor" in captured.err and "cannot be ruled out" in captured.err
    assert _verify(path, key_file, "--anchor", str(anchor)) == 0
    captured = capsys.readouterr()
    assert "anchored at seq 1" in captured.out and captured.err == ""
    assert _verify(path, key_file, "--anchor", str(anchor), "--json") == 0
    assert orjson.loads(capsys.readouterr().out)["anchor"]["state"] == "verified"
    with pytest.raises(SystemExit):  # one or the other
        main(["audit", "verify", str(path), "--anchor", str(anchor), "--no-anchor"])


def test_a_forged_anchor_exits_one(
    trail: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    anchor = trail.with_name("audit.jsonl.anchor.json")
    forged = orjson.loads(anchor.read_bytes())
    forged["seq"] = 5
    anchor.write_bytes(orjson.dumps(forged))
    assert _verify(trail, key_file) == 1
    assert "bad_anchor" in capsys.readouterr().err


def test_a_deleted_checkpoint_exits_one(
    trail: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _lines(trail)
    first = next(i for i, raw in enumerate(lines) if b'"type":"checkpoint"' in raw)
    trail.write_bytes(b"".join(lines[:first] + lines[first + 1 :]))
    assert _verify(trail, key_file) == 1
    assert "checkpoint_deleted" in capsys.readouterr().err


def test_require_anchor_turns_a_missing_anchor_into_exit_4(
    trail: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _verify(trail, key_file, "--require-anchor") == 0
    trail.with_name("audit.jsonl.anchor.json").unlink()
    assert _verify(trail, key_file) == 0
    capsys.readouterr()
    assert _verify(trail, key_file, "--require-anchor") == 4
    assert "cannot rule out truncation" in capsys.readouterr().err


def test_a_verify_while_a_writer_is_mid_batch_is_no_tampering_alarm(
    trail: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run during an open batch, it had said 'truncated' (exit 1: tampered)."""
    writer = AuditTrail(trail, key=KEY.encode(), checkpoint_every=5, fsync=False)
    try:
        with writer.batch():
            writer.record("create", "cmdb_ci", "f" * 32, run_id="run-c")
            assert _verify(trail, key_file) == 4
            assert "a process is writing the trail" in capsys.readouterr().err
    finally:
        writer.close()
    assert _verify(trail, key_file) == 0
