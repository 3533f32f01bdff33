"""MetricsCollector: exact aggregates, bounded memory, Prometheus exposition and exports."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from snowkit.ops.metrics import (
    DURATION_BUCKETS,
    MetricsCollector,
    OperationMetrics,
    SystemMetrics,
)

#: The sample record of metrics.json (docs/architecture.md), in frame column order.
SAMPLE_COLUMNS = ["timestamp", "operation", "table", "method", "status_code", "duration_ms", "ok"]


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_percentiles_match_numpy_on_known_data() -> None:
    rng = np.random.default_rng(7)
    data = rng.lognormal(mean=4.0, sigma=0.8, size=5_000)
    m = MetricsCollector()
    for value in data:
        m.record_request("GET", "query", 200, float(value), table="cmdb_ci")
    op = m.get_operation_metrics("query")
    assert op is not None
    assert op.p50_response_time_ms == pytest.approx(np.percentile(data, 50))
    assert op.p95_response_time_ms == pytest.approx(np.percentile(data, 95))
    assert op.p99_response_time_ms == pytest.approx(np.percentile(data, 99))
    assert op.max_response_time_ms == pytest.approx(data.max())
    assert op.average_response_time_ms == pytest.approx(data.mean())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200))
def test_percentiles_property_matches_numpy(values: list[float]) -> None:
    m = MetricsCollector()
    for v in values:
        m.record_request("GET", "op", 200, v)
    op = m.get_operation_metrics("op")
    assert op is not None
    for q, got in ((50, op.p50_response_time_ms), (95, op.p95_response_time_ms)):
        assert got == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-9)


def test_counts_success_failure_and_error_rate() -> None:
    m = MetricsCollector()
    for status in (200, 201, 404, 500):
        m.record_request("POST", "create", status, 10.0, table="cmdb_ci_netgear")
    m.record_error("POST", "create", TimeoutError("read timed out"), table="cmdb_ci_netgear")
    op = m.get_operation_metrics("create")
    assert op is not None
    assert (op.total_requests, op.successful_requests, op.failed_requests) == (5, 2, 3)
    assert op.error_rate_percent == pytest.approx(60.0)
    assert op.table == "cmdb_ci_netgear"
    assert op.last_updated is not None and op.last_updated.tzinfo is not None


def test_retries_and_rate_limits_are_counted() -> None:
    m = MetricsCollector()
    m.record_request("GET", "query", 429, 5.0, table="cmdb_ci")
    m.record_rate_limit("query", retry_after_s=30)
    m.record_retry("query", "rate_limit")
    m.record_retry("query", TimeoutError())
    op = m.get_operation_metrics("query")
    assert op is not None and op.retries == 2 and op.rate_limited == 1
    samples = _samples(m.exposition())
    assert samples[("snowkit_rate_limited_total", (("operation", "query"),))] == 1
    assert samples[("snowkit_last_retry_after_seconds", (("operation", "query"),))] == 30
    assert (
        samples[("snowkit_retries_total", (("operation", "query"), ("reason", "TimeoutError")))]
        == 1
    )


def test_counts_stay_exact_while_samples_are_bounded() -> None:
    m = MetricsCollector(max_samples=1_000)
    n = 1_000_000
    record = m.record_request
    for i in range(n):
        record("GET", "query" if i % 2 else "get", 200, float(i % 997), "cmdb_ci")
    total = sum(op.total_requests for op in m.all_operation_metrics())
    assert total == n
    assert m.retained_sample_count() <= 1_000
    assert len(m.samples()) <= 1_000
    assert all(op.samples_retained <= 1_000 for op in m.all_operation_metrics())


def test_new_keys_share_the_global_cap() -> None:
    m = MetricsCollector(max_samples=10_000)
    for key in range(10):
        for i in range(5_000):
            m.record_request("GET", f"op{key}", 200, float(i))
    assert m.retained_sample_count() <= 10_000
    # Every key keeps recent samples even though the first one filled the store alone.
    assert all(op.samples_retained >= 100 for op in m.all_operation_metrics())


def test_exposition_parses_and_buckets_reach_beyond_60s() -> None:
    m = MetricsCollector()
    m.record_request("GET", "query", 200, 61_000.0, table="cmdb_ci")
    m.set_breaker_state("servicenow", "half_open")
    m.set_health("degraded")
    samples = _samples(m.exposition())
    labels = (("method", "GET"), ("operation", "query"), ("status", "200"), ("table", "cmdb_ci"))
    assert samples[("snowkit_requests_total", labels)] == 1
    bucket_labels = {
        dict(k[1]).get("le") for k in samples if k[0] == "snowkit_request_duration_seconds_bucket"
    }
    assert {"60.0", "120.0"} <= bucket_labels
    assert 60.0 in DURATION_BUCKETS
    in_60 = samples[
        (
            "snowkit_request_duration_seconds_bucket",
            (("le", "60.0"), ("method", "GET"), ("operation", "query"), ("table", "cmdb_ci")),
        )
    ]
    assert in_60 == 0  # 61 s lands above the 60 s bucket
    assert samples[("snowkit_circuit_breaker_state", (("breaker", "servicenow"),))] == 2
    assert samples[("snowkit_health_status", ())] == 1


def test_each_collector_has_its_own_registry() -> None:
    a, b = MetricsCollector(), MetricsCollector()
    a.record_request("GET", "query", 200, 1.0)
    assert b"snowkit_requests_total{" not in b.exposition()


def test_urls_become_routes_and_table_is_parsed() -> None:
    m = MetricsCollector()
    url = "GET https://admin:pw@dev1.service-now.com/api/now/table/cmdb_ci/" + "a" * 32 + "?x=1"
    m.record_request("GET", url, 200, 3.0)
    [op] = m.all_operation_metrics()
    assert op.operation_name == "GET /api/now/table/cmdb_ci/{id}"
    assert op.table == "cmdb_ci"
    text = m.exposition().decode()
    assert "dev1.service-now.com" not in text and "admin" not in text


def test_system_metrics_and_breaker_watch() -> None:
    class FakeBreaker:
        name = "servicenow"
        state = "closed"

        def __init__(self) -> None:
            self.listeners: list = []

        def add_listener(self, fn) -> None:  # type: ignore[no-untyped-def]
            self.listeners.append(fn)

    clock = iter([100.0, 142.5])
    m = MetricsCollector(clock=lambda: next(clock))
    breaker = FakeBreaker()
    m.watch_breaker(breaker)
    breaker.state = "open"
    breaker.listeners[0](breaker, "closed", "open")
    system = m.system_metrics()
    assert isinstance(system, SystemMetrics)
    assert system.memory_usage_mb > 1
    assert system.uptime_seconds == 42
    assert system.circuit_breaker_states == {"servicenow": "open"}
    assert system.active_connections is None or system.active_connections >= 0


def test_active_connections_counts_the_sockets_the_process_opens() -> None:
    m = MetricsCollector()
    before = m.system_metrics().active_connections
    assert before is not None and before >= 0
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        clients = [socket.create_connection(server.getsockname()) for _ in range(3)]
        accepted = [server.accept()[0] for _ in clients]
        try:
            # the listener, three client ends and three accepted ends
            assert m.system_metrics().active_connections == before + 7
        finally:
            for sock in clients + accepted:
                sock.close()
    assert m.system_metrics().active_connections == before


def test_frames() -> None:
    m = MetricsCollector()
    m.record_request("GET", "query", 200, 5.0, table="cmdb_ci")
    m.record_request("GET", "query", 200, 7.0, table="cmdb_ci_ip_switch")
    frame = m.to_frame()
    assert len(frame) == 2
    assert set(frame["table"]) == {"cmdb_ci", "cmdb_ci_ip_switch"}
    assert frame["total_requests"].sum() == 2
    samples = m.samples_frame()
    assert list(samples.columns) == SAMPLE_COLUMNS
    assert str(samples["timestamp"].dt.tz) == "UTC"


def test_snapshot_round_trip(tmp_path: Path) -> None:
    m = MetricsCollector()
    for v in (1.0, 2.0, 3.0):
        m.record_request("GET", "query", 200, v, table="cmdb_ci")
    target = m.write_snapshot(tmp_path / "run" / "metrics.json")
    data = orjson.loads(target.read_bytes())
    assert set(data) >= {"operations", "system", "samples"}
    assert set(data["samples"][0]) == set(SAMPLE_COLUMNS)
    loaded = MetricsCollector.load_snapshot(target)
    assert isinstance(loaded.operations[0], OperationMetrics)
    assert loaded.operations[0].p50_response_time_ms == 2.0
    assert loaded.to_frame()["total_requests"].tolist() == [3]
    assert len(loaded.samples_frame()) == 3
    assert not list(tmp_path.joinpath("run").glob(".metrics.json.*"))  # no temp files left


def test_textfile_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = MetricsCollector()
    m.record_request("GET", "query", 200, 5.0)
    target = tmp_path / "textfile" / "snowkit.prom"
    target.parent.mkdir()
    target.write_text("previous content\n")
    replaced: list[tuple[str, str]] = []
    import os

    real_rename = os.rename

    def spy(src: str, dst: str) -> None:
        replaced.append((str(src), str(dst)))
        assert Path(dst).read_text() == "previous content\n"  # old file intact until rename
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", spy)
    monkeypatch.setattr(os, "replace", spy)
    m.write_textfile(target)
    assert replaced and replaced[-1][1] == str(target)
    assert "snowkit_requests_total" in target.read_text()
    assert list(target.parent.iterdir()) == [target]


def test_thread_safety_counts_are_exact() -> None:
    m = MetricsCollector(max_samples=500)

    def work() -> None:
        for i in range(5_000):
            m.record_request("GET", "query", 200 if i % 3 else 503, 1.0, "cmdb_ci")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    op = m.get_operation_metrics("query")
    assert op is not None and op.total_requests == 20_000
    assert op.successful_requests + op.failed_requests == 20_000
    samples = _samples(m.exposition())
    total = sum(v for (name, _), v in samples.items() if name == "snowkit_requests_total")
    assert total == 20_000


@settings(max_examples=100, deadline=None)
@given(
    host=st.from_regex(r"[a-z][a-z0-9-]{0,20}\.service-now\.com", fullmatch=True),
    table=st.from_regex(r"[a-z_]{1,30}", fullmatch=True),
    query=st.text(max_size=40),
    sys_id=st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
)
@example(host="a.service-now.com", table="t", query="a b://c d", sys_id="0" * 32)
def test_url_labels_keep_only_a_bounded_route(
    host: str, table: str, query: str, sys_id: str
) -> None:
    m = MetricsCollector()
    m.record_request(
        "GET", f"GET https://u:p@{host}/api/now/table/{table}/{sys_id}?{query}", 200, 1
    )
    [op] = m.all_operation_metrics()
    assert op.operation_name == f"GET /api/now/table/{table}/{{id}}"
    assert op.table == table
    assert host not in op.operation_name and len(op.operation_name) <= 120


def test_overhead_benchmark_smoke() -> None:
    """The benchmark harness runs (tiny sizes); figures themselves are not asserted here."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "benchmarks/ops_overhead.py", "--quick", "--iterations", "300"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for row in ("metrics.record_request", "breaker.call", "audit append", "whole stack"):
        assert row in result.stdout


def test_wired_to_a_real_breaker_and_retry_manager() -> None:
    from snowkit.ops.breaker import CircuitBreaker
    from snowkit.ops.errors import RateLimitError
    from snowkit.ops.retry import RetryManager, RetryPolicy

    m = MetricsCollector()
    breaker = CircuitBreaker(failure_threshold=1, name="servicenow", log_transitions=False)
    m.watch_breaker(breaker)
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    assert m.breaker_states == {"servicenow": "open"}

    calls = iter([RateLimitError("429", details={"retry_after": 7}), None])

    def flaky() -> str:
        error = next(calls)
        if error is not None:
            raise error
        return "ok"

    retry = RetryManager(RetryPolicy(max_attempts=3), sleep=lambda _s: None, on_retry=m.retry_hook)
    assert retry.execute_with_retry(flaky, operation_name="query") == "ok"
    op = m.get_operation_metrics("query")
    assert op is not None and op.retries == 1 and op.rate_limited == 1
    samples = _samples(m.exposition())
    assert samples[("snowkit_last_retry_after_seconds", (("operation", "query"),))] == 7
