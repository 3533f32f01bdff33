"""`snowkit inventory FILE... [--json]`: what saved UniFi responses would load into the CMDB.

Reads saved responses of any of the three UniFi APIs (the kind is detected from the content),
transforms and validates them, and prints counts per CMDB class, relationships, duplicates and
every quarantined record with its reasons. Exit 0 when every file could be read (quarantined
records are a result, not a failure); 2 with a clear message when a file cannot be read at all.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snowkit.cmdb.transform import TransformResult, transform
from snowkit.unifi.models.inventory import Inventory, Provenance
from snowkit.unifi.models.normalize import from_integration, from_network, from_sitemanager

EXIT_OK = 0
EXIT_UNREADABLE = 2


class UnreadableFileError(Exception):
    """A file that is missing, not JSON, or not a response of a known UniFi API."""


@dataclass
class SavedResponses:
    """Items from saved files, grouped by API and resource."""

    sm_hosts: list[Any] = field(default_factory=list)
    sm_sites: list[Any] = field(default_factory=list)
    sm_devices: list[Any] = field(default_factory=list)
    net_sites: list[Any] = field(default_factory=list)
    net_devices: list[Any] = field(default_factory=list)
    net_clients: list[Any] = field(default_factory=list)
    int_sites: list[Any] = field(default_factory=list)
    int_devices: list[Any] = field(default_factory=list)
    int_clients: list[Any] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)  # file -> detected kind


def _first_dict(items: list[Any]) -> dict[str, Any]:
    return next((i for i in items if isinstance(i, dict)), {})


def detect(document: Any) -> tuple[str, list[Any]]:
    """``(kind, items)`` for one saved response; kind is e.g. ``"network.devices"``."""
    if isinstance(document, list):  # v2 endpoints answer bare arrays (client history)
        if all(isinstance(i, dict) and ("mac" in i or "id" in i) for i in document):
            return "network.clients", document
        raise UnreadableFileError("a JSON array that is not a UniFi v2 client list")
    if not isinstance(document, dict):
        raise UnreadableFileError("not a JSON object or array")
    data = document.get("data")
    if isinstance(document.get("meta"), dict) and isinstance(data, list):
        sample = _first_dict(data)
        if "desc" in sample or "attr_hidden_id" in sample:
            return "network.sites", data
        if "type" in sample and "model" in sample:
            return "network.devices", data
        return "network.clients", data
    if isinstance(data, list) and ("totalCount" in document or "offset" in document):
        sample = _first_dict(data)
        if "internalReference" in sample:
            return "integration.sites", data
        if "uplinkDeviceId" in sample or "connectedAt" in sample:
            return "integration.clients", data
        return "integration.devices", data
    if "macAddress" in document and "model" in document:  # one Integration device (detail)
        return "integration.devices", [document]
    if data is not None and ("httpStatusCode" in document or "traceId" in document):
        items = data if isinstance(data, list) else [data]
        sample = _first_dict(items)
        if "siteId" in sample:
            return "sitemanager.sites", items
        if "devices" in sample:
            return "sitemanager.devices", items
        if "hardwareId" in sample or "reportedState" in sample or "type" in sample:
            return "sitemanager.hosts", items
        if not items:
            return "sitemanager.hosts", items
    raise UnreadableFileError(
        "not a response of a known UniFi API (Site Manager, Network app or Integration API)"
    )


def read_files(files: Sequence[Path]) -> SavedResponses:
    saved = SavedResponses()
    targets = {
        "sitemanager.hosts": saved.sm_hosts,
        "sitemanager.sites": saved.sm_sites,
        "sitemanager.devices": saved.sm_devices,
        "network.sites": saved.net_sites,
        "network.devices": saved.net_devices,
        "network.clients": saved.net_clients,
        "integration.sites": saved.int_sites,
        "integration.devices": saved.int_devices,
        "integration.clients": saved.int_clients,
    }
    for path in files:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise UnreadableFileError(f"{path}: no such file") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise UnreadableFileError(f"{path}: cannot read it ({exc.__class__.__name__})") from exc
        except json.JSONDecodeError as exc:
            raise UnreadableFileError(f"{path}: not JSON (line {exc.lineno}: {exc.msg})") from exc
        except RecursionError:
            # The stdlib parser recurses once per nesting level; a document nested deeper than
            # the interpreter's stack allows is no UniFi API response (those nest a few levels).
            raise UnreadableFileError(
                f"{path}: JSON nested too deeply to be a UniFi API response; "
                "pass the file the API returned, unchanged"
            ) from None
        try:
            kind, items = detect(document)
        except UnreadableFileError as exc:
            raise UnreadableFileError(f"{path}: {exc}") from exc
        saved.kinds[str(path)] = kind
        targets[kind].extend(items)
    return saved


def build_inventory(saved: SavedResponses) -> Inventory:
    parts: list[Inventory] = []
    if saved.sm_hosts or saved.sm_sites or saved.sm_devices:
        parts.append(
            from_sitemanager(
                saved.sm_hosts, saved.sm_sites, saved.sm_devices, Provenance("sitemanager")
            )
        )
    if saved.net_sites or saved.net_devices or saved.net_clients:
        parts.append(
            from_network(
                saved.net_sites, saved.net_devices, saved.net_clients, Provenance("network")
            )
        )
    if saved.int_sites or saved.int_devices or saved.int_clients:
        site_ids = [s.get("id") for s in saved.int_sites if isinstance(s, dict)]
        site = site_ids[0] if len(site_ids) == 1 and isinstance(site_ids[0], str) else None
        parts.append(
            from_integration(
                saved.int_sites,
                {site: saved.int_devices},
                {site: saved.int_clients},
                Provenance("integration"),
            )
        )
    return Inventory.merge(*parts)


def report(result: TransformResult, kinds: dict[str, str]) -> dict[str, Any]:
    return {
        "files": kinds,
        "records": result.counts_by_table(),
        "relationships": result.relationship_counts(),
        "duplicates": [
            {
                "key": d.key,
                "kind": d.kind,
                "kept": d.kept_source_id,
                "kept_source": d.kept_source,
                "sources": list(d.sources),
                "count": d.count,
            }
            for d in result.duplicates
        ],
        "warnings": [
            {
                "source_id": i.source_id,
                "field": i.field,
                "rule": i.rule,
                "message": i.message,
                "value": i.value,
            }
            for i in result.issues
            if i.severity == "warning"
        ],
        "quarantined": [
            {
                "source_id": q.source_id,
                "kind": q.kind,
                "summary": q.raw,
                "reasons": [
                    {
                        "field": r.field,
                        "rule": r.rule,
                        "message": r.message,
                        "value": r.value,
                        "severity": r.severity,
                    }
                    for r in q.reasons
                ],
            }
            for q in result.quarantined
        ],
        "source_warnings": result.warnings,
    }


def print_text(doc: dict[str, Any], out: Any) -> None:
    print("Records per CMDB class:", file=out)
    for table, count in doc["records"].items():
        print(f"  {table:<24} {count:>7}", file=out)
    print(f"  {'total':<24} {sum(doc['records'].values()):>7}", file=out)
    print("Relationships:", file=out)
    for name, count in doc["relationships"].items() or [("(none)", 0)]:
        print(f"  {name:<30} {count:>7}", file=out)
    print(f"Duplicates resolved: {len(doc['duplicates'])}", file=out)
    print(f"Warnings (records still loaded): {len(doc['warnings'])}", file=out)
    print(f"Quarantined: {len(doc['quarantined'])}", file=out)
    for q in doc["quarantined"]:
        print(f"  {q['source_id']} ({q['kind']})", file=out)
        for r in q["reasons"]:
            print(f"    - {r['field']}: {r['message']} [{r['rule']}] value={r['value']}", file=out)
    for warning in doc["source_warnings"]:
        print(f"WARNING: {warning}", file=out)


def run(args: argparse.Namespace) -> int:
    try:
        saved = read_files([Path(f) for f in args.files])
    except UnreadableFileError as exc:
        print(
            f"snowkit inventory: {exc}. Pass saved JSON responses of the Site Manager, "
            "Network app or Integration API.",
            file=sys.stderr,
        )
        return EXIT_UNREADABLE
    doc = report(transform(build_inventory(saved)), saved.kinds)
    if args.json:
        json.dump(doc, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        print_text(doc, sys.stdout)
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inventory",
        help="show what saved UniFi API responses would load into the CMDB",
        description="Read saved UniFi API responses (any of the three APIs, detected from the "
        "content), transform and validate them, and print what would be loaded.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="saved JSON responses")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(func=run)
