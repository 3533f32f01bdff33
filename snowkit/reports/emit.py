"""Machine-readable sidecars a notebook leaves in its run folder.

Schedulers and tests should read results from files, not parse notebook JSON. scrapbook's
``glue`` did this but is unmaintained, so notebooks call ``emit(name, value)``: JSON for
scalars, dicts and lists, CSV for DataFrames; ``save_figure(fig, name)`` writes PNGs under
``figures/``. The run folder comes from ``run_dir=`` or ``$SNOWKIT_RUN_DIR`` (the runner sets it
for the kernel); with neither, both are no-ops so a notebook runs unchanged in JupyterLab, under
nbmake or plain papermill. Everything written passes through ``redact()`` first.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from snowkit.ops.redaction import redact

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RUN_DIR_ENV = "SNOWKIT_RUN_DIR"
FIGURES_DIRNAME = "figures"
DATA_DIRNAME = "data"

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def current_run_dir(run_dir: str | Path | None = None) -> Path | None:
    """The run folder to write into: the argument, else ``$SNOWKIT_RUN_DIR``, else None."""
    chosen = str(run_dir) if run_dir else os.environ.get(RUN_DIR_ENV, "")
    return Path(chosen) if chosen else None


def safe_name(name: str) -> str:
    """A file-name-safe stem (``"p95 by op/table"`` -> ``"p95_by_op_table"``)."""
    cleaned = _SAFE_NAME.sub("_", name).strip("._")
    if not cleaned:
        raise ValueError(f"{name!r} is not usable as a file name; use letters, digits, - or _")
    return cleaned


def emit(name: str, value: Any, *, run_dir: str | Path | None = None) -> Path | None:
    """Write ``value`` as ``data/<name>.json`` (or ``.csv`` for a DataFrame); return the path.

    Returns None (and writes nothing) outside a run. Non-JSON values (timestamps, numpy
    scalars, dataclasses) are serialized by orjson or as their ``str``.
    """
    target_dir = current_run_dir(run_dir)
    if target_dir is None:
        return None
    data_dir = target_dir / DATA_DIRNAME
    data_dir.mkdir(parents=True, exist_ok=True)
    stem = safe_name(name)
    if _is_frame(value):
        import pandas as pd

        path = data_dir / f"{stem}.csv"
        frame = value.copy()
        for column in frame.columns:
            if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column]):
                frame[column] = frame[column].map(redact)
        frame.to_csv(path, index=False)
        return path
    path = data_dir / f"{stem}.json"
    payload = orjson.dumps(
        redact(value),
        default=str,
        option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
    )
    path.write_bytes(payload + b"\n")
    return path


def save_figure(
    fig: Figure, name: str, *, run_dir: str | Path | None = None, dpi: int = 120
) -> Path | None:
    """Save ``fig`` as ``figures/<name>.png`` in the run folder; None outside a run.

    ``metadata={"Software": None}`` keeps the PNG byte-stable across matplotlib versions.
    """
    target_dir = current_run_dir(run_dir)
    if target_dir is None:
        return None
    figures = target_dir / FIGURES_DIRNAME
    figures.mkdir(parents=True, exist_ok=True)
    path = figures / f"{safe_name(name)}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return path


def _is_frame(value: Any) -> bool:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False
    return isinstance(value, pd.DataFrame)


__all__ = ["RUN_DIR_ENV", "current_run_dir", "emit", "save_figure"]
