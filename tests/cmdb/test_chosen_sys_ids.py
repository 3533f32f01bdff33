"""Creates carry a sys_id chosen by the loader: what happens when the instance does not keep
it, when a retried create finds it already taken by its own first attempt, when the target
of a reference fails, and when such a write is queued in the outbox.

Black-box against the embedded instance, with the client wrapped where an instance has to
behave in a way the embedded one does not on its own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from snowkit.cmdb.apply import SyncEngine
from snowkit.cmdb.batches import BatchRunner
from snowkit.cmdb.ledger import RunLedger
from snowkit.cmdb.state import StateStore
from snowkit.cmdb.transform import CMDBRecord, TransformResult
from snowkit.cmdb.writes import WriteOp
from snowkit.ops.breaker import CircuitOpenError
from snowkit.servicenow import ServiceNowAPIClient
from snowkit.servicenow.batch import BatchRequest, BatchResult

from .test_apply import SID, estate


def _locations(client: ServiceNowAPIClient) -> dict[str, str]:
    rows = client.query("cmn_location", f"{SID}ISNOTEMPTY", fields=["sys_id", SID])
    return {r[SID]: r["sys_id"] for r in rows}


def _location_of(client: ServiceNowAPIClient) -> dict[str, str]:
    rows = client.query("cmdb_ci", f"{SID}ISNOTEMPTY", fields=[SID, "location"])
    return {r[SID]: r["location"] for r in rows}


def _engine(client: Any, store: StateStore | None = None) -> SyncEngine:
    return SyncEngine(client, batch_size=4, workers=2, state_store=store,
                      instance_key="k" if store else None)  # fmt: skip


class KeepsItsOwnIds:
    """An instance that ignores a ``sys_id`` sent with a create (a business rule, say)."""

    def __init__(self, client: ServiceNowAPIClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch(self, requests: list[BatchRequest], **kw: Any) -> list[BatchResult]:
        stripped = [
            replace(r, body={k: v for k, v in r.body.items() if k != "sys_id"})
            if r.method == "POST" and isinstance(r.body, dict)
            else r
            for r in requests
        ]
        return self._client.batch(stripped, **kw)


def test_an_instance_that_keeps_its_own_ids_is_warned_about_and_repaired_next_run(
    client: ServiceNowAPIClient,
) -> None:
    result = estate(sites=1, devices=2, clients=2)
    with StateStore() as store:
        _plan, first = _engine(KeepsItsOwnIds(client), store).sync(result, progress=False)
        assert any("under another sys_id" in w for w in first.warnings), first.warnings
        assert store.load("k") is None  # forgotten: the next run reads the CMDB in full
        site = _locations(client)["site:0"]
        assert set(_location_of(client).values()) != {site}  # sent with the chosen id
        plan, again = _engine(client, store).sync(result, progress=False)
    assert plan.counts()["create"] == 0 and again.status == "success"
    assert set(_location_of(client).values()) == {site}  # every reference repaired


def _create(sid: str, sys_id: str) -> WriteOp:
    extra = {SID: sid, "sys_id": sys_id}
    return WriteOp(sid, "create", "cmdb_ci_ip_switch", {"name": sid}, extra, source_id=sid)


def test_a_retried_create_that_finds_its_id_taken_by_its_own_first_attempt_has_landed(
    client: ServiceNowAPIClient,
) -> None:
    """The lookup before a retry can run before the first attempt commits; the retry is then
    refused (the id exists). That record is ours: adopted, not reported failed."""
    ours, theirs = "a" * 32, "b" * 32
    client.create("cmdb_ci_ip_switch", {"name": "first attempt", SID: "dev:1", "sys_id": ours})
    client.create("cmdb_ci_ip_switch", {"name": "someone else", SID: "dev:x", "sys_id": theirs})
    ledger = RunLedger(run_id="r")
    runner = BatchRunner(client, ledger, batch_size=10, workers=1)
    runner.run_chunk([_create("dev:1", ours), _create("dev:2", theirs)])
    assert ledger.sys_ids == {"dev:1": ours}
    assert ledger.stats.adopted_after_ambiguity == 1
    assert [f.source_id for f in ledger.failures] == ["dev:2"]  # not ours: a real failure


class LookupsCannotConnect:
    """An instance that answers writes but drops every read (a lookup meets a dead link)."""

    def __init__(self, client: ServiceNowAPIClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def query(self, *a: Any, **kw: Any) -> Any:
        raise CircuitOpenError("the breaker is open", operation="query")


def test_a_refused_retry_whose_first_attempt_cannot_be_checked_is_no_definite_refusal(
    client: ServiceNowAPIClient,
) -> None:
    """The retry was refused (its id exists), and the lookup that would tell whether the
    first attempt landed cannot reach the instance: the failure carries no status, so the
    references to it are not cleared as if the create had surely failed."""
    ours = "a" * 32
    client.create("cmdb_ci_ip_switch", {"name": "first attempt", SID: "dev:1", "sys_id": ours})
    ledger = RunLedger(run_id="r")
    runner = BatchRunner(LookupsCannotConnect(client), ledger, batch_size=10, workers=1)
    runner.run_chunk([_create("dev:1", ours)])
    (failure,) = ledger.failures
    assert failure.status_code is None and "could not be checked" in failure.error
    assert ledger.unreachable


class FailsLocationCreates:
    """An instance that refuses every new location (a data policy, say), or answers it with
    ``status`` (a 503: no telling whether it was stored)."""

    def __init__(self, client: ServiceNowAPIClient, status: int = 400) -> None:
        self._client, self._status = client, status

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch(self, requests: list[BatchRequest], **kw: Any) -> list[BatchResult]:
        refused = {
            n for n, r in enumerate(requests) if r.method == "POST" and "cmn_location" in r.url
        }
        sent = [r for n, r in enumerate(requests) if n not in refused]
        answers = iter(self._client.batch(sent, **kw) if sent else [])
        body = {"error": {"message": "Data policy: field missing"}, "status": "failure"}
        return [
            BatchResult(str(r.id), r, self._status, body=body, error_message="Data policy")
            if n in refused
            else next(answers)
            for n, r in enumerate(requests)
        ]


def test_an_update_never_trades_a_working_reference_for_one_to_a_failed_create(
    client: ServiceNowAPIClient,
) -> None:
    result = estate(sites=1, devices=2, clients=1)
    _engine(client).sync(result, progress=False)
    old_site = _locations(client)["site:0"]
    moved = [
        CMDBRecord(r.table, r.source_id, r.values, r.kind, {"location": "site:new"})
        if r.source_id == "dev:0:1"
        else r
        for r in result.records
    ]
    new_site = CMDBRecord("cmn_location", "site:new", {"name": "New site"}, "location")
    _plan, report = _engine(FailsLocationCreates(client)).sync(
        TransformResult([new_site, *moved], result.relationships), progress=False
    )
    assert [f.source_id for f in report.failures] == ["site:new"]
    assert _location_of(client)["dev:0:1"] == old_site  # kept: the new site does not exist


def test_a_queued_write_names_the_targets_of_its_chosen_references() -> None:
    from snowkit.cmdb.plan import PlanItem

    op = _create("dev:1", "a" * 32)
    op.item = PlanItem("dev:1", "cmdb_ci_ip_switch", "create", references={"location": "site:1"})
    op.extra["location"] = "c" * 32  # filled with the sys_id chosen for site:1
    entry = RunLedger(run_id="r")._outbox_entry(op)
    assert entry["references"] == {"location": "site:1"}  # resolved again when replayed


def test_a_lookup_before_a_retry_adopts_the_record_under_the_chosen_id(
    client: ServiceNowAPIClient,
) -> None:
    """Two records carry the source id (someone else's duplicate): the one under the sys_id
    the create chose is the one that landed. Ours sorts first, as keyset paging lists it."""
    ours = "0" * 32
    client.create("cmdb_ci_ip_switch", {"name": "ours", SID: "dev:1", "sys_id": ours})
    client.create("cmdb_ci_ip_switch", {"name": "theirs", SID: "dev:1"})
    ledger = RunLedger(run_id="r")
    runner = BatchRunner(client, ledger, batch_size=10, workers=1)
    assert runner.settle([_create("dev:1", ours)]) == []
    assert ledger.sys_ids == {"dev:1": ours}


class RenamesOneRecord:
    """An instance that stores another ``name`` than the one sent for one record (as a
    business rule might) and says so in its answer."""

    def __init__(self, client: ServiceNowAPIClient, source_id: str) -> None:
        self._client, self._source_id = client, source_id
        self.listings = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch(self, requests: list[BatchRequest], **kw: Any) -> list[BatchResult]:
        self.listings += sum(1 for r in requests if r.method == "GET")
        results = self._client.batch(requests, **kw)
        for res in results:
            row = res.result
            if isinstance(row, dict) and row.get(SID) == self._source_id:
                row["name"] = "renamed by a rule"
                self._client.update(res.request.table, row["sys_id"], {"name": row["name"]})
        return results


def test_a_verification_that_finds_a_difference_forgets_the_state_the_seal_was_checking(
    client: ServiceNowAPIClient,
) -> None:
    """The seal's round trip goes out beside the verification; a difference found there
    still rules the state out (the next run reads the CMDB in full)."""
    result = estate(sites=1, devices=2, clients=2)
    target = next(r.source_id for r in result.records if r.table != "cmn_location")
    renaming = RenamesOneRecord(client, target)
    with StateStore() as store:
        _plan, report = _engine(renaming, store).sync(result, progress=False)
        assert report.status == "partial" and report.mismatches
        assert renaming.listings >= 1  # the seal went out all the same
        assert store.load("k") is None
        _plan, again = _engine(client, store).sync(result, progress=False)
        assert again.status == "success" and again.applied["updated"] == 1  # named back
        assert store.load("k") is not None


def test_references_to_a_create_that_failed_are_cleared_not_left_pointing_at_nothing(
    client: ServiceNowAPIClient,
) -> None:
    """The devices went out with the sys_id chosen for their site, whose create then failed:
    their location is cleared (not left naming a record that does not exist), and the next
    run creates the site and fills the references in."""
    result = estate(sites=1, devices=2, clients=2)
    _plan, report = _engine(FailsLocationCreates(client)).sync(result, progress=False)
    assert [f.source_id for f in report.failures] == ["site:0"]
    located = _location_of(client)
    assert located and set(located.values()) == {""}  # no reference to a missing record
    assert any("whose create was refused" in w for w in report.warnings), report.warnings
    assert report.verification["ok"], report.verification  # what was cleared is expected
    _plan, again = _engine(client).sync(result, progress=False)
    assert again.status == "success" and again.applied["created"] == 1
    site = _locations(client)["site:0"]
    assert set(_location_of(client).values()) == {site}


def test_references_to_a_create_with_no_definite_answer_are_left_as_they_are(
    client: ServiceNowAPIClient,
) -> None:
    """A create that failed without a definite refusal (503s until the attempts ran out) may
    have been stored under its chosen id after all: the references to it are not touched."""
    result = estate(sites=1, devices=2, clients=2)
    _plan, report = _engine(FailsLocationCreates(client, status=503)).sync(result, progress=False)
    assert [f.source_id for f in report.failures] == ["site:0"]
    assert "" not in set(_location_of(client).values())
    assert not any("whose create was refused" in w for w in report.warnings)


def test_only_a_definite_answer_counts_as_refused() -> None:
    from snowkit.cmdb.report import ItemFailure
    from snowkit.cmdb.stream import refused

    def failure(status: int | None) -> ItemFailure:
        return ItemFailure(source_id="s", table="t", action="create", error="e",
                           status_code=status)  # fmt: skip

    assert [refused(failure(s)) for s in (400, 403, 404, 422)] == [True] * 4
    assert [refused(failure(s)) for s in (None, 408, 409, 429, 500, 503)] == [False] * 6
