"""Collect a small lab over HTTP from all three APIs and transform it."""

from __future__ import annotations

from snowkit.cmdb import transform
from snowkit.ops.retry import RetryManager
from snowkit.unifi import (
    IntegrationCollector,
    Inventory,
    LabConfig,
    NetworkAppCollector,
    SiteManagerCollector,
    generate_lab,
    lab_app,
)

from .conftest import API_KEY, PASSWORD, USERNAME, serve


def test_collect_and_transform_lab_with_defects_and_duplicates(retry_manager: RetryManager) -> None:
    config = LabConfig(
        sites=3,
        devices_per_site=8,
        clients_per_site=200,
        seed=5,
        defect_rate=0.05,
        duplicate_rate=0.03,
    )
    lab = generate_lab(config)
    app = lab_app(lab, api_key=API_KEY, username=USERNAME, password=PASSWORD)
    with serve(app) as server:
        inv = Inventory.merge(
            SiteManagerCollector(
                server.sitemanager, API_KEY, retry_manager=retry_manager
            ).collect(),
            NetworkAppCollector(
                server.network, USERNAME, PASSWORD, retry_manager=retry_manager
            ).collect(),
            IntegrationCollector(server.network, API_KEY, retry_manager=retry_manager).collect(),
        )
    result = transform(inv)
    tables = result.counts_by_table()
    assert tables["cmn_location"] == 3 and tables["cmdb_ci_ip_router"] == 3
    assert tables.get("cmdb_ci_computer", 0) > 0 and tables.get("cmdb_ci_hardware", 0) > 0
    defective = {
        c.mac
        for s in lab.sites
        for c in lab.clients(s.index)
        if c.defect in ("bad_mac", "missing_name_and_mac", "absurd_value")
    }
    assert len(result.quarantined) >= len(defective) > 0
    assert all(q.reasons for q in result.quarantined)
    assert all(any(r.severity == "error" for r in q.reasons) for q in result.quarantined)
    # each device appears in 3 APIs, each sound client in 2: all resolved to one record
    ids = [r.source_id for r in result.records]
    assert len(ids) == len(set(ids))
    assert result.duplicates and {d.kept_source for d in result.duplicates} <= {
        "network",
        "sitemanager",
    }
    assert result.relationship_counts()["Connects to::Connected by"] > 500
