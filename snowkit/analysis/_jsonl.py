"""Read JSON-lines files into pandas, fast and tolerant of what crashes leave behind.

``pandas.read_json(lines=True)`` aborts on the first malformed line, and a log being written
while we read it always ends in a half-written line; a naive ``json.loads`` loop feeding
``DataFrame(list_of_dicts)`` is slow and keeps a million dicts alive. So we parse with orjson
and distribute values straight into per-key column lists (missing keys padded with ``None``),
then build the frame once. ``benchmarks/analysis_frames.py`` measures the difference.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

PathLike = str | Path


def as_paths(path_or_paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """One path or many, as a list of ``Path`` (missing files are kept; readers skip them)."""
    if isinstance(path_or_paths, str | Path):
        return [Path(path_or_paths)]
    return [Path(p) for p in path_or_paths]


def rotated_family(path: Path) -> list[Path]:
    """``x.jsonl`` plus its rotated siblings ``x.jsonl.N``, oldest first (highest N first)."""
    rotated = []
    for sibling in path.parent.glob(path.name + ".*"):
        suffix = sibling.name[len(path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), sibling))
    return [p for _, p in sorted(rotated, reverse=True)] + [path]


def read_columns(paths: Sequence[Path]) -> tuple[dict[str, list[Any]], int, int]:
    """Parse JSON-lines files into columns: ``(columns, rows, skipped_lines)``.

    Blank lines, malformed lines (a torn last write) and lines that are not JSON objects are
    skipped and counted. Absent files contribute nothing.
    """
    columns: dict[str, list[Any]] = {}
    n = 0
    skipped = 0
    loads = orjson.loads
    for path in paths:
        if not path.is_file():
            continue
        for line in path.read_bytes().splitlines():
            try:
                record = loads(line)
            except orjson.JSONDecodeError:
                record = _lenient(line)
                if record is None:
                    skipped += 1
                    continue
            if type(record) is not dict:
                skipped += 1
                continue
            for key, value in record.items():
                column = columns.get(key)
                if column is None:
                    column = columns[key] = [None] * n
                column.append(value)
            n += 1
            # keys absent from this record: pad lazily below, only when lengths drift
            if len(columns) != len(record):
                for column in columns.values():
                    if len(column) < n:
                        column.append(None)
    return columns, n, skipped


def _lenient(line: bytes) -> Any:
    """Second chance for lines orjson rejects: Python's ``json`` writes NaN/Infinity, which
    stdlib ``json.loads`` accepts; anything else (torn, blank) is None."""
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None


def frame_from_columns(
    columns: dict[str, list[Any]], n: int, *, ensure: Sequence[str] = ()
) -> pd.DataFrame:
    """Build a frame from parsed columns, adding the ``ensure`` columns (all missing) if absent."""
    data: dict[str, Any] = {name: columns.get(name, [None] * n) for name in ensure}
    data.update(columns)
    return pd.DataFrame(data, index=pd.RangeIndex(n))


def to_utc(series: pd.Series) -> pd.Series:
    """ISO 8601 strings (or epoch seconds) to tz-aware UTC timestamps; bad values become NaT."""
    if series.empty:
        return pd.Series(
            pd.DatetimeIndex([], tz="UTC"), index=series.index, dtype="datetime64[ns, UTC]"
        )
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return pd.to_datetime(series, unit="s", utc=True, errors="coerce")
    return pd.to_datetime(series, utc=True, format="ISO8601", errors="coerce")


def parse_times(frame: pd.DataFrame, names: Iterable[str]) -> pd.DataFrame:
    """Parse the named columns (those present) to UTC in place and return the frame."""
    for name in names:
        if name in frame.columns:
            frame[name] = to_utc(frame[name])
    return frame


def read_jsonl_frame(
    paths: Sequence[Path], *, ensure: Sequence[str] = (), times: Sequence[str] = ("timestamp",)
) -> pd.DataFrame:
    """JSON-lines files to a frame with ``attrs["skipped_lines"]`` and parsed timestamps."""
    columns, n, skipped = read_columns(paths)
    frame = parse_times(frame_from_columns(columns, n, ensure=ensure), times)
    frame.attrs["skipped_lines"] = skipped
    frame.attrs["sources"] = [str(p) for p in paths]
    return frame
