"""Vendor names → ``core_company`` sys_ids, swapped into the records before the plan diffs.

``cmdb_ci.manufacturer`` is a *reference* to ``core_company``. With the Table API's default
``sysparm_input_display_value=false`` the instance stores what it is sent, so the vendor name
the transform carries ("Ubiquiti Inc.", a client's OUI vendor) would be a dangling reference:
the form shows no manufacturer, IRE may refuse the item (INVALID_INPUT_DATA), and an instance
that did resolve it would hold a sys_id the next diff compares with the name, an update on every
run. The transform knows no instance, so it keeps the name; :func:`resolve` replaces it here,
and the diff, the writes (IRE mode too), the verification and the remembered state all deal in
sys_ids. Existing CIs holding an old raw name are corrected by the ordinary diff, once.

- **Lookup**: names the cache does not know, OR'd in one query (``name=a^ORname=b``: a name
  may hold a comma, which an ``IN`` list cannot carry), split only if the URL would be long.
  An exact name beats a case-insensitive match (an instance compares ``=`` without case),
  a ``manufacturer=true`` company beats others, then the lowest sys_id: stable choices.
- **Create**: names not found go to ``core_company`` with ``manufacturer=true`` (what Discovery
  does) in one Batch API request, each under a sys_id chosen here like every other create
  (``stream.choose_sys_ids``). Each is audited (``create`` on ``core_company``); rollback leaves
  them in place, since records outside the run may point at them (``snowkit.cmdb.rollback``).
  A dry run only looks up, and lists what it would create.
- **Unresolved** (no right to create, a failed request, a name with ``^`` or longer than
  ``core_company.name`` holds, which no lookup could find again): ``manufacturer`` is left out
  of those records for this run, one warning says which names; the load goes on.
- **Cache**: name → sys_id per instance (``state_dir()/cmdb/companies.json``), so a rerun with
  known names sends no request of its own: the cached ids are checked by a read riding in the
  plan's first round (:func:`check_rider`), and one gone or renamed (deleted by hand, an
  instance reset, another embedded instance on the same port) is forgotten and the names are
  resolved again before the plan is used. ``--full-read`` ignores the cache.
"""

from __future__ import annotations

import contextlib
import copy
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any

from snowkit import paths
from snowkit.cmdb.fields import as_str
from snowkit.cmdb.questions import Rider, table_url
from snowkit.cmdb.writes import describe, forbidden_error, forbidden_result
from snowkit.files import write_atomic
from snowkit.servicenow.batch import BatchRequest
from snowkit.servicenow.query import Query, QueryValueError

COMPANY_TABLE = "core_company"
FIELD = "manufacturer"
#: ``core_company.name``'s length: a longer name would be stored cut, and never found again
NAME_MAX = 80
#: names the cache keeps per instance (its check rides in the first round below 1,000 ids)
CACHE_LIMIT = 500
#: above this many characters of encoded query, the lookup is split (URLs stay well under 8 KB)
QUERY_CHARS = 4000
_FIELDS = ["sys_id", "name", FIELD]
#: the namespace of :func:`company_sys_id` (fixed: the ids must not change between releases)
_COMPANY_IDS = uuid.UUID("6f1c2d7e-4b1a-5e8f-9c3d-2a7b5e0f4c61")
_CREATE_URL = f"/api/now/table/{COMPANY_TABLE}?sysparm_fields=sys_id,name,{FIELD}"

#: audit(action, table, sys_id, source_id, before, after, outcome), as ``RunLedger.record_audit``
AuditFn = Callable[[str, str, str | None, str | None, dict | None, dict | None, str], None]


class CompanyCache:
    """The last known sys_id of each vendor name, per instance (a cache, never the truth:
    unreadable means empty). ``trusted=False`` (``--full-read``): read nothing, save anew."""

    def __init__(self, instance: str, path: Path | None = None, *, trusted: bool = True) -> None:
        self.instance = instance
        self.path = path or (paths.state_dir() / "cmdb" / "companies.json")
        self.trusted = trusted

    def _all(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def load(self) -> dict[str, str]:
        if not self.trusted:
            return {}
        known = self._all().get(self.instance)
        return {str(k): str(v) for k, v in known.items()} if isinstance(known, dict) else {}

    def forget(self, names: Iterable[str]) -> None:
        everything = self._all()
        mine = everything.get(self.instance)
        if isinstance(mine, dict):
            everything[self.instance] = {k: v for k, v in mine.items() if k not in set(names)}
            write_atomic(self.path, json.dumps(everything, sort_keys=True).encode())

    def save(self, names: Mapping[str, str]) -> None:
        """Remember ``names`` (this run's), with as many older ones as fit under
        :data:`CACHE_LIMIT`: a cache past the first round's check (1,000 ids) had cost every
        rerun a request of its own."""
        everything = self._all()
        mine = everything.get(self.instance) if self.trusted else None
        older = {
            k: v for k, v in (mine if isinstance(mine, dict) else {}).items() if k not in names
        }
        room = max(0, CACHE_LIMIT - len(names))
        merged = {**dict(sorted(older.items())[:room]), **names}
        if merged == mine:
            return  # nothing new: no write
        everything[self.instance] = merged
        write_atomic(self.path, json.dumps(everything, sort_keys=True).encode())


@dataclass
class Resolution:
    """What :func:`resolve` did. ``records``: the input with sys_ids in ``manufacturer`` (or
    the field left out where unresolved); the other fields name the vendors."""

    records: list[Any]
    known: dict[str, str] = field(default_factory=dict)  #: name → sys_id used
    cached: set[str] = field(default_factory=set)  #: names whose sys_id came from the cache
    created: dict[str, str] = field(default_factory=dict)  #: created this run
    would_create: list[str] = field(default_factory=list)  #: dry run: not found
    unresolved: dict[str, str] = field(default_factory=dict)  #: name → why
    #: unresolved for a passing reason (a failed request): a rerun may well resolve them
    transient: set[str] = field(default_factory=set)
    left_out: int = 0  #: records whose manufacturer was left out
    requests: int = 0  #: requests sent (lookups and the create batch)

    def warning(self) -> str | None:
        """One line for the run report when names stayed unresolved."""
        if not self.unresolved or not self.left_out:
            return None
        names = sorted(self.unresolved)
        shown = "; ".join(f"{n!r} ({self.unresolved[n]})" for n in names[:5])
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        if set(names) <= self.transient:  # the instance failed to answer: nothing to grant
            advice = "The instance did not answer (see why); run the load again"
        else:
            advice = (
                f"Give the integration account create rights on {COMPANY_TABLE} (or create "
                "these companies with manufacturer=true)"
            )
        return (
            f"manufacturer left out of {self.left_out} record(s): {len(names)} vendor name(s) "
            f"could not be resolved to a {COMPANY_TABLE} record: {shown}{more}. {advice}; the "
            "next load fills the field in"
        )

    def note(self) -> str | None:
        """A dry run's line: the companies a real run would create."""
        if not self.would_create:
            return None
        names = ", ".join(repr(n) for n in self.would_create[:10])
        more = f" and {len(self.would_create) - 10} more" if len(self.would_create) > 10 else ""
        return (
            f"{len(self.would_create)} manufacturer name(s) not in {COMPANY_TABLE} would be "
            f"created (manufacturer=true): {names}{more}; their records' manufacturer is set "
            "then"
        )


def names_of(records: Iterable[Any]) -> set[str]:
    return {name for r in records if (name := r.values.get(FIELD)) and name.strip()}


def _folded(name: str) -> str:
    """One vendor whatever its case and spacing: the instance compares names without case,
    and "Ubiquiti Inc. " had been created beside "Ubiquiti Inc." and "UBIQUITI INC."."""
    return " ".join(name.split()).casefold()


def _spellings(names: Iterable[str]) -> list[list[str]]:
    """``names`` grouped by vendor (:func:`_folded`), each group and the groups sorted."""
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        groups.setdefault(_folded(name), []).append(name)
    return [groups[key] for key in sorted(groups)]


def _spread(found: dict[str, str], names: Iterable[str], known: Mapping[str, str]) -> None:
    """Give every spelling of a vendor the sys_id another spelling of it resolved to."""
    by_vendor: dict[str, str] = {}
    for name, sys_id in (*known.items(), *found.items()):
        by_vendor.setdefault(_folded(name), sys_id)
    for name in names:
        if name not in found and name not in known and _folded(name) in by_vendor:
            found[name] = by_vendor[_folded(name)]


def company_sys_id(name: str) -> str:
    """The sys_id a vendor's company is created under: the same for every run and spelling,
    so two runs at once cannot make it twice (the second create is refused as existing)."""
    return uuid.uuid5(_COMPANY_IDS, _folded(name)).hex


def known_locally(records: Iterable[Any], cache: CompanyCache | None) -> bool:
    """Every vendor name is in the cache (or there is none): resolving asks the instance
    nothing."""
    return known_locally_names(names_of(records), cache)


def known_locally_names(wanted: set[str], cache: CompanyCache | None) -> bool:
    return not wanted or (cache is not None and wanted <= cache.load().keys())


def swap_in_plan(plan: Any, resolution: Resolution) -> Any:
    """A plan made from the records with names, made as :func:`resolve` made them: only for a
    plan of creates (against an empty CMDB), whose values are the records' own."""
    for item in plan.items:
        name = item.values.get(FIELD)
        if name and (sys_id := resolution.known.get(name)):
            item.values[FIELD] = sys_id
        elif name:
            del item.values[FIELD]
    plan.records = {r.source_id: r for r in resolution.records}
    return plan


def resolve(
    client: Any,
    records: Sequence[Any],
    *,
    cache: CompanyCache | None = None,
    create: bool = True,
    audit: AuditFn | None = None,
    looked_up: LookedUp | None = None,
    before_create: Callable[[], Any] | None = None,
) -> Resolution:
    """Resolve every record's ``manufacturer`` name to a ``core_company`` sys_id (see the module
    docstring). Never raises for the instance's sake: what fails stays unresolved.
    ``looked_up``: :func:`look_up_ahead`'s answer; the names it asked are not asked again.
    ``before_create``: what must pass before anything is written (the schema check: a run it
    stops had already created and audited companies); what it raises, this raises."""
    wanted = names_of(records)
    if not wanted:
        return Resolution(list(records))
    cached = cache.load() if cache is not None else {}
    out = Resolution(list(records), known={n: cached[n] for n in wanted if n in cached})
    out.cached = set(out.known)
    todo = sorted(wanted - set(out.known))
    askable = []
    for name in todo:
        why = _unaskable(name)
        if why:
            out.unresolved[name] = why
        else:
            askable.append(name)
    ahead = looked_up or LookedUp(frozenset(), {})
    found_ahead = {n: ahead.found[n] for n in askable if n in ahead.found}
    out.requests += ahead.requests
    askable_now = [n for n in askable if n not in ahead.asked]
    if askable:
        found = dict(found_ahead)
        try:
            found.update(_lookup(client, askable_now, out) if askable_now else {})
        except Exception as exc:  # what the look-ahead found stands
            for name in askable_now:
                out.unresolved[name] = f"lookup failed: {describe(exc)}"
                out.transient.add(name)
        _spread(found, [*out.known, *askable], out.known)
        out.known.update(found)
        missing = [n for n in askable if n not in out.known and n not in out.unresolved]
        if missing and create:
            if before_create is not None:
                before_create()
            _create(client, _spellings(missing), out, audit)
        elif missing:
            out.would_create = missing
    if create and cache is not None and (out.known.keys() - cached.keys() or not cache.trusted):
        with contextlib.suppress(OSError):  # a cache: the next run looks the names up again
            cache.save(out.known)  # (not a dry run's: it created nothing it could vouch for)
    out.records, out.left_out = _swap(records, out.known)
    return out


@dataclass(frozen=True)
class LookedUp:
    """The answer of :func:`look_up_ahead`: the names asked, and the sys_ids of those found."""

    asked: frozenset[str]
    found: Mapping[str, str]
    requests: int = 0


def vendor_names(inventory: Any) -> set[str]:
    """The names the transform will put in ``manufacturer`` (a device's manufacturer, a
    client's vendor), read off the inventory before the transform runs."""
    devices = inventory.devices() if hasattr(inventory, "devices") else ()
    names = {getattr(d, "manufacturer", None) for d in devices}
    names |= {getattr(c, "vendor", None) for c in getattr(inventory, "clients", ())}
    return {n for n in names if isinstance(n, str) and n.strip()}


def look_up_ahead(client: Any, names: Iterable[str], cache: CompanyCache | None) -> LookedUp:
    """Look up the names the cache does not know as soon as the inventory is in, beside the
    transform and the plan's first round: the plan then waits for no lookup of its own (a
    first load had paid it, and the creates, one after the other before its plan)."""
    cached = cache.load() if cache is not None else {}
    askable = sorted(n for n in set(names) - cached.keys() if not _unaskable(n))
    if not askable:
        return LookedUp(frozenset(), {})
    probe = Resolution([])
    try:
        found = _lookup(client, askable, probe)
    except Exception:  # the plan's own resolution asks again, and says what failed
        return LookedUp(frozenset(), {})
    return LookedUp(frozenset(askable), found, probe.requests)


def check_rider(cache: CompanyCache | None, take: Callable[[dict[str, str]], None]) -> Rider | None:
    """A read of every cached company (sys_id → name) to ride in another Batch API request;
    ``take`` gets the answer, and is not called when it is unusable."""
    ids = sorted(set(cache.load().values())) if cache is not None else []
    if not ids or len(ids) >= 1000:
        return None
    url = table_url(COMPANY_TABLE, {"sysparm_query": str(Query().in_("sys_id", ids)),
                                    "sysparm_fields": "sys_id,name"})  # fmt: skip

    def answered(answer: Any) -> None:
        rows = answer.result if answer.ok else None
        if isinstance(rows, list):
            take({as_str(r.get("sys_id")): as_str(r.get("name")) for r in rows})

    return Rider(BatchRequest("GET", url), answered)


def stale(resolution: Resolution, held: Mapping[str, str]) -> set[str]:
    """Names whose cached sys_id the instance no longer holds under that name (``held``:
    sys_id → name, as read by :func:`check_rider` or :func:`read_held`)."""
    return {
        n
        for n in resolution.cached
        if held.get(resolution.known[n], "\0").casefold() != n.casefold()
    }


def read_held(client: Any, resolution: Resolution) -> dict[str, str]:
    """sys_id → name of the cached companies this run uses (when no rider was answered)."""
    ids = sorted({resolution.known[n] for n in resolution.cached})
    if not ids:
        return {}
    rows = client.query(COMPANY_TABLE, Query().in_("sys_id", ids), fields=["sys_id", "name"])
    return {as_str(r.get("sys_id")): as_str(r.get("name")) for r in rows}


def _unaskable(name: str) -> str | None:
    if len(name) > NAME_MAX:
        return f"longer than the {NAME_MAX} characters {COMPANY_TABLE}.name holds"
    try:
        Query().eq("name", name)
    except QueryValueError:
        return "a '^', control character or script prefix no encoded query can carry"
    return None


def _lookup(client: Any, names: list[str], out: Resolution) -> dict[str, str]:
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(names):
        query = Query()
        for i, name in enumerate(chunk):
            (query.or_() if i else query).eq("name", name)
        out.requests += 1
        rows.extend(client.query(COMPANY_TABLE, query, fields=_FIELDS, page_size=1000))
    return _choose(names, rows)


def _chunks(names: list[str]) -> Iterable[list[str]]:
    chunk: list[str] = []
    size = 0
    for name in names:
        cost = len(name) * 3 + 10  # percent-encoded at worst, plus "^ORname="
        if chunk and size + cost > QUERY_CHARS:
            yield chunk
            chunk, size = [], 0
        chunk.append(name)
        size += cost
    if chunk:
        yield chunk


def _choose(names: list[str], rows: list[dict[str, Any]]) -> dict[str, str]:
    """The company each name means: an exact name before a match ignoring case, a
    manufacturer before other companies, then the lowest sys_id."""
    ranked = sorted(
        (as_str(r.get(FIELD)).lower() != "true", as_str(r.get("sys_id")), as_str(r.get("name")))
        for r in rows
        if as_str(r.get("sys_id"))
    )
    exact: dict[str, str] = {}
    folded: dict[str, str] = {}
    for _not_maker, sys_id, name in ranked:
        exact.setdefault(name, sys_id)
        folded.setdefault(_folded(name), sys_id)
    found = {}
    for name in names:
        sys_id = exact.get(name) or folded.get(_folded(name))
        if sys_id:
            found[name] = sys_id
    return found


def _create(client: Any, vendors: list[list[str]], out: Resolution, audit: AuditFn | None) -> None:
    """One Batch API request creating a company per vendor (its spellings: ``vendors``), each
    under :func:`company_sys_id`, audited. One another run made meanwhile is refused as
    existing under that id: it is this vendor's, and used."""
    bodies = [
        {"sys_id": company_sys_id(group[0]), "name": " ".join(group[0].split()), FIELD: "true"}
        for group in vendors
    ]
    requests = [
        BatchRequest("POST", _CREATE_URL, body=body, table=COMPANY_TABLE) for body in bodies
    ]
    out.requests += 1
    try:
        results = client.batch(requests, max_items=max(len(requests), 1))
    except Exception as exc:
        refused = forbidden_error(exc)
        why = "not allowed to create it (HTTP 403)" if refused else describe(exc)
        for name in (n for group in vendors for n in group):
            out.unresolved[name] = f"create failed: {why}"
            if not refused:
                out.transient.add(name)
        return
    for group, body, res in zip(vendors, bodies, results, strict=True):
        stored = res.result if res.ok and isinstance(res.result, dict) else None
        sys_id = as_str(stored.get("sys_id")) if stored else ""
        if sys_id:
            out.created[group[0]] = sys_id
            outcome, after = "success", {**body, **{k: as_str(v) for k, v in stored.items()}}
        elif "already exists" in (res.error_message or "").lower():
            for name in group:  # made by another run under the same id: not ours to audit
                out.known[name] = body["sys_id"]
            continue
        else:
            if forbidden_result(res):
                why = "not allowed to create it (HTTP 403)"
            else:
                why = res.error_message or f"HTTP {res.status_code}"
                out.transient.update(group)
            for name in group:
                out.unresolved[name] = f"create failed: {why}"
            if not res.ambiguous:
                continue  # nothing landed (the engine audits no refused write either)
            # an answer lost may hide a landed create: the next run's lookup finds it
            outcome, after = "ambiguous", body
        for name in group if sys_id else ():
            out.known[name] = sys_id
        if audit is not None:
            audit("create", COMPANY_TABLE, sys_id or body["sys_id"], None, None, after, outcome)


def _swap(records: Sequence[Any], known: Mapping[str, str]) -> tuple[list[Any], int]:
    """The records with ``manufacturer`` as a sys_id; left out where the name is unknown."""
    out: list[Any] = []
    left_out = 0
    for record in records:
        name = record.values.get(FIELD)
        if not name:
            out.append(record)
            continue
        values = dict(record.values)
        sys_id = known.get(name)
        if sys_id:
            values[FIELD] = sys_id
        else:
            del values[FIELD]
            left_out += 1
        if is_dataclass(record):
            record = replace(record, values=values)
        else:
            record = copy.copy(record)
            record.values = values
        out.append(record)
    return out, left_out
