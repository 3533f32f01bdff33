"""`snowkit inventory FILE... [--json]` on saved responses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snowkit.cli import main

from .conftest import SAMPLES


def _write(tmp_path: Path, name: str, document: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return str(path)


DEVICES = {
    "meta": {"rc": "ok"},
    "data": [
        {
            "_id": "d1",
            "mac": "78:8a:20:33:44:55",
            "serial": "788A20334455",
            "model": "UGW3",
            "type": "ugw",
            "name": "USG",
            "ip": "1.2.3.4",
            "site_id": "s1",
        },
        {
            "_id": "d2",
            "mac": "80:2a:a8:00:01:02",
            "model": "U7PG2",
            "type": "uap",
            "name": "Büro-AP",
            "site_id": "s1",
            "uplink": {"uplink_mac": "78:8a:20:33:44:55"},
        },
        {"_id": "d3", "mac": "not-a-mac", "model": "US8", "type": "usw", "name": "Café Switch"},
    ],
}
CLIENTS = {
    "meta": {"rc": "ok"},
    "data": [
        {
            "_id": "c1",
            "mac": "b8:ca:3a:00:00:01",
            "hostname": "LAPTOP-1",
            "ip": "10.0.0.5",
            "ap_mac": "80:2a:a8:00:01:02",
            "site_id": "s1",
        },
    ],
}
SITES = {"meta": {"rc": "ok"}, "data": [{"_id": "s1", "name": "default", "desc": "Zentrale"}]}


def test_text_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [
        _write(tmp_path, n, d)
        for n, d in (("dev.json", DEVICES), ("sta.json", CLIENTS), ("sites.json", SITES))
    ]
    assert main(["inventory", *files]) == 0
    out = capsys.readouterr().out
    assert "cmdb_ci_ip_router" in out and "cmdb_ci_computer" in out and "cmn_location" in out
    assert "Connects to::Connected by" in out
    assert "Quarantined: 1" in out and "unifi:device:network:d3" in out and "mac_format" in out


def test_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [_write(tmp_path, "dev.json", DEVICES), _write(tmp_path, "sta.json", CLIENTS)]
    assert main(["inventory", "--json", *files]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["records"] == {
        "cmdb_ci_computer": 1,
        "cmdb_ci_ip_router": 1,
        "cmdb_ci_wap_network": 1,
    }
    assert doc["files"][files[0]] == "network.devices"
    (held,) = doc["quarantined"]
    assert held["reasons"][0]["rule"] == "mac_format" and held["reasons"][0]["value"] == "not-a-mac"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ('{"hello": 1}', "not a response of a known"),
    ],
)
def test_unreadable_files_exit_2_with_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "x.json"
    if content is not None:
        path.write_text(content)
    assert main(["inventory", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared reference samples absent")
def test_all_reference_samples(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(p) for p in sorted(SAMPLES.glob("*.json"))]
    assert main(["inventory", "--json", *files]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["files"]) == len(files)
    assert doc["records"]["cmdb_ci_ip_router"] >= 2


@pytest.mark.parametrize("depth", [100_000, 5_000])
def test_deeply_nested_json_exits_2_with_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], depth: int
) -> None:
    """The stdlib parser recurses per level: past the stack limit it must be a refusal."""
    path = tmp_path / "deep.json"
    path.write_bytes(b"[" * depth + b"]" * depth)
    assert main(["inventory", str(path), "--json"]) == 2
    err = capsys.readouterr().err
    assert "nested too deeply" in err and str(path) in err and "Traceback" not in err


def test_deep_but_parseable_item_does_not_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nesting just under the parser's limit inside an item must not crash a later stage."""
    deep: object = 1
    for _ in range(900):
        deep = [deep]
    document = {"meta": {"rc": "ok"}, "data": [{**DEVICES["data"][0], "extra": deep}]}
    path = _write(tmp_path, "devices.json", document)
    code = main(["inventory", path, "--json"])
    captured = capsys.readouterr()
    assert code in (0, 2), captured.err
    assert "Traceback" not in captured.err
