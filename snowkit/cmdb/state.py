"""The last synced CMDB state per instance, kept locally so a rerun reads only what changed.

A no-change rerun used to re-read every CI, location and link of the source (a few paged
requests of 1,000 rows each: most of a rerun's time). This store remembers, per instance, the
rows the last run saw or wrote, each with its *version* (the server's ``sys_updated_on`` and
``sys_mod_count``), plus per-table watermarks (the highest ``sys_updated_on`` seen). How it is
used to stay correct lives in ``snowkit.cmdb.incremental``.

SQLite (stdlib, transactional, one file under ``snowkit.paths.state_dir()``): a save replaces an
instance's state in one transaction, so a crash leaves either the old state or the new one. A
missing or unreadable store just means "read everything" — it is a cache, never the truth.
The rows and the versions of a kind are two orjson blobs: loading 10,000 rows is one parse
(~10 ms) instead of 10,000 (~150 ms measured), and a no-change rerun rewrites only the small
head (watermarks, counts).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from snowkit import paths
from snowkit.cmdb.local_db import open_store

KINDS = ("ci", "loc", "rel")
#: Bumped when the stored layout changes: a state in another layout is ignored (read all).
FORMAT = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (instance TEXT, key TEXT, value TEXT, PRIMARY KEY (instance, key));
CREATE TABLE IF NOT EXISTS rows (
    instance TEXT, kind TEXT, data BLOB, PRIMARY KEY (instance, kind)
);
"""


@dataclass(frozen=True)
class EncodedRows:
    """A state's rows as stored (see :meth:`StateStore.encode_rows`)."""

    parts: list[tuple[str, bytes]]


@dataclass
class SyncState:
    """One instance's remembered state.

    ``rows[kind]`` maps sys_id → compact row (CIs and locations: the fields the plan diffs;
    links: ``parent``, ``child``, ``type``); ``versions[kind]`` maps sys_id → version;
    ``watermarks[kind]`` is the highest ``sys_updated_on`` seen; ``counts[kind]`` the server's
    record count when the state was taken; ``recent`` the link ids created at or after the link
    watermark that ``counts["rel"]`` already includes; ``signature`` names the fields read.
    """

    signature: str = ""
    rows: dict[str, dict[str, dict[str, str]]] = field(
        default_factory=lambda: {k: {} for k in KINDS}
    )
    versions: dict[str, dict[str, str]] = field(default_factory=lambda: {k: {} for k in KINDS})
    watermarks: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    recent: set[str] = field(default_factory=set)
    missing_tables: list[str] = field(default_factory=list)
    has_links: bool = False
    #: CI sys_ids whose links as parent / as child are all remembered
    covered_parents: set[str] = field(default_factory=set)
    covered_children: set[str] = field(default_factory=set)
    #: class tables probed and relationship types used (read ahead before the inventory is in)
    class_tables: list[str] = field(default_factory=list)
    rel_type_names: list[str] = field(default_factory=list)
    #: their sys_ids as last read: a type deleted and made again under another id leaves the
    #: links made with the old one, which an unchanged-input rerun must not count as there
    rel_type_ids: dict[str, str] = field(default_factory=dict)
    #: the account our writes are stamped with (``sys_updated_by``): listings leave out what
    #: it created and nobody touched since (``snowkit.cmdb.incremental.listing_query``)
    updater: str = ""
    #: per kind, the remembered record a listing since the watermark must return (chosen when
    #: saved, so a rerun can send its listings before the rows are loaded)
    canaries: dict[str, str] = field(default_factory=dict)
    #: ``incremental.input_digest`` of the last run's input when that run left the CMDB
    #: exactly as the input wants it (every write and link landed, nothing not seen, no
    #: notes): the same input against an unchanged CMDB then plans no change at all
    input_digest: str = ""
    #: no write since the state was saved (see ``StateStore.mark_writing``); not stored
    sealed: bool = True
    #: rows changed since loaded (not stored): a save must rewrite them
    dirty: bool = False
    #: the head as stored when loaded (not stored): a save that would write the same skips
    stored_head: str = field(default="", repr=False)


class StateStore:
    """``<state_dir>/cmdb/sync_state.sqlite3``: ``SyncState`` per instance key, plus when the
    schema check last passed for it."""

    def __init__(
        self, path: Path | str | None = None, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path) if path is not None else paths.state_dir() / "cmdb" / "state.sqlite3"
        self._clock = wall_clock
        self._lock = threading.Lock()
        #: instances whose stored state this store changed (marked unsealed, forgotten)
        #: since it was loaded: their next save writes whatever the head
        self._changed: set[str] = set()
        self._conn = open_store(
            self.path,
            _SCHEMA,
            what="sync state",
            advice="it only speeds up reruns: delete it and run again (the next load reads the "
            "CMDB in full)",
        )

    # -- the state -------------------------------------------------------------------------
    def load(self, instance: str) -> SyncState | None:
        """The remembered state of ``instance``, or None (never synced, or forgotten)."""
        state = self.load_head(instance)
        if state is not None:
            self.load_rows(instance, state)
        return state

    def load_rows(self, instance: str, state: SyncState) -> None:
        """Fill ``state`` (from :meth:`load_head`) with its rows and versions: the bulk of a
        state, which a rerun reads while its first requests are on the wire."""
        with self._lock:
            blobs = self._conn.execute(
                "SELECT kind, data FROM rows WHERE instance=?", (instance,)
            ).fetchall()
        for name, data in blobs:
            kind, _, part = name.partition(":")
            if kind == "covered":
                covered = state.covered_parents if part == "parents" else state.covered_children
                covered.update(orjson.loads(data))
                continue
            (state.versions if part == "versions" else state.rows)[kind] = orjson.loads(data)

    def load_head(self, instance: str) -> SyncState | None:
        """The remembered state without its rows and versions (watermarks, counts, canaries,
        ...: what the first requests of a rerun need), or None."""
        with self._lock:
            meta = dict(
                self._conn.execute(
                    "SELECT key, value FROM meta WHERE instance=?", (instance,)
                ).fetchall()
            )
        if "state" not in meta:
            return None
        head = json.loads(meta["state"])
        if head.get("format") != FORMAT:
            return None
        sealed = "writing" not in meta
        state = SyncState(
            signature=head["signature"],
            watermarks=head["watermarks"],
            counts=head["counts"],
            recent=set(head["recent"]),
            missing_tables=head["missing_tables"],
            has_links=head["has_links"],
            # stored in the head by earlier versions, in blobs since (see ``save``)
            covered_parents=set(head.get("covered_parents", ())),
            covered_children=set(head.get("covered_children", ())),
            class_tables=head["class_tables"],
            rel_type_names=head["rel_type_names"],
            rel_type_ids=head.get("rel_type_ids", {}),
            updater=head.get("updater", ""),
            canaries=head.get("canaries", {}),
            input_digest=head.get("input_digest", ""),
            sealed=sealed,
            stored_head=meta["state"],
        )
        return state

    def save(
        self,
        instance: str,
        state: SyncState,
        *,
        rows: bool = True,
        encoded: EncodedRows | None = None,
    ) -> None:
        """Replace ``instance``'s state (one transaction); ``rows=False`` keeps the stored rows
        and replaces only the head (nothing but watermarks and counts changed). ``encoded``:
        the rows as :meth:`encode_rows` gave them (encoded while a round trip was out)."""
        head = {
            "format": FORMAT,
            "signature": state.signature,
            "watermarks": state.watermarks,
            "counts": state.counts,
            "recent": sorted(state.recent),
            "missing_tables": sorted(state.missing_tables),
            "has_links": state.has_links,
            "class_tables": sorted(state.class_tables),
            "rel_type_names": sorted(state.rel_type_names),
            "rel_type_ids": state.rel_type_ids,
            "updater": state.updater,
            "canaries": state.canaries,
            "input_digest": state.input_digest,
        }
        text = json.dumps(head)
        unchanged = state.sealed and instance not in self._changed and text == state.stored_head
        if unchanged and not rows:
            return  # a no-change run: the stored state is this one already (no write, no sync)
        blobs = (encoded or self.encode_rows(state)) if rows else None
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if blobs is not None:
                    self._conn.execute("DELETE FROM rows WHERE instance=?", (instance,))
                    self._conn.executemany(
                        "INSERT INTO rows VALUES (?, ?, ?)",
                        [(instance, part, data) for part, data in blobs.parts],
                    )
                self._put(instance, "state", text)
                self._conn.execute(
                    "DELETE FROM meta WHERE instance=? AND key='writing'", (instance,)
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._changed.discard(instance)  # under the lock: a mark made after stays
        state.stored_head, state.sealed = text, True

    @staticmethod
    def encode_rows(state: SyncState) -> EncodedRows:
        """The stored form of ``state``'s rows, versions and link coverage (most of a save's
        CPU: ``SyncEngine`` encodes them while the seal's round trip is out). One blob per
        kind and part, so a 50,000-CI state never sits in memory twice as one document."""
        parts: list[tuple[str, bytes]] = []
        for kind in KINDS:
            for part, data in (("rows", state.rows), ("versions", state.versions)):
                parts.append((f"{kind}:{part}", orjson.dumps(data[kind])))
        # the link coverage changes only with the rows: a blob, not the head
        for part, ids in (("parents", state.covered_parents),
                          ("children", state.covered_children)):  # fmt: skip
            parts.append((f"covered:{part}", orjson.dumps(sorted(ids))))
        return EncodedRows(parts)

    def forget(self, instance: str) -> None:
        """Drop ``instance``'s state: the next run reads everything."""
        with self._lock:
            self._conn.execute("DELETE FROM rows WHERE instance=?", (instance,))
            self._conn.execute(
                "DELETE FROM meta WHERE instance=? AND key IN ('state', 'writing')", (instance,)
            )
            self._changed.add(instance)

    def mark_writing(self, instance: str) -> None:
        """Writes to ``instance`` are about to start: until a state is saved again (``save``,
        after the run's seal) the remembered state is *unsealed*, and a rerun lists everything
        since the watermark, our own account's creates included (a run that crashed or lost
        the instance created records the state does not know; left out of a listing, one of
        them could cancel out someone else's deletion in the counts)."""
        with self._lock:
            self._put(instance, "writing", repr(self._clock()))
            self._changed.add(instance)

    # -- the schema check ------------------------------------------------------------------
    def schema_checked_recently(self, instance: str, ttl_seconds: float) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM meta WHERE instance=? AND key='schema_ok_at'", (instance,)
            ).fetchone()
        return row is not None and 0 <= self._clock() - float(row[0]) < ttl_seconds

    def schema_passed(self, instance: str) -> None:
        with self._lock:
            self._put(instance, "schema_ok_at", repr(self._clock()))

    def _put(self, instance: str, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO meta(instance, key, value) VALUES (?, ?, ?)",
            (instance, key, value),
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
