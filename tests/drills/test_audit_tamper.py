"""Audit tamper drill: every kind of damage to the trail is found and the first bad line named.

A real trail (``AuditTrail`` with batch, interval and close checkpoints, unicode values) is
damaged at random, many times over, and ``verify_audit`` must reject every damaged copy:
byte flips, entry deletions, line swaps, truncation, and a chain recomputed by someone who
does not hold the HMAC key (with forged, kept or stripped checkpoints).

Two cases the hash chain alone cannot see are checked separately: removing only a checkpoint
line changes no entry (the checkpoint chain catches it), and a cut exactly after a checkpoint
line (including a cut to zero bytes) leaves a shorter trail that is consistent in itself (the
signed anchor kept apart from the trail catches it). Both must be detected every time.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from snowkit.ops.audit import (
    PROBLEMS,
    AuditTrail,
    canonical,
    checkpoint_mac,
    entry_hash,
    verify_audit,
)
from snowkit.ops.audit_anchor import default_anchor_path

KEY = hashlib.sha256(b"drill audit key").hexdigest().encode()
KINDS = ("flip", "delete_entry", "swap", "truncate", "recompute_forged", "recompute_stripped")


def build_trail(path: Path, rng: random.Random, entries: int) -> bytes:
    """A trail as loads write it: batches, interval checkpoints, a close checkpoint."""
    with AuditTrail(path, key=KEY, checkpoint_every=9) as trail:
        written = 0
        while written < entries:
            size = min(rng.randint(1, 6), entries - written)
            with trail.batch():
                for _ in range(size):
                    n = written
                    trail.record(
                        rng.choice(["create", "update", "delete"]),
                        rng.choice(["cmdb_ci_ip_switch", "cmn_location", "cmdb_rel_ci"]),
                        f"{n:032x}",
                        source_id=f"unifi:device:{n}",
                        before={"name": f"old-{n}"} if n % 3 else None,
                        after={"name": f"sw-{n}-é✓", "ip_address": f"10.0.{n % 250}.1"},
                        run_id="20261129T000000Z-abcdef",
                    )
                    written += 1
    return path.read_bytes()


def lines_of(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]  # the trail ends with a newline


def is_checkpoint(line: bytes) -> bool:
    return orjson.loads(line).get("type") == "checkpoint"


def flip(data: bytes, rng: random.Random) -> tuple[bytes, int]:
    pos = rng.randrange(len(data))
    out = bytearray(data)
    out[pos] ^= rng.randint(1, 255)
    return bytes(out), data.count(b"\n", 0, pos) + 1


def delete_entry(data: bytes, rng: random.Random) -> tuple[bytes, int]:
    rows = lines_of(data)
    choices = [i for i, line in enumerate(rows) if not is_checkpoint(line)]
    i = rng.choice(choices)
    return b"".join(line + b"\n" for j, line in enumerate(rows) if j != i), i + 1


def swap(data: bytes, rng: random.Random) -> tuple[bytes, int]:
    rows = lines_of(data)
    i, j = sorted(rng.sample(range(len(rows)), 2))
    rows[i], rows[j] = rows[j], rows[i]
    # an entry swapped with the checkpoint after it shows only at the second line
    return b"".join(line + b"\n" for line in rows), j + 1


@functools.lru_cache(maxsize=4)
def checkpoint_boundaries(data: bytes) -> frozenset[int]:
    """Offsets just after a checkpoint line, and 0: cuts there are the documented limit."""
    cuts, offset = {0}, 0
    for line in lines_of(data):
        offset += len(line) + 1
        if is_checkpoint(line):
            cuts.add(offset)
    return frozenset(cuts)


@functools.lru_cache(maxsize=4)
def entry_line_ends(data: bytes) -> tuple[int, ...]:
    limit = checkpoint_boundaries(data)
    return tuple(i + 1 for i, byte in enumerate(data) if byte == 0x0A and i + 1 not in limit)


def truncate(data: bytes, rng: random.Random) -> tuple[bytes, int]:
    """Cut mid-line, or (half the time) cleanly after an entry line."""
    limit = checkpoint_boundaries(data)
    cut = rng.choice(entry_line_ends(data))
    if rng.random() < 0.5:
        for _ in range(100):  # bounded: boundaries are a tiny share of the offsets
            candidate = rng.randrange(len(data))
            if candidate not in limit:
                cut = candidate
                break
    return data[:cut], data.count(b"\n", 0, cut) + 1


def recompute(data: bytes, rng: random.Random, *, strip: bool) -> tuple[bytes, int]:
    """Edit one entry, then rebuild every hash from it on (possible without the key); forge the
    later checkpoints' HMAC with a guessed key, or drop them. Returns the first line a verifier
    can catch: the first checkpoint after the edit (the chain itself is consistent again)."""
    rows = [orjson.loads(line) for line in lines_of(data)]
    entries = [i for i, r in enumerate(rows) if r.get("type") != "checkpoint"]
    target = rng.choice(entries)
    rows[target]["after"] = {"name": "attacker-was-here"}
    guessed = rng.randbytes(32).hex().encode()
    head = rows[target]["prev_hash"]
    out: list[bytes] = []
    catchable = None
    for i, row in enumerate(rows):
        if i >= target:
            if row.get("type") == "checkpoint":
                if strip:
                    continue
                row["covers_hash"] = head
                row["hmac"] = checkpoint_mac(row, guessed)
                catchable = catchable or len(out) + 1
            else:
                row["prev_hash"] = head
                row["hash"] = entry_hash(row)
                head = row["hash"]
        out.append(canonical(row))
    return b"".join(line + b"\n" for line in out), catchable or len(out)


MUTATORS = {
    "flip": flip,
    "delete_entry": delete_entry,
    "swap": swap,
    "truncate": truncate,
    "recompute_forged": lambda d, r: recompute(d, r, strip=False),
    "recompute_stripped": lambda d, r: recompute(d, r, strip=True),
}


def run_tamper(drill: Any, tmp_path: Path, trials: int, entries: int, seed: int) -> None:
    rng = random.Random(seed)
    original = build_trail(tmp_path / "audit.jsonl", rng, entries)
    clean = verify_audit(tmp_path / "audit.jsonl", KEY)
    assert clean.ok and clean.entries == entries, clean.message
    target = tmp_path / "tampered" / "audit.jsonl"
    target.parent.mkdir()
    detected: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    missed: list[str] = []
    for trial in range(trials):
        kind = KINDS[trial % len(KINDS)]
        damaged, first_line = MUTATORS[kind](original, rng)
        if damaged == original:  # a no-op mutation is not tampering
            continue
        target.write_bytes(damaged)
        result = verify_audit(target, KEY)
        if result.ok:
            missed.append(f"{kind} trial {trial}")
            continue
        detected[kind] += 1
        problems[result.problem or "?"] += 1
        assert result.problem in PROBLEMS and result.message, result
        assert result.first_bad_seq is not None or result.line_number is not None, result
        assert str(target.name) in result.message
        if kind in ("flip", "delete_entry", "swap", "recompute_forged"):
            # named at the first line where the damage can be seen (before it, for a lost end)
            assert result.line_number is not None and result.line_number <= first_line, (
                kind,
                first_line,
                result.message,
            )

    # cuts right after a checkpoint: consistent in themselves, caught by the anchor
    anchor = default_anchor_path(tmp_path / "audit.jsonl")
    assert anchor.exists()
    boundary_ok = 0
    boundaries = sorted(c for c in checkpoint_boundaries(original) if c < len(original))
    for cut in boundaries:
        target.write_bytes(original[:cut])
        boundary_ok += verify_audit(target, KEY, anchor=anchor).ok
    # checkpoint-only deletions change no entry: caught by the checkpoint chain
    rows = lines_of(original)
    checkpoint_only = [i for i, line in enumerate(rows) if is_checkpoint(line)][:-1]
    unnoticed_checkpoint_deletions = 0
    for i in checkpoint_only:
        target.write_bytes(b"".join(line + b"\n" for j, line in enumerate(rows) if j != i))
        unnoticed_checkpoint_deletions += verify_audit(target, KEY).ok

    drill.figures(
        "audit_tamper",
        variant="long" if drill.long else "fast",
        trials=sum(detected.values()) + len(missed),
        detected=sum(detected.values()),
        missed=len(missed),
        per_kind=dict(detected),
        problems=dict(problems),
        trail_entries=entries,
        cuts_after_checkpoint_unnoticed_with_anchor=f"{boundary_ok}/{len(boundaries)}",
        checkpoint_only_deletions_unnoticed=f"{unnoticed_checkpoint_deletions}/"
        f"{len(checkpoint_only)}",
    )
    assert not missed, f"undetected tampering: {missed[:10]}"
    assert boundary_ok == 0, f"{boundary_ok} cuts after a checkpoint passed the anchor check"
    assert unnoticed_checkpoint_deletions == 0, "a deleted checkpoint line went unnoticed"
    assert set(detected) == set(KINDS)


def test_audit_tamper_fast(drill: Any, tmp_path: Path) -> None:
    run_tamper(drill, tmp_path, trials=240, entries=60, seed=9)


@pytest.mark.drill
def test_audit_tamper_long(drill: Any, tmp_path: Path) -> None:
    run_tamper(drill, tmp_path, trials=6000, entries=400, seed=2026)
