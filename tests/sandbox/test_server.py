"""Server lifecycle and robustness: TLS/CA, HTTP mode, concurrency, mounts, hostile clients."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from snowkit.sandbox import Sandbox

from .conftest import session_for


def test_ca_is_created_once_and_reused(tmp_path: Path):
    with Sandbox.start(state_dir=tmp_path) as first:
        assert first.url.startswith("https://127.0.0.1:")
        ca = Path(first.ca_path).read_bytes()
        port = first.port
    with pytest.raises(requests.ConnectionError):
        requests.get(f"https://127.0.0.1:{port}/", verify=str(tmp_path / "ca.pem"), timeout=2)
    with Sandbox.start(state_dir=tmp_path) as second:
        assert Path(second.ca_path).read_bytes() == ca
        with session_for(second) as session:
            assert session.get(f"{second.url}/api/now/table/sys_user").status_code == 200


def test_default_state_dir_is_under_snowkit_home(snowkit_home: Path):
    with Sandbox.start() as sb:
        assert Path(sb.ca_path).parent == snowkit_home / "sandbox"


def test_plain_http_mode_and_file_database(tmp_path: Path):
    db = tmp_path / "data" / "sandbox.sqlite3"
    with Sandbox.start(https=False, db=db, state_dir=tmp_path) as sb:
        assert sb.url.startswith("http://") and sb.ca_path is None
        with session_for(sb) as session:
            created = session.post(
                f"{sb.url}/api/now/table/incident", json={"short_description": "persist"}
            )
            assert created.status_code == 201
            sys_id = created.json()["result"]["sys_id"]
    with Sandbox.start(https=False, db=db, state_dir=tmp_path) as sb, session_for(sb) as session:
        assert session.get(f"{sb.url}/api/now/table/incident/{sys_id}").status_code == 200


def test_port_in_use_raises_a_clear_error(sandbox: Sandbox):
    with pytest.raises(OSError, match="Choose another port"):
        Sandbox.start(port=sandbox.port, https=False)


def test_sixteen_concurrent_clients_with_keep_alive(sandbox: Sandbox):
    def worker(_: int) -> list[int]:
        with session_for(sandbox) as session:
            return [
                session.get(
                    f"{sandbox.url}/api/now/table/sys_user", params={"sysparm_limit": "2"}
                ).status_code
                for _ in range(10)
            ]

    with ThreadPoolExecutor(16) as pool:
        results = [code for codes in pool.map(worker, range(16)) for code in codes]
    assert results == [200] * 160


def test_mounted_app_gets_prefix_in_script_name(sandbox: Sandbox):
    def echo(environ, start_response):
        body = f"{environ['SCRIPT_NAME']}|{environ['PATH_INFO']}".encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    sandbox.mount("/unifi", echo)
    response = requests.get(
        f"{sandbox.url}/unifi/network/api/self", verify=str(sandbox.ca_path), timeout=5
    )
    assert response.text == "/unifi|/network/api/self"
    assert requests.get(f"{sandbox.url}/unifix", verify=str(sandbox.ca_path)).status_code == 401


def _text_app(text: str):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [text.encode()]

    return app


def test_a_later_mount_at_the_same_prefix_replaces_the_earlier_one(sandbox: Sandbox):
    sandbox.mount("/lab", _text_app("first"))
    sandbox.mount("/lab/deeper", _text_app("deeper"))
    sandbox.mount("lab/", _text_app("second"))  # same prefix, spelled differently
    with session_for(sandbox) as session:
        assert session.get(f"{sandbox.url}/lab/x").text == "second"
        assert session.get(f"{sandbox.url}/lab/deeper/x").text == "deeper"  # longest wins


def test_concurrent_mounts_lose_none(sandbox: Sandbox):
    prefixes = [f"/race-{i}" for i in range(40)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda p: sandbox.mount(p, _text_app(p)), prefixes))
    with session_for(sandbox) as session:
        for prefix in prefixes:
            assert session.get(f"{sandbox.url}{prefix}/").text == prefix


def test_silent_and_garbage_clients_do_not_wedge_the_server(sandbox: Sandbox):
    silent = socket.create_connection(("127.0.0.1", sandbox.port))  # never sends a ClientHello
    garbage = socket.create_connection(("127.0.0.1", sandbox.port))
    garbage.sendall(b"\x00\xffnot tls at all\r\n\r\n")
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    with context.wrap_socket(
        socket.create_connection(("127.0.0.1", sandbox.port)), server_hostname="127.0.0.1"
    ) as tls:
        tls.sendall(b"NONSENSE \x01\x02 HTTP/1.1 extra\r\n\r\n")
        assert b"Error response" in tls.recv(200)  # http.server's 400 page, then close
    with session_for(sandbox) as session:
        assert session.get(f"{sandbox.url}/api/now/table/sys_user").status_code == 200
    silent.close()
    garbage.close()


def test_oversized_payload_is_refused_without_reading_it(sandbox: Sandbox):
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    conn = http.client.HTTPSConnection("127.0.0.1", sandbox.port, context=context, timeout=5)
    conn.putrequest("POST", "/api/now/table/incident")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(20 * 1024 * 1024))
    conn.endheaders()
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    assert response.status == 413
    assert "Exception while reading request" in body
    assert "Rejected large REST payload with content-length = 20971520 bytes" in body


def test_stop_is_idempotent_and_refuses_afterwards(tmp_path: Path):
    sb = Sandbox.start(https=False, state_dir=tmp_path)
    sb.stop()
    sb.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", sb.port), timeout=2).close()


def test_cli_serve_prints_one_json_line_and_stops_on_sigterm(snowkit_home: Path):
    env = {**os.environ, "SNOWKIT_HOME": str(snowkit_home)}
    process = subprocess.Popen(
        [sys.executable, "-m", "snowkit.cli", "sandbox", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        info = json.loads(process.stdout.readline())
        assert {"url", "ca_path", "users", "oauth_client", "api_key"} <= set(info)
        response = requests.get(
            f"{info['url']}/api/now/table/sys_user",
            auth=("admin", info["users"]["admin"]),
            verify=info["ca_path"],
            timeout=10,
        )
        assert response.status_code == 200
        assert (snowkit_home / "sandbox" / "sandbox.sqlite3").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        process.stdout.close()
        process.stderr.close()


def test_keep_alive_survives_a_mounted_app_that_ignores_the_body(sandbox: Sandbox):
    def lazy(environ, start_response):
        start_response("202 Accepted", [("Content-Type", "text/plain")])
        return [b"ignored your body"]

    sandbox.mount("/lazy", lazy)
    with session_for(sandbox) as session:
        first = session.post(f"{sandbox.url}/lazy/x", data=b"x" * 5000)
        assert first.status_code == 202
        assert first.headers["Connection"] == "close"  # unread body: never parsed as a request
        listed = session.get(f"{sandbox.url}/api/now/table/sys_user")
        assert listed.status_code == 200
        assert "close" not in listed.headers.get("Connection", "")  # kept alive


def test_method_override_header(sandbox: Sandbox):
    with session_for(sandbox) as session:
        created = session.post(
            f"{sandbox.url}/api/now/table/incident", json={"short_description": "o"}
        ).json()["result"]
        response = session.post(
            f"{sandbox.url}/api/now/table/incident/{created['sys_id']}",
            json={"short_description": "overridden"},
            headers={"X-http-method-override": "PATCH"},
        )
        assert response.status_code == 200
        assert response.json()["result"]["short_description"] == "overridden"


def test_processes_opening_one_new_database_at_once_all_start(tmp_path: Path) -> None:
    """Two load notebooks on a fresh SNOWKIT_HOME: the second had failed with "duplicate
    column name" while both laid out the same SQLite file (separate connections race as
    separate processes do)."""
    import threading

    from snowkit.sandbox.store import Store

    errors: list[BaseException] = []
    for attempt in range(3):
        path = tmp_path / f"shared-{attempt}.sqlite3"
        barrier = threading.Barrier(4)

        def open_store(path: Path = path, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                Store(path).close()
            except BaseException as exc:  # collected: the assertion names them
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    store = Store(tmp_path / "shared-0.sqlite3")
    try:  # seeded once, not once per opener
        assert len(store.list("sys_user", "user_name=admin", limit=-1)[0]) == 1
    finally:
        store.close()
