"""`snowkit audit verify|show|recover`: check, read and repair the tamper-evident trail.

``recover`` is for a trail whose last line a crash left half-written: it moves those bytes to a
``.incomplete-<time>`` side file (kept as evidence), continues the chain and seals the recovery
with a signed checkpoint (``snowkit load`` does the same by itself). Exit 0 recovered or nothing
to do; 4 cannot (no key, another writer holds the trail, a rotated segment is damaged).

``verify`` also compares the trail with its anchor (the latest signed checkpoint, copied out of
the trail after each one; default ``.snowkit/audit/anchor.json`` or ``$SNOWKIT_AUDIT_ANCHOR``):
a trail cut right after a checkpoint is only detectable that way. A missing anchor is a warning
(an error with ``--require-anchor``).

Exit codes of ``verify`` (stable, for cron and CI):
0 intact; 1 tampered (edited, deleted, reordered, truncated, bad checkpoint signature, a
checkpoint that does not match the chain or was deleted, a forged anchor or one of another
history); 3 half-written last line (a crash during a write, not tampering); 4 cannot verify
(no trail, no key).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from snowkit import paths
from snowkit.cli import positive_int
from snowkit.ops.audit import (
    AuditError,
    AuditTrail,
    default_anchor_path,
    load_audit_key,
    read_audit,
    verify_audit,
    writer_active,
)

EXIT_OK = 0
EXIT_TAMPERED = 1
EXIT_INCOMPLETE = 3
EXIT_CANNOT_VERIFY = 4

_SHOW_COLUMNS = ("seq", "timestamp", "action", "table", "sys_id", "source_id", "outcome", "run_id")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("audit", help="verify or show the audit trail")
    commands = parser.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: _usage(parser))

    verify = commands.add_parser(
        "verify",
        help="check the hash chain and signed checkpoints; name the first bad entry",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument(
        "path", nargs="?", type=Path, help="audit file (default: .snowkit/audit/audit.jsonl)"
    )
    verify.add_argument(
        "--key-file",
        type=Path,
        help="HMAC key file used when SNOWKIT_AUDIT_KEY is not set "
        "(default: .snowkit/audit/audit.key)",
    )
    verify.add_argument(
        "--allow-unsealed",
        action="store_true",
        help="treat entries after the last checkpoint as a warning (the writer crashed)",
    )
    anchor = verify.add_mutually_exclusive_group()
    anchor.add_argument(
        "--anchor",
        type=Path,
        help="the trail's anchor file (default: $SNOWKIT_AUDIT_ANCHOR, else "
        ".snowkit/audit/anchor.json for the default trail, <trail>.anchor.json for another)",
    )
    anchor.add_argument(
        "--no-anchor",
        action="store_true",
        help="skip the anchor comparison (a cut right after a checkpoint then goes unnoticed)",
    )
    verify.add_argument(
        "--require-anchor",
        action="store_true",
        help="a missing or unreadable anchor is an error (exit 4), not a warning",
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(func=run_verify)

    show = commands.add_parser("show", help="list audit entries")
    show.add_argument("path", nargs="?", type=Path, help="audit file (default: the state dir's)")
    show.add_argument("--run", dest="run_id", help="only entries of this run id")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    show.add_argument("--limit", type=positive_int, default=None, help="only the last N entries")
    show.set_defaults(func=run_show)

    recover = commands.add_parser(
        "recover",
        help="after a crash: move a half-written last line aside (kept) and continue the chain",
    )
    recover.add_argument(
        "path", nargs="?", type=Path, help="audit file (default: .snowkit/audit/audit.jsonl)"
    )
    recover.add_argument(
        "--key-file",
        type=Path,
        help="HMAC key file used when SNOWKIT_AUDIT_KEY is not set "
        "(default: .snowkit/audit/audit.key)",
    )
    recover.set_defaults(func=run_recover)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_verify(args: argparse.Namespace) -> int:
    path = args.path or paths.audit_path()
    try:
        key = load_audit_key(args.key_file, create=False)
    except AuditError as exc:
        print(f"cannot verify: {exc}", file=sys.stderr)
        return EXIT_CANNOT_VERIFY
    anchor = None if args.no_anchor else (args.anchor or default_anchor_path(path))
    result = verify_audit(path, key, allow_unsealed_tail=args.allow_unsealed, anchor=anchor)
    if args.require_anchor and result.ok and (result.anchor or {}).get("state") != "verified":
        where = anchor if anchor is not None else "(--no-anchor given)"
        print(
            f"{path}: cannot rule out truncation: no usable anchor at {where}; "
            "pass --anchor PATH where it is kept",
            file=sys.stderr,
        )
        return EXIT_CANNOT_VERIFY
    if args.json:
        print(orjson.dumps(result.__dict__).decode())
    if result.ok:
        if not args.json:
            print(f"{path}: {result.message}")
            for warning in result.warnings:
                print(f"warning: {warning}", file=sys.stderr)
        return EXIT_OK
    if writer_active(path):  # a false alarm had said "truncated" during an open batch
        print(
            f"{path}: cannot verify now: a process is writing the trail (a load?), and what "
            f"was read may be a moment of its write ({result.problem}), not tampering; run "
            "`snowkit audit verify` again once it has finished",
            file=sys.stderr,
        )
        return EXIT_CANNOT_VERIFY
    if not args.json:
        print(f"{path}: {result.message}", file=sys.stderr)
    if result.problem == "missing":
        return EXIT_CANNOT_VERIFY
    if result.problem == "incomplete_last_line":
        return EXIT_INCOMPLETE
    return EXIT_TAMPERED


def run_recover(args: argparse.Namespace) -> int:
    path = args.path or paths.audit_path()
    if not path.exists():
        print(f"snowkit audit recover: no audit trail at {path}", file=sys.stderr)
        return EXIT_CANNOT_VERIFY
    try:
        key = load_audit_key(args.key_file, create=False)
        trail = AuditTrail(path, key=key, recover=True)
    except AuditError as exc:
        print(f"snowkit audit recover: {exc}", file=sys.stderr)
        return EXIT_CANNOT_VERIFY
    evidence = trail.recovered
    trail.close()
    if evidence is None:
        print(f"{path}: nothing to recover (the last line is complete)")
        return EXIT_OK
    print(
        f"{path}: recovered; the half-written line is kept in {evidence}, the chain continues "
        f"and the recovery is sealed by a signed checkpoint. Check with "
        f"`snowkit audit verify {path}`."
    )
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    path = args.path or paths.audit_path()
    if args.path and not Path(path).exists():  # a typo had read as "no audit entries"
        print(f"snowkit audit show: no audit trail at {path}", file=sys.stderr)
        return EXIT_CANNOT_VERIFY
    entries = list(read_audit(path, run_id=args.run_id))
    if args.limit is not None:
        entries = entries[-args.limit :] if args.limit > 0 else []
    if args.json:
        out = sys.stdout
        for entry in entries:
            out.write(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS).decode() + "\n")
        return 0
    if not entries:
        print(f"no audit entries in {path}" + (f" for run {args.run_id}" if args.run_id else ""))
        return 0
    rows = [[_cell(entry.get(col)) for col in _SHOW_COLUMNS] for entry in entries]
    widths = [max(len(col), *(len(row[i]) for row in rows)) for i, col in enumerate(_SHOW_COLUMNS)]
    print("  ".join(col.ljust(w) for col, w in zip(_SHOW_COLUMNS, widths, strict=True)))
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"{len(entries)} entries")
    return 0


def _cell(value: object) -> str:
    return "" if value is None else str(value)
