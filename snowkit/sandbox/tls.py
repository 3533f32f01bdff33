"""TLS material for the embedded instance.

pysnc refuses ``http://`` instance URLs, so the sandbox must speak HTTPS on 127.0.0.1. We mint a
private CA with ``trustme`` on first start and keep it (and a server certificate for 127.0.0.1,
::1 and localhost) under the sandbox state directory, so a client that trusted ``ca.pem`` once
keeps trusting it after a restart.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import trustme

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CHAIN = "server.pem"
SERVER_KEY = "server.key"
SERVER_NAMES = ("127.0.0.1", "::1", "localhost")

_lock = threading.Lock()


@dataclass(frozen=True)
class TLSMaterial:
    """Paths of the persisted CA and server certificate."""

    ca_path: Path
    cert_chain_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        """A server-side context (TLS 1.2+) loaded with the persisted certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_chain_path, self.key_path)
        return context


def ensure_tls_material(directory: Path) -> TLSMaterial:
    """Load the CA and server certificate from ``directory``, creating them on first use."""
    directory.mkdir(parents=True, exist_ok=True)
    material = TLSMaterial(
        ca_path=directory / CA_CERT,
        cert_chain_path=directory / SERVER_CHAIN,
        key_path=directory / SERVER_KEY,
    )
    with _lock:
        ca_key_path = directory / CA_KEY
        if not (material.ca_path.exists() and ca_key_path.exists()):
            ca = trustme.CA(organization_name="snowkit sandbox")
            _write_private(ca_key_path, ca.private_key_pem.bytes())
            ca.cert_pem.write_to_path(str(material.ca_path))
            _issue_server_cert(ca, material)
        elif not (material.cert_chain_path.exists() and material.key_path.exists()):
            ca = trustme.CA.from_pem(material.ca_path.read_bytes(), ca_key_path.read_bytes())
            _issue_server_cert(ca, material)
    return material


def _issue_server_cert(ca: trustme.CA, material: TLSMaterial) -> None:
    leaf = ca.issue_cert(*SERVER_NAMES)
    _write_private(material.key_path, leaf.private_key_pem.bytes())
    material.cert_chain_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by the owner only."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)
