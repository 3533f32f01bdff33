"""Showing things in a notebook, and saving charts into the runner's report folder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def show(fig: Figure, name: str) -> Figure:
    """Save ``fig`` as ``figures/<name>.png`` in the runner's report folder, then return it.

    Outside ``snowkit run`` the save is a no-op. Return the figure as the cell's last value so
    Jupyter shows it once (library charts are not registered with pyplot).
    """
    from snowkit.reports import save_figure

    save_figure(fig, name)
    return fig


def display(obj: Any) -> None:
    """``IPython.display.display`` inside a kernel, ``print`` elsewhere (scripts, tests)."""
    try:
        from IPython.display import display as ipy_display
    except ImportError:  # pragma: no cover - ipykernel is a dependency
        print(obj)
        return
    ipy_display(obj)


def markdown(text: str) -> None:
    """Show ``text`` as Markdown in a kernel (plain text elsewhere)."""
    try:
        from IPython.display import Markdown
    except ImportError:  # pragma: no cover
        print(text)
        return
    display(Markdown(text))
