"""Hand the GIL over sooner while CPU-bound work runs beside threads waiting on the network.

Why: a load transforms the inventory (CPU-bound, tens of milliseconds) while its first round of
reads is on the wire in other threads. With CPython's default 5 ms switch interval each of
those threads waits up to 5 ms every time it needs the GIL back (to send, to read a TLS record,
to parse), so a 60 ms read took 160-220 ms beside the transform (measured on the no-change
rerun benchmark). A 0.5 ms interval for the length of the overlap lets both proceed; it costs
a few more switches, nothing else, and is restored afterwards.

A process-wide setting: nested uses keep the outermost's saved value, and an interval already
shorter than asked is left alone.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

#: The switch interval while the overlap lasts (seconds).
RESPONSIVE_INTERVAL = 0.0005

_lock = threading.Lock()
_depth = 0
_saved: float | None = None


@contextlib.contextmanager
def responsive_threads(interval: float = RESPONSIVE_INTERVAL) -> Iterator[None]:
    """Use a short GIL switch interval for the duration of the block."""
    global _depth, _saved
    with _lock:
        _depth += 1
        if _depth == 1:
            current = sys.getswitchinterval()
            _saved = current if interval < current else None
            if _saved is not None:
                sys.setswitchinterval(interval)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                sys.setswitchinterval(_saved)
                _saved = None
