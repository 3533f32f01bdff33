"""A read-only account (HTTP 403 on every write): stop at the first refusal and say what to do."""

from __future__ import annotations

from snowkit.cmdb.job import run_load
from snowkit.cmdb.outbox import Outbox
from snowkit.cmdb.schema import ensure_schema
from snowkit.credentials import CredentialManager
from snowkit.ops.audit import read_audit
from snowkit.sandbox import Sandbox

from .conftest import FAST, LAB, make_client


def _readonly_load(sb: Sandbox, **kw: object):
    with make_client(sb) as admin:
        ensure_schema(admin, create=True)  # an admin set the instance up; the loader only reads
    password = sb.users["readonly"]
    report = run_load(
        sandbox=sb,
        lab=LAB,
        credentials=CredentialManager.static(basic=("readonly", password)),
        progress=False,
        batch_size=3,
        workers=1,
        client_options=FAST,
        **kw,
    )
    return report, password


def test_a_readonly_account_stops_at_the_first_403_with_guidance(sandbox: Sandbox) -> None:
    report, password = _readonly_load(sandbox)
    assert report.status == "failed"
    message = report.message.lower()
    assert "403" in message and "write rights" in message
    assert "itil" in message and "acl" in message and "snowkit load" in message
    assert password not in report.message
    # stopped at the first refused batch: one batch sent, its items refused, the rest unsent
    assert report.applied["batches"] == 1
    assert 0 < len(report.failures) <= 3 and all("403" in f.error for f in report.failures)
    assert report.applied["not_attempted"] > 0
    assert report.applied["created"] == 0 and report.relationships.created == 0
    assert report.success_rate == 0.0
    with Outbox() as box:  # a permission problem is not an outage: nothing parked
        assert box.count() == 0 and box.count("failed") == 0
    assert list(read_audit(run_id=report.run_id)) == []
    assert sandbox.store.list("cmdb_ci", "u_unifi_source_idISNOTEMPTY", limit=-1)[0] == []


def test_a_readonly_account_in_ire_mode_stops_too(sandbox: Sandbox) -> None:
    report, _password = _readonly_load(sandbox, ire=True)
    assert report.status == "failed"
    assert "write rights" in report.message and report.applied["not_attempted"] > 0
    with Outbox() as box:
        assert box.count() == 0


def test_writes_a_refusal_left_unsent_count_against_the_success_rate() -> None:
    """500 landed, 1 refused and 499 never sent had shown 99.8 %."""
    from snowkit.cmdb.report import RunReport

    report = RunReport(run_id="r", applied={"created": 500, "failed": 1, "not_attempted": 499})
    assert report.success_rate == 0.5


def test_links_a_refusal_left_unsent_do_not_count_against_the_record_success_rate() -> None:
    """An account that may write CIs but not cmdb_rel_ci: every record landed, yet the 99 link
    writes left unsent after the first link's 403 had halved the success rate."""
    from snowkit.cmdb.ledger import RunLedger
    from snowkit.cmdb.linking import report_link_outcomes
    from snowkit.cmdb.report import RunReport
    from snowkit.cmdb.writes import RELATE, WriteOp

    ledger = RunLedger(run_id="r")
    ledger.add("created", 100)
    links = [WriteOp(key=f"l{i}", action=RELATE, table="cmdb_rel_ci", values={})
             for i in range(100)]  # fmt: skip
    ledger.forbid(links[0], "HTTP 403 on cmdb_rel_ci")
    ledger.skip(links[1:])
    report = RunReport(run_id="r")
    ledger.fill_report(report, ire=False, workers=1, batch_size=50)
    report_link_outcomes(report, ledger)
    assert report.success_rate == 1.0 and report.applied["not_attempted"] == 0
    assert report.relationships.not_attempted == 99 and report.relationships.failed == 1
    assert "1 write(s) refused, 99 not attempted" in report.message
