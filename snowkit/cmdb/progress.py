"""Progress bars for long loads: tqdm.auto (a widget in Jupyter, text on a terminal).

Bars are shown only where someone can see them: in a notebook kernel or on a TTY, and never
when the caller passed ``progress=False``; otherwise a no-op stand-in keeps the call sites simple.
"""

from __future__ import annotations

import sys
from typing import Any


def in_notebook() -> bool:
    """True inside a Jupyter kernel (ZMQ shell), where tqdm.auto draws a widget."""
    try:
        from IPython import get_ipython  # type: ignore[attr-defined]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_enabled(requested: bool | None = True) -> bool:
    """Whether to draw bars: asked for, and a notebook or an interactive terminal."""
    if requested is False:
        return False
    return in_notebook() or bool(getattr(sys.stderr, "isatty", lambda: False)())


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
    """A tqdm bar (``tqdm.auto``) or a no-op one."""
    if not progress_enabled(enabled) or total <= 0:
        return _NullBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
