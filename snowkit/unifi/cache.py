"""Last-known-good copies of each UniFi source's inventory on disk.

When a console or the cloud API is down, yesterday's inventory marked stale is more useful than
no run at all; the staleness (age) travels with the data into the run report. Written
atomically (:func:`snowkit.files.write_atomic`) so a crash never leaves a half-written cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from snowkit import paths
from snowkit.files import write_atomic
from snowkit.unifi.models.inventory import Inventory

FORMAT_VERSION = 1


@dataclass(frozen=True)
class CachedInventory:
    inventory: Inventory
    age_seconds: float
    saved_at: float


class LastKnownGoodCache:
    """``<cache_dir>/<source>.json`` per source; ``clock`` is wall-clock seconds (injectable)."""

    def __init__(
        self, directory: Path | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._directory = directory
        self._clock = clock

    @property
    def directory(self) -> Path:
        return self._directory or paths.cache_dir()

    def path(self, source: str) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in source)
        return self.directory / f"{safe}.json"

    def save(self, source: str, inventory: Inventory) -> Path:
        payload = {
            "version": FORMAT_VERSION,
            "source": source,
            "saved_at": self._clock(),
            "inventory": inventory.to_jsonable(),
        }
        # the inventory (addresses, client names) stays readable by this user only
        return write_atomic(self.path(source), orjson.dumps(payload), fsync=True, mode=0o600)

    def load(self, source: str) -> CachedInventory | None:
        """The cached inventory marked stale with its age, or None (absent or unreadable)."""
        try:
            payload = orjson.loads(self.path(source).read_bytes())
            if payload.get("version") != FORMAT_VERSION:
                return None
            saved_at = float(payload["saved_at"])
            data = payload["inventory"]
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None
        age = max(0.0, self._clock() - saved_at)
        for prov in data.get("provenance", []):
            prov["stale"] = True
            prov["age_seconds"] = round(age, 3)
        return CachedInventory(Inventory.from_dict(data), age, saved_at)
