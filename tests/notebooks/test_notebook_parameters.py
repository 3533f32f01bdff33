"""Every notebook documents its parameters for ``papermill --help-notebook`` (no kernel needed)."""

from __future__ import annotations

from pathlib import Path

import papermill as pm
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_parameter_has_a_type_a_default_and_an_explanation(path: Path) -> None:
    parameters = pm.inspect_notebook(str(path))
    assert parameters["instance"]["default"] == '"embedded"'  # offline by default
    for name, spec in parameters.items():
        assert spec["inferred_type_name"] in {"str", "int", "float", "bool"}, name
        assert spec["help"], f"{path.name}: parameter {name} has no explaining comment"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_stay_short_so_logic_lives_in_the_library(path: Path) -> None:
    import nbformat

    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type == "code" and "parameters" not in cell.metadata.get("tags", []):
            lines = [line for line in cell.source.splitlines() if line.strip()]
            assert len(lines) <= 12, f"{path.name} cell {index}: move the logic to snowkit"
            assert not any(line.lstrip().startswith(("def ", "class ")) for line in lines)
