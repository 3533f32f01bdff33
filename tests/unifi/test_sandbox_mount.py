"""The lab mounted in the embedded ServiceNow instance at /unifi, over HTTPS with its CA."""

from __future__ import annotations

import pytest

from snowkit.ops.retry import RetryManager
from snowkit.unifi import (
    IntegrationCollector,
    LabConfig,
    NetworkAppCollector,
    SiteManagerCollector,
    generate_lab,
    lab_app,
)

from .conftest import API_KEY, PASSWORD, USERNAME, Sleeps

sandbox = pytest.importorskip("snowkit.sandbox")


def test_collectors_through_the_sandbox_mount(retry_manager: RetryManager) -> None:
    app = lab_app(
        generate_lab(LabConfig(sites=2, clients_per_site=20)),
        api_key=API_KEY,
        username=USERNAME,
        password=PASSWORD,
    )
    with sandbox.Sandbox.start() as sb:
        sb.mount("/unifi", app)
        base = sb.url.rstrip("/") + "/unifi"
        options = {"retry_manager": retry_manager, "verify": str(sb.ca_path)}
        sm = SiteManagerCollector(base + "/sitemanager", API_KEY, **options).collect()
        net = NetworkAppCollector(base + "/network", USERNAME, PASSWORD, **options).collect()
        integ = IntegrationCollector(base + "/network", API_KEY, **options).collect()
    assert len(sm.sites) == len(net.sites) == len(integ.sites) == 2
    assert len(integ.clients) == 40 and app.logins == 1


def test_untrusted_certificate_is_a_configuration_error_not_stale_data(
    retry_manager: RetryManager, sleeps: Sleeps
) -> None:
    from snowkit.ops.errors import ConfigurationError

    app = lab_app(generate_lab(LabConfig(sites=1, clients_per_site=1)), api_key=API_KEY)
    with sandbox.Sandbox.start() as sb:
        sb.mount("/unifi", app)
        collector = IntegrationCollector(
            sb.url.rstrip("/") + "/unifi/network", API_KEY, retry_manager=retry_manager
        )
        with pytest.raises(ConfigurationError, match="verify="):
            collector.collect()
    assert app.requests == [] and sleeps.calls == []  # not retried
