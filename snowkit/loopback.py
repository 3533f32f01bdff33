"""Is a host this machine? One answer for the URL policy of the client and the configuration.

Plain http is allowed only on loopback (the embedded instance, test servers); the client
enforces it at its first request and the configuration when its file is read. Kept apart from
``snowkit.servicenow`` so the configuration can ask without importing the client.
"""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
