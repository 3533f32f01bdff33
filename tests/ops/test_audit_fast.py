"""The audit writer's fast paths write exactly what the reference algorithm wrote.

``AuditTrail.record`` used to redact a deep copy of every entry, round-trip it through JSON,
hash it and encode it again; :func:`snowkit.ops.audit_chain.encode_entry` skips all that for
plain entries, and :meth:`AuditTrail.record_many` appends many entries with one write. The
on-disk format must not move by a byte: the reference algorithm is copied here (as it was
before the fast paths) and the outputs are compared byte for byte, for plain entries and for
every kind of entry that must fall back to it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
from collections import OrderedDict
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

import snowkit.ops.audit as audit_module
from snowkit.ops.audit import AuditTrail, audit_segments, read_audit, verify_audit
from snowkit.ops.audit_chain import GENESIS_HASH, canonical, encode_entry, entry_hash
from snowkit.ops.redaction import MASK, SecretRegistry, plain_json, redact

KEY = b"test-audit-key-0123456789abcdef"
FIELDS = ("action", "table", "sys_id", "source_id", "before", "after", "outcome", "run_id")


# ---------------------------------------------------------------- the reference (old) algorithm


def reference_line(
    *,
    seq: int,
    timestamp: str,
    run_id: Any,
    correlation_id: Any,
    actor: Any,
    action: Any,
    table: Any,
    sys_id: Any,
    source_id: Any,
    before: Any,
    after: Any,
    outcome: Any,
    prev_hash: str,
) -> tuple[dict[str, Any], bytes]:
    """``AuditTrail.record`` before the fast paths, verbatim."""
    body = redact(
        {
            "seq": seq,
            "timestamp": timestamp,
            "run_id": run_id,
            "correlation_id": correlation_id,
            "actor": actor,
            "action": action,
            "table": table,
            "sys_id": sys_id,
            "source_id": source_id,
            "before": dict(before) if before is not None else None,
            "after": dict(after) if after is not None else None,
            "outcome": outcome,
        }
    )
    body = orjson.loads(canonical(body))
    body["prev_hash"] = prev_hash
    body["hash"] = entry_hash(body)
    return body, canonical(body) + b"\n"


def _encode(prev_hash: str = GENESIS_HASH, **fields: Any) -> tuple[dict[str, Any], bytes]:
    args = {
        "seq": 7,
        "timestamp": "2026-11-29T02:35:18.123456+00:00",
        "run_id": "20261129T000000Z-abc123",
        "correlation_id": None,
        "actor": "snowkit",
        "action": "create",
        "table": "cmdb_ci_netgear",
        "sys_id": "a" * 32,
        "source_id": "unifi:1",
        "before": None,
        "after": None,
        "outcome": "success",
        **fields,
    }
    new = encode_entry(
        args["seq"],
        args["timestamp"],
        args["run_id"],
        args["correlation_id"],
        args["actor"],
        args["action"],
        args["table"],
        args["sys_id"],
        args["source_id"],
        dict(args["before"]) if args["before"] is not None else None,
        dict(args["after"]) if args["after"] is not None else None,
        args["outcome"],
        prev_hash,
    )
    return new, reference_line(prev_hash=prev_hash, **args)


class Color(StrEnum):
    RED = "red"


# Entries that must take the reference path, or are borderline for the fast one.
UNUSUAL: list[dict[str, Any]] = [
    {"after": {"name": "a", "password": "p", "nested": {"Authorization": "Bearer x"}}},
    {"after": {"password": None, "token": None, "name": "ok"}},
    {"after": {"msg": "saw registered-secret-value twice", "n": 1}},
    {"after": {"k": ("tuple", 1, None)}},
    {"after": {"when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)}},
    {"after": {"f": 1.5, "g": float("nan"), "h": float("inf")}},
    {"after": {1: "int key", "b": 2}},
    {"after": {"s": SecretStr("hidden"), "c": Color.RED}},
    {"after": {"od": OrderedDict([("z", 1), ("a", 2)])}},
    {"after": {"u": "snow ❄ \u00e9 \U0001f600", "ctl": 'tab\tnl\nquote"back\\'}},
    {"after": {"z": 1, "a": [1, {"y": True, "b": False}, []], "m": {}}},
    {"after": {"big": 2**63 - 1, "neg": -(2**63), "zero": 0.0, "neg0": -0.0, "e": 1e300}},
    {"before": {"name": "old"}, "after": {"name": "new"}, "action": "update"},
    {"sys_id": None, "source_id": None, "run_id": None, "outcome": "failure: boom"},
    {"table": "registered-secret-value", "action": "x" * 300},
    {"after": {"list": [[[["deep"]]]], "empty": ""}},
]


@pytest.fixture
def registered(clean_secrets: SecretRegistry) -> SecretRegistry:
    clean_secrets.register("registered-secret-value")
    clean_secrets.register('quote"and\\slash')
    clean_secrets.register("0123456789abcdef" * 4)  # hex, like the generated audit key
    return clean_secrets


@pytest.mark.parametrize("fields", UNUSUAL, ids=range(len(UNUSUAL)))
def test_encode_entry_matches_reference(registered: SecretRegistry, fields: dict) -> None:
    (new_body, new_line), (ref_body, ref_line) = _encode(**fields)
    assert new_line == ref_line
    assert new_body == ref_body
    assert orjson.loads(new_line) == ref_body


def test_plain_entry_matches_reference(
    registered: SecretRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snowkit.ops.audit_chain as chain

    def no_fallback(*args: Any) -> Any:
        raise AssertionError("a plain entry must take the fast path")

    monkeypatch.setattr(chain, "_encode_entry_reference", no_fallback)
    after = {"name": "host-1", "ip_address": "10.0.0.1", "location": os.urandom(16).hex()}
    (new_body, new_line), (ref_body, ref_line) = _encode(
        after=after, before={"name": "h", "password": None, "n": 1.25}, correlation_id="c" * 32
    )
    assert new_line == ref_line and new_body == ref_body


def test_secrets_are_still_masked(registered: SecretRegistry) -> None:
    (body, line), _ = _encode(
        after={"password": "hunter22", "note": "key registered-secret-value in text"},
        table='quote"and\\slash',
    )
    assert b"hunter22" not in line and b"registered-secret-value" not in line
    assert body["after"] == {"password": MASK, "note": f"key {MASK} in text"}
    assert body["table"] == MASK


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["name", "password", "Token", "a", "z", "x_sn_apikey", "ip"])
            | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    after=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    before=st.none() | st.dictionaries(st.text(max_size=10), json_values, max_size=3),
    secret_inside=st.booleans(),
)
def test_encode_entry_matches_reference_on_any_json(
    registered: SecretRegistry, after: dict, before: dict | None, secret_inside: bool
) -> None:
    if secret_inside:
        after = {**after, "zz": f"..{'0123456789abcdef' * 4}.."}
    (new_body, new_line), (ref_body, ref_line) = _encode(after=after, before=before)
    assert new_line == ref_line
    assert new_body == ref_body == orjson.loads(new_line)


# ---------------------------------------------------------------- whole trails, byte for byte


class _FixedClock(dt.datetime):
    """``datetime`` whose ``now`` steps 1 ms from a fixed start (sometimes on a whole second:
    ``isoformat`` then drops the microseconds)."""

    ticks = itertools.count()

    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> _FixedClock:  # type: ignore[override]
        step = next(cls.ticks)
        start = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
        moment = start + dt.timedelta(microseconds=step * 250_000 + (step % 3) * 7)
        return cls.fromtimestamp(moment.timestamp(), tz=tz)


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> type[_FixedClock]:
    monkeypatch.setattr(audit_module, "datetime", _FixedClock)
    return _FixedClock


def _entries(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        entry: dict[str, Any] = {
            "action": "create" if i % 4 else "update",
            "table": "cmdb_ci_netgear",
            "sys_id": f"{i:032x}",
            "source_id": f"unifi:{i}",
            "after": {"name": f"host-{i}", "ip_address": f"10.0.0.{i % 250}", "n": i},
            "run_id": "20261129T000000Z-abc123",
        }
        if i % 4 == 0:
            entry["before"] = {"name": f"old-{i}"}
        if i % 9 == 5:
            entry.update(UNUSUAL[i % len(UNUSUAL)])
        if i % 11 == 3:
            entry["correlation_id"] = f"corr-{i}"
        out.append(entry)
    return out


def _trail_bytes(path: Path) -> list[bytes]:
    return [segment.read_bytes() for segment in audit_segments(path)]


def _write(path: Path, entries: list[dict], many: bool, chunk: int = 13, **kw: Any) -> None:
    _FixedClock.ticks = itertools.count()
    with AuditTrail(path, key=KEY, fsync=False, **kw) as trail:
        if many:
            for start in range(0, len(entries), chunk):
                with trail.batch():
                    trail.record_many(entries[start : start + chunk])
        else:
            for start in range(0, len(entries), chunk):
                with trail.batch():
                    for entry in entries[start : start + chunk]:
                        trail.record(**entry)


@pytest.mark.parametrize(
    ("checkpoint_every", "max_bytes", "chunk"),
    [(100, None, 13), (7, None, 13), (5, 4_000, 13), (1000, 2_500, 50), (3, None, 1)],
)
def test_record_many_writes_the_same_bytes_as_record(
    tmp_path: Path,
    registered: SecretRegistry,
    fixed_clock: type[_FixedClock],
    checkpoint_every: int,
    max_bytes: int | None,
    chunk: int,
) -> None:
    entries = _entries(60)
    kw = {"checkpoint_every": checkpoint_every, "max_bytes": max_bytes}
    _write(tmp_path / "a" / "audit.jsonl", entries, many=False, chunk=chunk, **kw)
    _write(tmp_path / "b" / "audit.jsonl", entries, many=True, chunk=chunk, **kw)
    one = _trail_bytes(tmp_path / "a" / "audit.jsonl")
    many = _trail_bytes(tmp_path / "b" / "audit.jsonl")
    assert one == many
    if max_bytes:
        assert len(many) > 1  # rotation happened inside record_many
    for path in (tmp_path / "a" / "audit.jsonl", tmp_path / "b" / "audit.jsonl"):
        result = verify_audit(path, KEY)
        assert result.ok, result.message
        assert result.entries == 60


def test_trail_lines_match_the_reference_algorithm(
    tmp_path: Path, registered: SecretRegistry, fixed_clock: type[_FixedClock]
) -> None:
    entries = _entries(40)
    path = tmp_path / "audit.jsonl"
    _write(path, entries, many=True, checkpoint_every=9)
    lines = [raw for raw in path.read_bytes().splitlines(keepends=True)]
    written = [raw for raw in lines if b'"type":"checkpoint"' not in raw]
    assert len(written) == 40
    prev = GENESIS_HASH
    for raw, entry in zip(written, entries, strict=True):
        parsed = orjson.loads(raw)
        _, expected = reference_line(
            seq=parsed["seq"],
            timestamp=parsed["timestamp"],
            run_id=entry.get("run_id"),
            correlation_id=entry.get("correlation_id"),
            actor="snowkit",
            action=entry["action"],
            table=entry["table"],
            sys_id=entry["sys_id"],
            source_id=entry.get("source_id"),
            before=entry.get("before"),
            after=entry.get("after"),
            outcome=entry.get("outcome", "success"),
            prev_hash=prev,
        )
        assert raw == expected
        prev = parsed["hash"]


def test_record_many_returns_entries_as_read_back(tmp_path: Path) -> None:
    with AuditTrail(tmp_path / "audit.jsonl", key=KEY, fsync=False) as trail:
        returned = trail.record_many(_entries(10))
    assert returned == list(read_audit(tmp_path / "audit.jsonl"))
    assert [e["seq"] for e in returned] == list(range(1, 11))


def test_record_many_outside_a_batch_fsyncs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trail = AuditTrail(tmp_path / "audit.jsonl", key=KEY, fsync=True, checkpoint_every=1000)
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    trail.record_many(_entries(25))
    assert len(calls) == 1  # one data fsync; no checkpoint yet, so no anchor write
    assert len(list(read_audit(tmp_path / "audit.jsonl"))) == 25
    trail.close()
    assert verify_audit(tmp_path / "audit.jsonl", KEY).ok


def test_record_many_inside_a_batch_defers_the_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trail = AuditTrail(tmp_path / "audit.jsonl", key=KEY, fsync=True)
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    with trail.batch():
        trail.record_many(_entries(5))
        trail.record_many(_entries(5))
        assert calls == []
    assert len(calls) >= 1
    trail.close()
    result = verify_audit(tmp_path / "audit.jsonl", KEY)
    assert result.ok and result.entries == 10 and result.checkpoints == 1  # the batch one


def test_record_many_bad_entry_keeps_the_ones_before(tmp_path: Path) -> None:
    entries = _entries(6)
    entries[3] = {**entries[3], "after": {"x": object()}}  # orjson cannot encode it
    trail = AuditTrail(tmp_path / "audit.jsonl", key=KEY, fsync=False)
    with pytest.raises(TypeError):
        trail.record_many(entries)
    assert trail.seq == 3
    assert [e["seq"] for e in read_audit(tmp_path / "audit.jsonl")] == [1, 2, 3]
    trail.record_many(_entries(2))
    trail.close()
    result = verify_audit(tmp_path / "audit.jsonl", KEY)
    assert result.ok and result.entries == 5


def test_record_many_rejects_unknown_fields(tmp_path: Path) -> None:
    with AuditTrail(tmp_path / "audit.jsonl", key=KEY, fsync=False) as trail:
        with pytest.raises(TypeError):
            trail.record_many([{"action": "create", "table": "t", "sys_id": None, "bad": 1}])
        assert trail.seq == 0


def test_failed_write_does_not_advance_the_chain(tmp_path: Path) -> None:
    """A write that fails leaves the in-memory chain where the file is (as a failed record
    did), so the next append chains to the last entry on disk and the trail verifies."""
    trail = AuditTrail(tmp_path / "audit.jsonl", key=KEY, fsync=False, checkpoint_every=4)
    trail.record_many(_entries(2))
    head, seq = trail.head_hash, trail.seq

    class Broken:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def write(self, data: bytes) -> int:
            raise OSError(28, "No space left on device")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    real = trail._handle
    trail._handle = Broken(real)
    with pytest.raises(OSError):
        trail.record_many(_entries(6))  # would cross a checkpoint, too
    assert (trail.head_hash, trail.seq) == (head, seq)
    trail._handle = real
    trail.record_many(_entries(3))
    trail.close()
    result = verify_audit(tmp_path / "audit.jsonl", KEY)
    assert result.ok, result.message
    assert result.entries == 5


def test_tampering_with_a_record_many_trail_is_found(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditTrail(path, key=KEY, fsync=False, checkpoint_every=10) as trail:
        trail.record_many(_entries(30))
    lines = path.read_bytes().splitlines(keepends=True)
    index = next(i for i, raw in enumerate(lines) if b'"seq":15,' in raw and b"hash" in raw)
    lines[index] = lines[index].replace(b"host-14", b"host-99")
    path.write_bytes(b"".join(lines))
    result = verify_audit(path, KEY)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "edited", 15)


def test_reopened_trail_continues_a_record_many_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditTrail(path, key=KEY, fsync=False) as trail:
        trail.record_many(_entries(4))
    with AuditTrail(path, key=KEY, fsync=False) as trail:
        trail.record_many(_entries(4))
        assert trail.seq == 8
    assert verify_audit(path, KEY).ok


# ---------------------------------------------------------------- the redaction helpers


def test_plain_json() -> None:
    assert plain_json({"a": [1, "x", None, True, 1.5, {"b": {}}]})
    assert plain_json({"password": None})
    assert not plain_json({"password": "x"})
    assert not plain_json({"nested": [{"Client-Secret": "x"}]})
    assert not plain_json({1: "x"})
    assert not plain_json({"t": (1,)})
    assert not plain_json({"f": float("nan")}) and not plain_json([float("-inf")])
    assert not plain_json({"c": Color.RED})
    assert not plain_json(OrderedDict(a=1))
    assert not plain_json({"s": SecretStr("x")})
    # the plain-key memo must never hide a secret key seen later
    assert plain_json({"name": 1}) and not plain_json({"name": 1, "token": "t"})


@given(
    secret=st.text(min_size=4, max_size=12),
    prefix=st.text(max_size=5),
    suffix=st.text(max_size=5),
)
def test_occurs_in_json_never_misses(secret: str, prefix: str, suffix: str) -> None:
    registry = SecretRegistry()
    try:
        orjson.dumps(secret)
    except orjson.JSONEncodeError:
        registry.register(secret)
        assert registry.occurs_in_json(b"{}")  # not encodable: always say maybe
        return
    registry.register(secret)
    document = orjson.dumps({"k": [prefix + secret + suffix]})
    assert registry.occurs_in_json(document)
    assert registry.mask(prefix + secret + suffix) != prefix + secret + suffix


def test_short_strings_skip_the_regex_but_long_ones_do_not() -> None:
    registry = SecretRegistry()
    registry.register("abcdefgh")
    assert registry.mask("abc") == "abc"
    assert registry.mask("xxabcdefghxx") == f"xx{MASK}xx"
    assert redact({"a": "abcdefgh", "b": "abcdefg"}, registry) == {"a": MASK, "b": "abcdefg"}
    registry.register("wxyz")  # a shorter secret lowers the threshold
    assert registry.mask("wxyz") == MASK
    assert redact(["wxyz"], registry) == [MASK]
