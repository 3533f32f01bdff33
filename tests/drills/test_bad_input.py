"""Bad input: broken UniFi payloads, broken config files, malformed HTTP. Nothing crashes.

1. **UniFi payloads** (seeded generator; fast 1,000, long 10,000): valid items of the three
   APIs (built by the lab's own payload functions) with keys dropped, values of the wrong type,
   hostile strings (control characters, 100 kB, encoded-query metacharacters), unknown keys,
   deep nesting, whole items replaced by junk. Through ``from_network`` / ``from_integration``
   / ``from_sitemanager`` + ``transform``: no exception; every input item is accounted for
   (a record, a quarantined record, a rejected item or a merged duplicate); every rejection
   and quarantine carries a reason; quoted values are bounded and printable. One payload in
   ten also goes through ``snowkit inventory FILE --json`` (exit 0, or 2 with a message).
2. **Config files** (fast 300, long 3,000): TOML/JSON garbage, wrong types, unknown keys, odd
   top levels, binary junk, bad environment variables, through ``ConfigurationManager`` and
   ``snowkit config show``: a ``ConfigurationError`` that never echoes the bad value, exit 78,
   no traceback.
3. **Malformed HTTP** to the embedded instance over raw sockets (TLS and plain): garbage
   request lines, huge and countless headers, bad Content-Length, slowloris connections held
   open, invalid and deeply nested JSON, an oversized body, binary junk. After each, and while
   the slow connections are still open, a normal request succeeds within 5 s.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from snowkit.cli import main
from snowkit.cmdb.transform import transform
from snowkit.config import ConfigurationManager
from snowkit.ops.errors import ConfigurationError
from snowkit.sandbox import Sandbox
from snowkit.unifi import LabConfig, generate_lab
from snowkit.unifi.lab.app import (
    integration_client,
    integration_device,
    network_client,
    network_device,
    sitemanager_device,
    sitemanager_host,
    sitemanager_site,
)
from snowkit.unifi.models.inventory import Provenance
from snowkit.unifi.models.normalize import from_integration, from_network, from_sitemanager

CANARY = "CANARY-bad-value-7f3a"
PROMPT_S = 5.0  # a normal request after abuse must answer within this


# ---------------------------------------------------------------------------------------------
# 1. UniFi payloads
# ---------------------------------------------------------------------------------------------


def deep(levels: int) -> Any:
    value: Any = CANARY
    for _ in range(levels):
        value = {"x": [value]}
    return value


JUNK: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    2**70,
    1.5e308,
    "",
    "   ",
    "\x00\x1b[31mred\x07\r\n",
    "💥" * 20,
    "a" * 100_000,
    [],
    {},
    [1, [2, [3]]],
    "zz:zz:zz:zz:zz:zz",
    "00:00:00:00:00:00",
    "ff:ff:ff:ff:ff:ff",
    "999.999.1.1",
    "not-an-ip",
    "^ORnameSTARTSWITHa^NQsys_id!=x",
    "'; DROP TABLE cmdb_ci;--",
    "<script>alert(1)</script>",
    CANARY,
)


def mutate(item: Any, rng: random.Random) -> Any:
    """One to four random damages to one payload item."""
    if rng.random() < 0.08 or not isinstance(item, dict):
        return rng.choice(JUNK)  # not an object at all
    out = dict(item)
    for _ in range(rng.randint(1, 4)):
        keys = list(out)
        op = rng.random()
        if op < 0.3 and keys:
            out.pop(rng.choice(keys))
        elif op < 0.75 and keys:
            out[rng.choice(keys)] = rng.choice(JUNK)
        elif op < 0.85:
            out[f"unknown_{rng.randint(0, 9)}"] = rng.choice(JUNK)
        elif op < 0.93 and keys:
            out[rng.choice(keys)] = deep(rng.choice((5, 50, 200)))
        elif len(keys) > 1:
            a, b = rng.sample(keys, 2)
            out[a], out[b] = out[b], out[a]
    return out


def damaged(items: list[Any], rng: random.Random) -> list[Any]:
    out = [
        mutate(i, rng) if rng.random() < 0.5 or not isinstance(i, dict) else dict(i) for i in items
    ]
    if out and rng.random() < 0.1:
        out.append(rng.choice(out))  # an exact duplicate
    return out


class Corpus:
    """Valid payload items of the three APIs from a small generated lab."""

    def __init__(self) -> None:
        lab = generate_lab(
            LabConfig(sites=1, devices_per_site=4, clients_per_site=6, seed=3, defect_rate=0)
        )
        site = lab.sites[0]
        devices = list(lab.all_devices())
        self.net_sites = [{"_id": site.object_id, "name": site.name, "desc": site.desc}]
        self.net_devices = [network_device(d, site) for d in devices]
        self.net_clients = [network_client(c, site) for c in lab.clients(0)]
        self.int_sites = [{"id": site.uuid, "name": site.desc, "internalReference": site.name}]
        self.int_devices = [integration_device(d) for d in devices]
        self.int_clients = [integration_client(c, devices[1].uuid) for c in lab.clients(0)]
        self.sm_hosts = [sitemanager_host(site, devices[0])]
        self.sm_sites = [sitemanager_site(site, devices[0])]
        self.sm_devices = [
            {"hostId": site.host_id, "devices": [sitemanager_device(d) for d in devices]}
        ]


def build(corpus: Corpus, api: str, rng: random.Random) -> tuple[Any, int, dict[str, Any]]:
    """(inventory, number of input items, a saved-response document for the CLI)."""
    if api == "network":
        sites, devs, cls = (
            damaged(x, rng) for x in (corpus.net_sites, corpus.net_devices, corpus.net_clients)
        )
        inv = from_network(sites, devs, cls, Provenance("network"))
        doc = {"meta": {"rc": "ok"}, "data": rng.choice((devs, cls))}
        return inv, len(sites) + len(devs) + len(cls), doc
    if api == "integration":
        sites, devs, cls = (
            damaged(x, rng) for x in (corpus.int_sites, corpus.int_devices, corpus.int_clients)
        )
        inv = from_integration(sites, {None: devs}, {None: cls}, Provenance("integration"))
        doc = {"offset": 0, "limit": 200, "count": len(devs), "totalCount": len(devs), "data": devs}
        return inv, len(sites) + len(devs) + len(cls), doc
    hosts, sites = damaged(corpus.sm_hosts, rng), damaged(corpus.sm_sites, rng)
    groups = [
        {**g, "devices": damaged(g["devices"], rng)}
        if isinstance(g, dict) and isinstance(g.get("devices"), list)
        else g
        for g in damaged(corpus.sm_devices, rng)
    ]
    inv = from_sitemanager(hosts, sites, groups, Provenance("sitemanager"))
    nested = sum(
        len(g["devices"])
        for g in groups
        if isinstance(g, dict) and isinstance(g.get("devices"), list)
    )
    doc = {"data": groups, "httpStatusCode": 200, "traceId": "t"}
    return inv, len(hosts) + len(sites) + nested, doc


def check_inventory(inv: Any, items_in: int, api: str) -> dict[str, int]:
    result = transform(inv)  # must not raise
    for rejected in inv.rejected:
        assert isinstance(rejected.reason, str) and rejected.reason.strip(), rejected
        assert len(json.dumps(rejected.summary, default=str)) < 2_000, "summary unbounded"
    for q in result.quarantined:
        assert q.reasons, f"quarantined without a reason: {q.source_id}"
        for reason in q.reasons:
            assert reason.message.strip() and reason.rule.strip(), reason
            assert len(reason.value) <= 300, "quoted value unbounded"
            assert not any(ord(c) < 32 for c in reason.value), "control character in a report"
    for issue in result.issues:
        assert issue.message.strip(), issue
    if api != "sitemanager":  # Site Manager hosts are not inventory items
        # unparseable items are quarantined by the transform too (with the parser's reason)
        parsed = len(inv.sites) + sum(1 for _ in inv.devices()) + len(inv.clients)
        merged = sum(d.count - 1 for d in result.duplicates)
        accounted = len(result.records) + len(result.quarantined) + merged
        assert items_in == parsed + len(inv.rejected), (items_in, parsed, len(inv.rejected))
        assert items_in == accounted, ("items unaccounted for", items_in, accounted)
    return {
        "records": len(result.records),
        "quarantined": len(result.quarantined),
        "rejected": len(inv.rejected),
    }


def inventory_cli(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["inventory", str(path), "--json"])
    return code, out.getvalue(), err.getvalue()


def run_unifi(drill: Any, tmp_path: Path, payloads: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    corpus = Corpus()
    totals = {"payloads": 0, "records": 0, "quarantined": 0, "rejected": 0, "cli_runs": 0}
    file = tmp_path / "saved.json"
    for n in range(payloads):
        api = ("network", "integration", "sitemanager")[n % 3]
        inv, items_in, doc = build(corpus, api, rng)
        for key, value in check_inventory(inv, items_in, api).items():
            totals[key] += value
        totals["payloads"] += 1
        if n % 10 == 0:
            file.write_text(json.dumps(doc, default=str), encoding="utf-8")
            code, out, err = inventory_cli(file)
            totals["cli_runs"] += 1
            assert "Traceback" not in out + err
            assert code == 0 or (code == 2 and "snowkit inventory:" in err), (code, err[:500])
            if code == 0:
                json.loads(out)
    for junk in (
        b"\xff\xfe\x00garbage",
        b"{",
        b"[1, 2, 3]",
        b"null",
        b'"text"',
        b"",
        b"[" * 500 + b"]" * 500,
    ):
        file.write_bytes(junk)
        code, out, err = inventory_cli(file)
        totals["cli_runs"] += 1
        assert code == 2 and "snowkit inventory:" in err and "Traceback" not in err, err[:500]
    assert totals["quarantined"] + totals["rejected"] > 0, "the generator broke nothing"
    return totals


def test_inventory_cli_refuses_deeply_nested_json(tmp_path: Path) -> None:
    file = tmp_path / "deep.json"
    file.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    try:
        code, _out, err = inventory_cli(file)
    except RecursionError:
        raise AssertionError("RecursionError escaped: a traceback, not exit 2") from None
    assert code == 2 and "snowkit inventory:" in err


# ---------------------------------------------------------------------------------------------
# 2. Config files
# ---------------------------------------------------------------------------------------------

VALID_CONFIG: dict[str, Any] = {
    "logging": {"level": "INFO", "console_output": False},
    "retry": {"max_attempts": 4, "base_delay_seconds": 0.5},
    "circuit_breaker": {"failure_threshold": 5},
    "servicenow": {"instance": "https://example.service-now.com", "workers": 4},
    "credentials": {"username": "svc_loader"},
}
BAD_VALUES: tuple[Any, ...] = (CANARY, -5, 10**9, [CANARY], {"x": CANARY}, 1.5, True, "")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


def to_toml(data: dict[str, Any]) -> str:
    top = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    tables = [
        f"[{k}]\n" + "\n".join(f"{kk} = {toml_value(vv)}" for kk, vv in v.items())
        for k, v in data.items()
        if isinstance(v, dict)
    ]
    return "\n".join(top + tables) + "\n"


def broken_config(rng: random.Random) -> tuple[str, bytes]:
    """(suffix, content) of a config file that must be refused."""
    data = json.loads(json.dumps(VALID_CONFIG))
    kind = rng.randrange(6)
    if kind == 0:  # unknown key, top level or nested
        target = data if rng.random() < 0.5 else data[rng.choice(list(data))]
        target[f"unknwon_{rng.randint(0, 99)}"] = CANARY
    elif kind == 1:  # wrong type or out of range
        section = rng.choice(["retry", "circuit_breaker", "servicenow", "logging"])
        key = rng.choice(list(data[section]))
        data[section][key] = rng.choice([v for v in BAD_VALUES if v != data[section][key]])
        data["retry"]["max_attempts"] = rng.choice([CANARY, -1, 0, 99, [CANARY]])
    elif kind == 2:  # a section that is not a table
        data[rng.choice(list(data))] = rng.choice([CANARY, 3, [CANARY]])
    elif kind == 3:  # syntax garbage, inserted between tokens (not inside a string)
        garbage = rng.choice(['"', "[[", "= =", "{", "\x00", CANARY + " = = ", "}\n}"])
        if rng.random() < 0.5:
            text, suffix = to_toml(data), ".toml"
            cuts = [i + 1 for i, c in enumerate(text) if c == "\n"][:-1]
        else:
            text, suffix = json.dumps(data), ".json"
            cuts = [i + 1 for i, c in enumerate(text) if c in ",{"]
        cut = rng.choice(cuts)
        return suffix, (text[:cut] + garbage + text[cut:]).encode()
    elif kind == 4:  # binary junk
        return rng.choice([".toml", ".json"]), bytes(rng.randrange(256) for _ in range(200))
    else:  # an odd top level
        return ".json", json.dumps(rng.choice([[CANARY], CANARY, 42, None])).encode()
    if rng.random() < 0.5:
        return ".json", json.dumps(data).encode()
    return ".toml", to_toml(data).encode()


def config_show(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["config", "show", "--config", str(path), "--environment", "testing"])
    return code, out.getvalue(), err.getvalue()


def run_config(tmp_path: Path, files: int, seed: int, monkeypatch: Any) -> dict[str, int]:
    rng = random.Random(seed)
    good = tmp_path / "good.toml"
    good.write_text(to_toml(VALID_CONFIG))
    assert ConfigurationManager().load_configuration(good, "testing").retry.max_attempts == 4
    refused = 0
    for n in range(files):
        suffix, content = broken_config(rng)
        path = tmp_path / f"c{n % 7}{suffix}"
        path.write_bytes(content)
        try:
            ConfigurationManager().load_configuration(path, "testing")
        except ConfigurationError as exc:
            text = str(exc)
            assert CANARY not in text, f"the bad value was echoed: {text[:300]}"
            assert str(path.name) in text or "(" in text, text[:300]
            refused += 1
        else:
            pytest.fail(f"accepted a broken config: {content[:200]!r}")
        if n % 10 == 0:
            code, out, err = config_show(path)
            assert code == 78 and "Traceback" not in err and CANARY not in out + err, err
    for name, value in (
        ("SNOWKIT_RETRY__MAX_ATTEMPTS", CANARY),
        ("SNOWKIT_SERVICENOW", "{" + CANARY),
        ("SNOWKIT_SERVICENOW__WORKERS", "-3"),
        ("BEAST_ENVIRONMENT", CANARY),
    ):
        with monkeypatch.context() as patch:
            patch.setenv(name, value)
            env = None if name == "BEAST_ENVIRONMENT" else "testing"
            with pytest.raises(ConfigurationError) as info:
                ConfigurationManager().load_configuration(good, env)
            assert CANARY not in str(info.value)
            refused += 1
    return {"config_files": files, "config_refused": refused}


# ---------------------------------------------------------------------------------------------
# 3. Malformed HTTP
# ---------------------------------------------------------------------------------------------


def tls_context(sb: Sandbox) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(sb.ca_path))


@contextlib.contextmanager
def raw_connection(sb: Sandbox, *, tls: bool = True, timeout: float = 1.0) -> Iterator[Any]:
    sock = socket.create_connection((sb.host, sb.port), timeout=timeout)
    try:
        if tls:
            sock = tls_context(sb).wrap_socket(sock, server_hostname="127.0.0.1")
        yield sock
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def send_raw(sb: Sandbox, data: bytes, *, tls: bool = True) -> bytes:
    """Send bytes, read what comes back until the server closes or 1 s passes (bounded)."""
    received = b""
    with contextlib.suppress(OSError), raw_connection(sb, tls=tls) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and len(received) < 1_000_000:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
            if b"\r\n\r\n" in received and _complete(received):
                break
    return received


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def prompt_request(sb: Sandbox, session: requests.Session) -> float:
    started = time.monotonic()
    response = session.get(
        f"{sb.url}/api/now/table/sys_user",
        params={"sysparm_limit": 1},
        auth=("admin", sb.users["admin"]),
        verify=str(sb.ca_path),
        timeout=PROMPT_S,
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.json()["result"], response.text[:200]
    assert elapsed < PROMPT_S
    return elapsed


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def abuses(sb: Sandbox) -> list[tuple[str, Callable[[], bytes]]]:
    import base64

    basic = "Basic " + base64.b64encode(f"admin:{sb.users['admin']}".encode()).decode()
    auth = {"Authorization": basic, "Content-Type": "application/json"}
    post = "/api/now/table/cmdb_ci"

    def with_body(body: bytes, **extra: str) -> bytes:
        headers = {**auth, "Content-Length": str(len(body)), **extra}
        return request_bytes("POST", post, headers, body)

    return [
        ("garbage request line", lambda: send_raw(sb, b"\x16\x03 GARBAGE \x00\xff\r\n\r\n")),
        ("HTTP/0.9 style", lambda: send_raw(sb, b"GET /\r\n")),
        ("no version", lambda: send_raw(sb, b"GET /api/now/table/cmdb_ci\r\n\r\n")),
        ("bad method", lambda: send_raw(sb, request_bytes("BR3W!", "/", {}))),
        ("NUL in path", lambda: send_raw(sb, request_bytes("GET", "/api/now/\x00/x", auth))),
        ("100 kB URL", lambda: send_raw(sb, request_bytes("GET", "/" + "a" * 100_000, auth))),
        ("1 MB header", lambda: send_raw(sb, request_bytes("GET", "/", {"X-Big": "b" * 2**20}))),
        (
            "20,000 headers",
            lambda: send_raw(sb, request_bytes("GET", "/", {f"X-{i}": "v" for i in range(20_000)})),
        ),
        ("Content-Length -1", lambda: send_raw(sb, with_body(b"{}", **{"Content-Length": "-1"}))),
        ("Content-Length text", lambda: send_raw(sb, with_body(b"{}", **{"Content-Length": "x"}))),
        (
            "Content-Length too large, short body",
            lambda: send_raw(sb, with_body(b"{}", **{"Content-Length": "5000"})),
        ),
        (
            "two Content-Lengths",
            lambda: send_raw(
                sb,
                request_bytes("POST", post, {**auth, "Content-Length": "2"})[:-4]
                + b"\r\nContent-Length: 9\r\n\r\n{}",
            ),
        ),
        (
            "chunked garbage",
            lambda: send_raw(
                sb,
                request_bytes(
                    "POST", post, {**auth, "Transfer-Encoding": "chunked"}, b"zz\r\nxx\r\n0\r\n"
                ),
            ),
        ),
        ("invalid JSON", lambda: send_raw(sb, with_body(b'{"name": "x",,,}'))),
        ("JSON array", lambda: send_raw(sb, with_body(b"[1,2,3]"))),
        ("deep JSON", lambda: send_raw(sb, with_body(b"[" * 200_000 + b"]" * 200_000))),
        (
            "deep JSON object",
            lambda: send_raw(sb, with_body(b'{"a":' * 50_000 + b"1" + b"}" * 50_000)),
        ),
        ("11 MB body", lambda: send_raw(sb, with_body(b'{"name": "' + b"x" * 11_000_000 + b'"}'))),
        (
            "binary junk",
            lambda: send_raw(sb, bytes(random.Random(1).randrange(256) for _ in range(65_536))),
        ),
        (
            "plain text to the TLS port",
            lambda: send_raw(sb, request_bytes("GET", "/", {}), tls=False),
        ),
        (
            "TLS junk handshake",
            lambda: send_raw(sb, b"\x16\x03\x01\x02\x00" + b"\x00" * 512, tls=False),
        ),
    ]


def run_http(sb: Sandbox) -> dict[str, Any]:
    session = requests.Session()
    session.trust_env = False
    slowest = prompt_request(sb, session)
    answers: dict[str, str] = {}
    for name, abuse in abuses(sb):
        reply = abuse()
        status = reply.split(b"\r\n", 1)[0].decode("latin-1", "replace") if reply else "closed"
        answers[name] = status
        assert b"Traceback" not in reply, name
        slowest = max(slowest, prompt_request(sb, session))
    # slowloris: connections that never finish their request, held open meanwhile
    held: list[Any] = []
    try:
        for i in range(40):
            sock = socket.create_connection((sb.host, sb.port), timeout=3)
            held.append(sock)
            if i % 2:  # half finish TLS and send half a request line; half stay silent
                tls = tls_context(sb).wrap_socket(sock, server_hostname="127.0.0.1")
                held[-1] = tls
                tls.sendall(b"POST /api/now/table/cmdb_ci HTTP/1.1\r\nHost: x\r\nContent-Le")
        for _ in range(5):
            slowest = max(slowest, prompt_request(sb, session))
    finally:
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
    slowest = max(slowest, prompt_request(sb, session))
    session.close()
    return {
        "http_abuses": len(answers),
        "slowloris_connections": 40,
        "slowest_normal_request_s": round(slowest, 3),
        "answers": answers,
    }


# ---------------------------------------------------------------------------------------------


def bad_input(drill: Any, tmp_path: Path, monkeypatch: Any, payloads: int, configs: int) -> None:
    figures: dict[str, Any] = {}
    figures.update(run_unifi(drill, tmp_path, payloads, seed=17))
    figures.update(run_config(tmp_path, configs, seed=23, monkeypatch=monkeypatch))
    with Sandbox.start() as sb:
        figures.update(run_http(sb))
    drill.figures("bad_input", variant="long" if drill.long else "fast", **figures)


def test_bad_input_fast(drill: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad_input(drill, tmp_path, monkeypatch, payloads=1_000, configs=300)


@pytest.mark.drill
def test_bad_input_long(drill: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad_input(drill, tmp_path, monkeypatch, payloads=10_000, configs=3_000)
