"""Structured logging: JSON lines, ids, redaction (also in tracebacks), stdlib bridge, rotation."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from datetime import datetime

import pytest

from snowkit.ops.errors import ErrorHandler, NetworkError
from snowkit.ops.logging import (
    StructuredLogger,
    bind_run_id,
    configure_logging,
    correlation_scope,
    current_correlation_id,
    get_logger,
    new_run_id,
)


def test_json_line_schema(log_capture) -> None:
    get_logger("snowkit.test").info("request", method="GET", table="cmdb_ci", status_code=200)
    [line] = log_capture.file_lines()
    assert line["event"] == "request" and line["level"] == "info"
    assert line["logger"] == "snowkit.test" and line["table"] == "cmdb_ci"
    assert datetime.fromisoformat(line["timestamp"]).utcoffset().total_seconds() == 0
    assert log_capture.console_lines() == [line]  # console gets the same JSON line


def test_run_and_correlation_ids(log_capture) -> None:
    import contextvars

    def body() -> None:
        run_id = bind_run_id()
        assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", run_id)
        with correlation_scope() as cid:
            assert current_correlation_id() == cid and re.fullmatch(r"[0-9a-f]{32}", cid)
            get_logger().info("inside")
        assert current_correlation_id() is None
        get_logger().info("outside")

    contextvars.copy_context().run(body)
    inside, outside = log_capture.file_lines()
    assert inside["run_id"] == outside["run_id"]
    assert "correlation_id" in inside and "correlation_id" not in outside


def test_new_run_ids_are_unique() -> None:
    assert len({new_run_id() for _ in range(50)}) == 50


def test_redaction_by_key_and_value(log_capture, canary) -> None:
    from snowkit.ops.redaction import secrets

    secrets.register(canary)
    get_logger().info(
        "call",
        headers={"Authorization": "Basic abc", "Accept": "json"},
        url=f"https://x/?token={canary}",
        password="pw",
    )
    [line] = log_capture.file_lines()
    assert line["headers"] == {"Authorization": "***", "Accept": "json"}
    assert line["url"] == "https://x/?token=***" and line["password"] == "***"
    assert canary not in log_capture.all_text()


def test_traceback_has_no_locals_and_no_secret(log_capture, canary) -> None:
    from snowkit.ops.redaction import secrets

    secrets.register(canary)

    def connect() -> None:
        api_token = canary  # a local holding a secret
        local_marker = "LOCAL-VALUE-42"
        raise ConnectionError(f"refused while sending {api_token[:0]}{local_marker[:0]}")

    try:
        connect()
    except ConnectionError:
        get_logger().exception("connect_failed")
    [line] = log_capture.file_lines()
    assert "Traceback" in line["exception"] and "ConnectionError" in line["exception"]
    assert "LOCAL-VALUE-42" not in line["exception"]  # no local variables rendered
    assert "locals" not in line
    # the source line with the secret local is shown, but the value is masked
    assert canary not in log_capture.all_text()


def test_stdlib_loggers_share_the_pipeline(log_capture, canary) -> None:
    from snowkit.ops.redaction import secrets

    secrets.register(canary)
    logging.getLogger("urllib3.connectionpool").warning("retrying %s", canary)
    [line] = log_capture.events("retrying ***")
    assert line["logger"] == "urllib3.connectionpool" and line["level"] == "warning"


def test_level_filtering(tmp_path) -> None:
    stream = io.StringIO()
    configure_logging(level="WARNING", file_path=tmp_path / "l.jsonl", stream=stream)
    try:
        get_logger().info("hidden")
        get_logger().warning("shown")
    finally:
        configure_logging()
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == ["shown"]


def test_configure_is_idempotent(tmp_path) -> None:
    stream = io.StringIO()
    for _ in range(5):  # a notebook re-running its setup cell
        configure_logging(file_path=tmp_path / "l.jsonl", stream=stream)
    try:
        get_logger().info("once")
        logging.getLogger("foreign").warning("once too")
    finally:
        configure_logging()
    assert len(stream.getvalue().splitlines()) == 2
    assert len((tmp_path / "l.jsonl").read_text().splitlines()) == 2


def test_console_goes_to_current_stderr(capsys) -> None:
    configure_logging()
    get_logger().warning("to_stderr", n=1)
    err = capsys.readouterr().err
    assert json.loads(err.splitlines()[-1])["event"] == "to_stderr"


def test_console_format_is_readable(tmp_path) -> None:
    stream = io.StringIO()
    configure_logging(fmt="console", file_path=tmp_path / "l.jsonl", stream=stream)
    try:
        get_logger().info("hello", table="cmdb_ci")
    finally:
        configure_logging()
    assert "hello" in stream.getvalue() and "table=cmdb_ci" in stream.getvalue()
    assert json.loads((tmp_path / "l.jsonl").read_text())["event"] == "hello"


def test_rotation_keeps_backups(tmp_path) -> None:
    path = tmp_path / "rot.jsonl"
    configure_logging(file_path=path, console=False, max_bytes=2048, backup_count=2)
    try:
        for i in range(100):
            get_logger().info("filler", i=i, pad="x" * 50)
    finally:
        configure_logging()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["rot.jsonl", "rot.jsonl.1", "rot.jsonl.2"]
    assert all(p.stat().st_size <= 2048 for p in tmp_path.iterdir())
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["i"] == 99


def test_level_and_format_per_environment(capsys) -> None:
    from snowkit import paths
    from snowkit.config import ConfigurationManager
    from snowkit.ops.logging import configure_from_config

    dev = ConfigurationManager().load_configuration(environment="development")
    configure_from_config(dev)
    try:
        get_logger().debug("dev_detail", table="cmdb_ci")
    finally:
        configure_logging()
    err = capsys.readouterr().err
    assert "dev_detail" in err and "table=cmdb_ci" in err and not err.startswith("{")
    [line] = (paths.logs_dir() / "snowkit.jsonl").read_text().splitlines()
    assert json.loads(line)["level"] == "debug"
    configure_from_config(ConfigurationManager().load_configuration(environment="testing"))
    try:
        get_logger().info("hidden_in_testing")
        get_logger().warning("shown_in_testing")
    finally:
        configure_logging()
    err = capsys.readouterr().err
    assert "hidden_in_testing" not in err and json.loads(err)["event"] == "shown_in_testing"


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging(level="LOUD")
    with pytest.raises(ValueError, match="log format"):
        configure_logging(fmt="xml")


def test_structured_logger_seed_methods(log_capture) -> None:
    log = StructuredLogger("snowkit.loader")
    log.log_operation_start("load", {"table": "cmdb_ci"})
    log.log_operation_complete("load", 12.345, True, {"table": "cmdb_ci", "status_code": 201})
    log.log_credential_access("api_key", True, "source=environment")
    log.log_data_quality_issue("missing_mac", 3, {"site": "a"})
    log.log_performance_metric("batch_rate", 41.5, "records/s", {"batch": 1})
    log.event("health_check", status="pass")
    ctx = ErrorHandler(persist=False).capture_error("get", NetworkError("reset"))
    log.log_error(ctx)
    events = [(x["event"], x["logger"]) for x in log_capture.file_lines()]
    assert [e for e, _ in events] == [
        "operation_start",
        "operation_complete",
        "credential_access",
        "data_quality_issue",
        "performance_metric",
        "health_check",
        "error",
    ]
    assert {name for _, name in events} == {"snowkit.loader"}
    lines = {x["event"]: x for x in log_capture.file_lines()}
    assert lines["operation_complete"]["duration_ms"] == 12.345
    assert lines["operation_complete"]["status_code"] == 201
    assert lines["performance_metric"]["metric"] == "batch_rate"
    assert lines["error"]["category"] == "network" and lines["error"]["retryable"] is True


def test_structured_logger_level(log_capture) -> None:
    log = StructuredLogger("quiet", level="WARNING")
    log.log_operation_start("x", {})
    log.log_data_quality_issue("y", 1, {})
    assert [x["event"] for x in log_capture.file_lines()] == ["data_quality_issue"]


def test_reconfigure_reaches_existing_structured_logger(tmp_path) -> None:
    log = StructuredLogger("keep")
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first, file_path=None)
    log.event("one")
    configure_logging(stream=second, file_path=None)
    log.event("two")
    configure_logging()
    assert "one" in first.getvalue() and "two" in second.getvalue()
    assert "two" not in first.getvalue()


def test_log_line_is_fast(tmp_path) -> None:
    configure_logging(file_path=tmp_path / "perf.jsonl", console=False)
    log = get_logger("perf")
    try:
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(500):
                log.info("request", method="GET", table="cmdb_ci", status_code=200, duration_ms=3.2)
            samples.append((time.perf_counter() - start) / 500)
    finally:
        configure_logging()
    assert sorted(samples)[2] < 100e-6  # generous bound for CI; ~10 µs measured locally
