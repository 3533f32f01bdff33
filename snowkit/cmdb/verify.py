"""Read back what a load wrote and compare it field by field.

A 2xx answer does not prove the CMDB holds what we sent: business rules, data policies, field
lengths and missing columns can change or drop values silently. Verification reads the written
records back by source id (batched ``u_unifi_source_idIN...`` queries) and reports every field
that differs, every record that cannot be found, and fields a fallback table cannot hold.

A write's Batch API answer is the record as the instance stored it (after business rules and
data policies), with the fields the write set (``WriteOp.url`` asks for them). A record whose
every write this run was answered with each sent field as sent is therefore already verified
(``proven``: counted as checked and matched, not read again); every other record — an answer
without the record, a field missing or different in it, several writes of which one was not
shown — is read back and compared field by field as before, so mismatches and missing
columns are still found and reported from what the CMDB holds.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from snowkit.cmdb.fields import SOURCE_ID_FIELD, as_str
from snowkit.cmdb.report import Mismatch
from snowkit.servicenow.query import Query

_SKIP = frozenset({"sys_class_name", "sys_id", SOURCE_ID_FIELD})


@dataclass
class Expectation:
    """What one record should hold after the run (``table`` = the table it was written to)."""

    table: str
    source_id: str
    values: Mapping[str, str]


@dataclass
class VerifyResult:
    checked: int = 0
    matched: int = 0
    missing: list[str] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    unstored_fields: dict[str, list[str]] = field(default_factory=dict)
    #: records verified from their write's answer instead of a read-back
    proven_by_answer: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatches

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "matched": self.matched,
            "missing": len(self.missing),
            "missing_examples": self.missing[:20],
            "mismatches": len(self.mismatches),
            "unstored_fields": self.unstored_fields,
            "proven_by_answer": self.proven_by_answer,
            "ok": self.ok,
        }


def verify(
    client: Any,
    expectations: Iterable[Expectation],
    *,
    in_chunk: int = 100,
    workers: int = 4,
    proven: Container[tuple[str, str]] = frozenset(),
) -> VerifyResult:
    """Compare what the CMDB holds with ``expectations``, one chunk of records at a time
    (``workers`` chunks in flight), so 50,000 records never sit in memory as rows.

    A field the table does not return at all (no such column) is listed in
    ``unstored_fields`` rather than as a mismatch. Records whose (table, source id) is in
    ``proven`` were shown by their write's answer (see the module docstring): not read again.
    """
    result = VerifyResult()
    by_table: dict[str, dict[str, Expectation]] = {}
    for exp in expectations:
        table = by_table.setdefault(exp.table, {})
        earlier = table.get(exp.source_id)
        if earlier is None:
            table[exp.source_id] = exp
        else:  # several writes to one record (e.g. create then update): the last value wins
            table[exp.source_id] = Expectation(
                exp.table, exp.source_id, {**earlier.values, **exp.values}
            )
    for table, wanted in sorted(by_table.items()):
        if proven:
            shown = [sid for sid in wanted if (table, sid) in proven]
            for sid in shown:
                del wanted[sid]
            result.checked += len(shown)
            result.matched += len(shown)
            result.proven_by_answer += len(shown)
            if not wanted:
                continue
        fields = sorted({f for e in wanted.values() for f in e.values} - _SKIP)
        sids = [s for s in wanted if "," not in s and "^" not in s]
        chunks = [sids[i : i + in_chunk] for i in range(0, len(sids), in_chunk)]
        jobs = [(table, chunk, fields) for chunk in chunks]
        reads = _parallel(lambda job: _read(client, *job, in_chunk), jobs, workers)
        for chunk, rows in zip(chunks, reads, strict=True):
            found = {as_str(row.get(SOURCE_ID_FIELD)): row for row in rows}
            for sid in chunk:
                _compare(result, table, wanted[sid], found.get(sid))
    return result


def _compare(result: VerifyResult, table: str, exp: Expectation, row: dict | None) -> None:
    result.checked += 1
    if row is None:
        result.missing.append(exp.source_id)
        return
    clean = True
    for fld, expected in exp.values.items():
        if fld in _SKIP:
            continue
        if fld not in row:
            # not returned although asked for: the table has no such column (a custom field
            # nobody created, or a fallback table); listed, not a mismatch
            unstored = result.unstored_fields.setdefault(table, [])
            if fld not in unstored:
                unstored.append(fld)
            continue
        actual = as_str(row.get(fld))
        if actual != as_str(expected):
            clean = False
            result.mismatches.append(Mismatch(exp.source_id, table, fld, as_str(expected), actual))
    if clean:
        result.matched += 1


def _read(client: Any, table: str, sids: list[str], fields: list[str], size: int) -> list[dict]:
    query = Query().in_(SOURCE_ID_FIELD, sids)
    wanted = ["sys_id", SOURCE_ID_FIELD, *fields]
    return list(client.query(table, query, fields=wanted, page_size=size + 1))


def _parallel(fn: Any, jobs: list[Any], workers: int) -> Iterator[Any]:
    if len(jobs) <= 1 or workers <= 1:
        yield from map(fn, jobs)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snowkit-verify") as pool:
        yield from pool.map(fn, jobs)
