"""Argument checks happen before anything runs, and output into a closed pipe ends quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from snowkit.cli import main
from snowkit.cmdb.outbox import OP_CREATE, Outbox


@pytest.mark.parametrize(
    "argv",
    [
        ["load", "--retire-after-days", "-5"],
        ["load", "--retire-after-days", "nan"],
        ["audit", "show", "--limit", "-1"],
        ["reports", "list", "--limit", "0"],
    ],
)
def test_out_of_range_values_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_an_audit_trail_that_is_not_there_is_said_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "show", str(tmp_path / "typo.jsonl")]) == 4
    assert "no audit trail at" in capsys.readouterr().err


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    with Outbox() as box:
        box.enqueue_many(
            {"run_id": "r", "op": OP_CREATE, "table": "cmn_location", "source_id": f"s{n}",
             "values": {"name": "x"}}
            for n in range(3000)
        )  # fmt: skip
    reader = subprocess.Popen(
        [sys.executable, "-m", "snowkit.cli", "outbox", "show"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.readline()
    reader.stdout.close()  # like `| head -1`
    err = reader.stderr.read().decode()
    reader.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err
