"""Collectors against the lab over HTTP on 127.0.0.1: auth, paging, retries, breaker, cache."""

from __future__ import annotations

import logging

import pytest
import structlog
from werkzeug.wrappers import Request, Response

from snowkit.ops.breaker import CircuitBreaker, CircuitState
from snowkit.ops.errors import AuthenticationError, AuthorizationError
from snowkit.ops.retry import RetryManager
from snowkit.unifi.cache import LastKnownGoodCache
from snowkit.unifi.collectors import (
    IntegrationCollector,
    NetworkAppCollector,
    SiteManagerCollector,
    SourceUnavailableError,
    UnexpectedResponseError,
)
from snowkit.unifi.lab import LabConfig, generate_lab, lab_app
from snowkit.unifi.models.inventory import Inventory

from .conftest import API_KEY, PASSWORD, USERNAME, LabServer, Sleeps, serve


def _network(server: LabServer, retry: RetryManager, **kw: object) -> NetworkAppCollector:
    return NetworkAppCollector(server.network, USERNAME, PASSWORD, retry_manager=retry, **kw)  # type: ignore[arg-type]


def test_sitemanager_collects_with_next_token_paging(
    lab_server: LabServer, retry_manager: RetryManager
) -> None:
    collector = SiteManagerCollector(
        lab_server.sitemanager, API_KEY, page_size=1, retry_manager=retry_manager
    )
    inv = collector.collect()
    assert inv.counts() | {"clients": 0} == inv.counts()
    assert len(inv.sites) == 2 and len(inv.gateways) == 2
    device_calls = [r for r in lab_server.app.requests if "/v1/devices" in r]
    assert len(device_calls) == 2  # one page per host with pageSize=1
    assert all(d.site_source_id for d in inv.devices())


def test_network_app_logs_in_once_and_reuses_session(
    lab_server: LabServer, retry_manager: RetryManager
) -> None:
    inv = _network(lab_server, retry_manager).collect()
    assert lab_server.app.logins == 1
    assert len(inv.sites) == 2
    assert len(inv.clients) >= 60  # duplicates included, resolved by the transform
    assert len(inv.gateways) == 2 and all(g.ip and g.ip.startswith("10.") for g in inv.gateways)


def test_network_app_relogs_once_after_session_expiry(
    lab_server: LabServer, retry_manager: RetryManager
) -> None:
    collector = _network(lab_server, retry_manager)
    collector.collect()
    lab_server.app.expire_sessions()
    collector.collect()
    assert lab_server.app.logins == 2 and collector.logins == 2


def test_network_app_falls_back_to_classic_login(retry_manager: RetryManager) -> None:
    app = lab_app(
        generate_lab(LabConfig(sites=1, clients_per_site=5)),
        username=USERNAME,
        password=PASSWORD,
        unifi_os=False,
    )
    with serve(app) as server:
        collector = _network(server, retry_manager)
        inv = collector.collect()
        assert collector.unifi_os is False and len(inv.clients) >= 5
        assert "POST /network/api/auth/login" in app.requests
        assert "POST /network/api/login" in app.requests


def test_wrong_password_is_an_authentication_error_without_the_secret(
    lab_server: LabServer, retry_manager: RetryManager
) -> None:
    collector = NetworkAppCollector(
        lab_server.network, USERNAME, "wrong-Secret-123", retry_manager=retry_manager
    )
    with pytest.raises(AuthorizationError) as info:
        collector.collect()
    assert "wrong-Secret-123" not in str(info.value)
    assert "read-only local account" in str(info.value)  # says what to do


def test_wrong_api_key_is_an_authentication_error(
    lab_server: LabServer, retry_manager: RetryManager
) -> None:
    with pytest.raises(AuthenticationError) as info:
        IntegrationCollector(lab_server.network, "nope-key", retry_manager=retry_manager).collect()
    assert info.value.context.http_status == 401 and "nope-key" not in str(info.value)
    with pytest.raises(AuthenticationError):
        SiteManagerCollector(lab_server.sitemanager, "nope", retry_manager=retry_manager).collect()


def test_integration_pages_until_total_count(
    lab_server: LabServer, retry_manager: RetryManager
) -> None:
    inv = IntegrationCollector(
        lab_server.network, API_KEY, page_size=7, retry_manager=retry_manager
    ).collect()
    assert len(inv.clients) == 60
    client_pages = [r for r in lab_server.app.requests if r.endswith("/clients")]
    assert len(client_pages) == 2 * 5  # ceil(30 / 7) pages per site
    assert all(c.uplink_source_id for c in inv.clients)


def test_429_waits_retry_after_then_succeeds(
    lab_server: LabServer, retry_manager: RetryManager, sleeps: Sleeps
) -> None:
    lab_server.app.inject(429, retry_after=7, path_contains="/v1/sites")
    inv = IntegrationCollector(lab_server.network, API_KEY, retry_manager=retry_manager).collect()
    assert sleeps.calls == [7.0]
    assert len(inv.sites) == 2


def test_5xx_is_retried(lab_server: LabServer, retry_manager: RetryManager, sleeps: Sleeps) -> None:
    lab_server.app.inject(503, count=2, path_contains="stat/device")
    inv = _network(lab_server, retry_manager).collect()
    assert len(sleeps.calls) == 2 and inv.gateways


def test_source_down_returns_cached_inventory_marked_stale(
    lab_server: LabServer, retry_manager: RetryManager
) -> None:
    now = [1_000.0]
    cache = LastKnownGoodCache(clock=lambda: now[0])
    collector = IntegrationCollector(
        lab_server.network, API_KEY, retry_manager=retry_manager, cache=cache
    )
    fresh = collector.collect()
    assert not fresh.stale
    lab_server.app.down = True
    now[0] += 3600
    with structlog.testing.capture_logs() as logs:
        stale = collector.collect()
    assert stale.stale and stale.provenance[0].age_seconds == 3600
    assert len(stale.clients) == len(fresh.clients)
    assert stale.warnings and "stale data" in stale.warnings[0] and "3600 s" in stale.warnings[0]
    events = [e for e in logs if e["event"] == "stale_data"]
    assert events and events[0]["log_level"] == "warning" and events[0]["age_seconds"] == 3600


def test_source_down_without_cache_says_what_to_do(
    lab_server: LabServer, retry_manager: RetryManager
) -> None:
    lab_server.app.down = True
    with pytest.raises(SourceUnavailableError) as info:
        SiteManagerCollector(lab_server.sitemanager, API_KEY, retry_manager=retry_manager).collect()
    text = str(info.value)
    assert "sitemanager" in text and "no last-known-good copy" in text and "What to do" in text


def test_open_breaker_answers_from_cache_without_calling(
    lab_server: LabServer, retry_manager: RetryManager
) -> None:
    breaker = CircuitBreaker(
        failure_threshold=1, recovery_timeout_seconds=600, name="unifi-test", log_transitions=False
    )
    collector = SiteManagerCollector(
        lab_server.sitemanager, API_KEY, retry_manager=retry_manager, breaker=breaker
    )
    collector.collect()
    lab_server.app.down = True
    collector.collect()  # fails after retries → breaker opens, cache answers
    assert breaker.state is CircuitState.OPEN
    calls = len(lab_server.app.requests)
    inv = collector.collect()
    assert inv.stale and len(lab_server.app.requests) == calls  # breaker open: no request


def test_unknown_site_name_is_a_configuration_error(
    lab_server: LabServer, retry_manager: RetryManager
) -> None:
    collector = _network(lab_server, retry_manager, sites=["Default Site"])
    with pytest.raises(Exception, match="short name"):
        collector.collect()


def _broken_integration(environ, start_response):  # type: ignore[no-untyped-def]
    request = Request(environ)
    if request.path.endswith("/sites"):
        body = b'{"offset":0,"limit":25,"count":2,"totalCount":2,"data":[{"id":"s1"}]}'
    else:
        body = b"<html>login</html>"
    return Response(body, mimetype="application/json")(environ, start_response)


def test_integration_count_mismatch_is_detected(retry_manager: RetryManager) -> None:
    with (
        serve(_broken_integration) as server,
        pytest.raises(UnexpectedResponseError, match="count 2 != 1"),
    ):
        IntegrationCollector(server.url, API_KEY, retry_manager=retry_manager).collect()


def test_secrets_never_reach_the_log(
    lab_server: LabServer, retry_manager: RetryManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        _network(lab_server, retry_manager).collect()
        IntegrationCollector(lab_server.network, API_KEY, retry_manager=retry_manager).collect()
    text = repr(logs) + caplog.text
    assert PASSWORD not in text and API_KEY not in text


def test_merged_inventory_from_all_three_apis(
    lab_server: LabServer, retry_manager: RetryManager
) -> None:
    parts = [
        SiteManagerCollector(
            lab_server.sitemanager, API_KEY, retry_manager=retry_manager
        ).collect(),
        _network(lab_server, retry_manager).collect(),
        IntegrationCollector(lab_server.network, API_KEY, retry_manager=retry_manager).collect(),
    ]
    merged = Inventory.merge(*parts)
    # Integration UUID sites fold into the legacy/Site Manager ObjectId sites (same short name).
    assert len({s.source_id for s in merged.sites}) == 2
    assert {p.source for p in merged.provenance} == {"sitemanager", "network", "integration"}


def test_classic_wrong_password_is_an_authentication_error(retry_manager: RetryManager) -> None:
    app = lab_app(
        generate_lab(LabConfig(sites=1, clients_per_site=1)),
        username=USERNAME,
        password=PASSWORD,
        unifi_os=False,
    )
    with serve(app) as server:
        collector = NetworkAppCollector(
            server.network, USERNAME, "nope-Secret-9", retry_manager=retry_manager
        )
        with pytest.raises(AuthenticationError, match="rejected the username or password") as info:
            collector.collect()
    assert "nope-Secret-9" not in str(info.value)


def test_a_login_locked_by_unifi_os_is_reported_not_retried_nor_answered_from_cache(
    retry_manager: RetryManager, tmp_path: object
) -> None:
    """Each retry was one more failed login, and a cached copy then hid the cause."""
    logins: list[str] = []

    @Request.application
    def locked(request: Request) -> Response:
        logins.append(request.path)
        body = '{"code": "AUTHENTICATION_FAILED_LIMIT_REACHED", "message": "limit reached"}'
        return Response(body, status=429, mimetype="application/json")

    cache = LastKnownGoodCache(tmp_path)  # type: ignore[arg-type]
    cache.save("network", Inventory())
    with serve(locked) as server:
        collector = NetworkAppCollector(
            server.url, USERNAME, "wrong", unifi_os=True, cache=cache, retry_manager=retry_manager
        )
        with pytest.raises(AuthenticationError) as info:
            collector.collect()
    assert logins == ["/api/auth/login"]
    assert "locks logins" in str(info.value) and "UNIFI_PASSWORD" in str(info.value)


def test_integration_devices_carry_firmware_and_uplinks_from_their_detail_view(
    lab_server: LabServer, retry_manager: RetryManager
) -> None:
    """The list view has neither: every device had come without firmware or uplink."""
    inv = IntegrationCollector(lab_server.network, API_KEY, retry_manager=retry_manager).collect()
    devices = list(inv.devices())
    assert devices and all(d.firmware for d in devices)
    assert any(d.uplink_source_id for d in devices)
    network = _network(lab_server, retry_manager).collect()
    expected = {d.mac: (d.firmware, d.uplink_source_id) for d in network.devices()}
    assert {d.mac: (d.firmware, d.uplink_source_id) for d in devices} == expected
