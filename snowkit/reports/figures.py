"""Extract every PNG a notebook displayed into ``figures/`` of its run folder.

Charts shown inline live as base64 ``image/png`` outputs in the executed notebook; schedulers,
e-mails and wikis want plain files. nbconvert's ExtractOutputPreprocessor does this as part of
an export, but names files after the export and needs a writer, so this is a dozen lines of ours.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from nbformat import NotebookNode

FIGURES_DIRNAME = "figures"


def extract_figures(nb: NotebookNode, run_dir: Path) -> list[Path]:
    """Write each ``image/png`` output as ``figures/cell-<NN>-<k>.png``; return the paths.

    Cells are numbered by their position in the notebook (0-based), outputs per cell from 1.
    Outputs that are not valid base64 are skipped rather than failing the report.
    """
    written: list[Path] = []
    target = run_dir / FIGURES_DIRNAME
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        k = 0
        for output in cell.get("outputs", []):
            data = output.get("data") or {}
            png = data.get("image/png")
            if not png:
                continue
            if isinstance(png, list):
                png = "".join(png)
            try:
                raw = base64.b64decode(png, validate=False)
            except (binascii.Error, ValueError):
                continue
            k += 1
            target.mkdir(parents=True, exist_ok=True)
            path = target / f"cell-{index:02d}-{k}.png"
            path.write_bytes(raw)
            written.append(path)
    return written


__all__ = ["extract_figures"]
