"""Render an executed notebook as a code-free HTML report.

Two traps this module exists to avoid (docs/architecture.md, notebook-kit notes §2.1):
papermill's ``report_mode`` only sets ``source_hidden``, which nbconvert templates ignore, so we
use ``exclude_input``; and the ``injected-parameters`` cell plus ``metadata.papermill.parameters``
would show run parameters, so the copy we render drops both (the saved executed notebook keeps
them: it is the run's log).
"""

from __future__ import annotations

import copy
from pathlib import Path

from nbconvert import HTMLExporter
from nbconvert.preprocessors import TagRemovePreprocessor
from nbformat import NotebookNode
from nbformat.v4 import new_markdown_cell

INJECTED_TAG = "injected-parameters"
PARAMETERS_TAG = "parameters"


def report_notebook(nb: NotebookNode) -> NotebookNode:
    """A copy of ``nb`` fit for a report: papermill's parameter metadata stripped."""
    clean = copy.deepcopy(nb)
    papermill_meta = clean.metadata.get("papermill")
    if isinstance(papermill_meta, dict):
        for key in ("parameters", "input_path", "output_path", "default_parameters"):
            papermill_meta.pop(key, None)
    for cell in clean.cells:
        cell_meta = cell.get("metadata", {}).get("papermill")
        if isinstance(cell_meta, dict):
            cell_meta.pop("parameters", None)
    return clean


def render_html(nb: NotebookNode, *, title: str | None = None, notice: str | None = None) -> str:
    """HTML of ``nb`` without inputs, prompts or the injected-parameters / parameters cells.

    ``notice`` (markdown) goes on top: the runner uses it for failures no cell output shows,
    such as a kernel that died.
    """
    clean = report_notebook(nb)
    if notice:
        clean.cells.insert(0, new_markdown_cell(notice))
    if title:
        clean.metadata["title"] = title
    exporter = HTMLExporter(template_name="lab", exclude_input=True)
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    remover = TagRemovePreprocessor(remove_cell_tags=[INJECTED_TAG, PARAMETERS_TAG], enabled=True)
    exporter.register_preprocessor(remover, enabled=True)
    body, _resources = exporter.from_notebook_node(clean)
    return body


def write_html(
    nb: NotebookNode, path: Path, *, title: str | None = None, notice: str | None = None
) -> Path:
    """Render and write the report; returns ``path``."""
    path.write_text(render_html(nb, title=title, notice=notice), encoding="utf-8")
    return path


__all__ = ["render_html", "report_notebook", "write_html"]
