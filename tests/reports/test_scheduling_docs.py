"""The scheduling docs stay true: their commands parse with the real CLI, the DAG is valid."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

from snowkit.cli import build_parser

DOCS = Path(__file__).resolve().parents[2] / "docs"
COMMAND = re.compile(r"(?:^|[\s/])snowkit (run|reports list)( [^>\n]*)?")


def _documented_commands() -> list[list[str]]:
    text = (DOCS / "scheduling.md").read_text(encoding="utf-8")
    commands = []
    for match in COMMAND.finditer(text):
        line = match.group(0).strip().removeprefix("/").split("#")[0]
        line = line.replace("%i", "prod")
        commands.append(shlex.split(line)[1:])
    return commands


def test_the_docs_show_runs_and_listing() -> None:
    kinds = {argv[0] for argv in _documented_commands()}
    assert kinds == {"run", "reports"}


@pytest.mark.parametrize("argv", _documented_commands(), ids=" ".join)
def test_every_documented_command_parses(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert callable(args.func)


def test_airflow_example_is_valid_python_that_calls_the_runner() -> None:
    source = (DOCS / "examples" / "airflow_dag.py").read_text(encoding="utf-8")
    tree = ast.parse(source)  # parsed, never imported: Airflow is not a dependency
    imports = {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert ("snowkit.reports", "run") in imports
    calls = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert "run" in calls
    assert "password" not in source.lower().replace("passwords", "")
