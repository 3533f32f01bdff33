"""Expose the fixture builders (tests/analysis/builders.py) and a realistic state tree."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

_spec = importlib.util.spec_from_file_location(
    "snowkit_analysis_builders", Path(__file__).with_name("builders.py")
)
assert _spec and _spec.loader
builders: ModuleType = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = builders  # dataclasses look their module up
_spec.loader.exec_module(builders)


@pytest.fixture
def b() -> ModuleType:
    """The builders module."""
    return builders


@pytest.fixture
def state(tmp_path: Path) -> dict[str, Path]:
    """A state tree as a finished load run leaves it (logs torn at the end, as after a crash)."""
    home = tmp_path / "state"
    log = builders.write_jsonl(home / "logs" / "snowkit.jsonl", builders.log_records().records)
    builders.tear(log)
    errors = builders.write_jsonl(home / "errors" / "errors.jsonl", builders.error_records())
    older, last = builders.audit_records(n=6, checkpoint_every=5)
    newer, _ = builders.audit_records(n=6, checkpoint_every=5, start_seq=8, prev_hash=last)
    builders.write_jsonl(home / "audit" / "audit.jsonl.1", older)
    audit = builders.write_jsonl(home / "audit" / "audit.jsonl", newer)
    run_dir = home / "runs" / builders.RUN_ID
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(builders.metrics_snapshot()))
    (run_dir / "report.json").write_text(json.dumps(builders.run_report()))
    second = home / "runs" / "20260302T080000Z-d4e5f6"
    second.mkdir()
    (second / "report.json").write_text(
        json.dumps(builders.run_report("20260302T080000Z-d4e5f6", started=86400))
    )
    return {
        "log": log,
        "errors": errors,
        "audit": audit,
        "metrics": run_dir / "metrics.json",
        "report": run_dir / "report.json",
        "runs": home / "runs",
    }
