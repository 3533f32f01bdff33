"""Progress bars for long loads, drawn only where someone watches them.

tqdm draws the bars; this module decides *which* bar, because ``tqdm.auto`` decides badly for
us: in a notebook kernel without ipywidgets it warns (``TqdmWarning``) and falls back to text
bars written to the cell's stderr, which end up as fragments in executed notebooks and HTML
reports. The rules (:func:`bar_kind`):

- ``progress=False`` from the caller: no bar;
- under the report runner (``SNOWKIT_RUN_DIR`` set): no bar, nobody watches a papermill run;
- in a notebook kernel: the widget bar when ipywidgets is importable, else no bar (a text bar
  would land in the cell output, the very litter we avoid);
- elsewhere: a text bar when stderr is a terminal, else none (cron, CI, pipes, pytest).

Everything else gets a no-op stand-in, so call sites stay the same either way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from importlib.util import find_spec
from typing import Any, Literal

#: Set by ``snowkit.reports.run`` for the kernel (the same name as ``snowkit.reports.RUN_DIR_ENV``;
#: spelled out here so the sync engine does not import the report runner).
RUN_DIR_ENV = "SNOWKIT_RUN_DIR"

BarKind = Literal["widget", "text", "none"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (ZMQ shell): JupyterLab, papermill, nbmake."""
    try:
        from IPython import get_ipython  # type: ignore[attr-defined]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def widgets_available() -> bool:
    """Whether ipywidgets can be imported (``make lab`` installs it; the base install not)."""
    return find_spec("ipywidgets") is not None


def _stderr_is_tty() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def bar_kind(
    requested: bool | None = True,
    *,
    env: Mapping[str, str] | None = None,
    notebook: bool | None = None,
    widgets: bool | None = None,
    stderr_tty: bool | None = None,
) -> BarKind:
    """Which bar to draw: ``"widget"``, ``"text"`` or ``"none"`` (rules in the module doc).

    ``requested`` True or None means "where it can be seen", False means never. The keyword
    arguments default to the real environment; tests pass them to pin each rule.
    """
    if requested is False:
        return "none"
    environ = os.environ if env is None else env
    if environ.get(RUN_DIR_ENV):
        return "none"
    if in_notebook() if notebook is None else notebook:
        has_widgets = widgets_available() if widgets is None else widgets
        return "widget" if has_widgets else "none"
    tty = _stderr_is_tty() if stderr_tty is None else stderr_tty
    return "text" if tty else "none"


def progress_enabled(requested: bool | None = True) -> bool:
    """Whether a bar will be drawn here (see :func:`bar_kind`)."""
    return bar_kind(requested) != "none"


class _NullBar:
    """The no-op bar used when progress is off."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NullBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bar(total: int, desc: str, *, enabled: bool | None = True, unit: str = "rec") -> Any:
    """A tqdm bar of the kind :func:`bar_kind` picks, or a no-op one."""
    kind = bar_kind(enabled) if total > 0 else "none"
    if kind == "none":
        return _NullBar()
    if kind == "widget":
        from tqdm.notebook import tqdm as widget_tqdm

        return widget_tqdm(total=total, desc=desc, unit=unit, leave=False)
    from tqdm import tqdm as text_tqdm

    return text_tqdm(
        total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr
    )


__all__ = [
    "RUN_DIR_ENV",
    "BarKind",
    "bar",
    "bar_kind",
    "in_notebook",
    "progress_enabled",
    "widgets_available",
]
