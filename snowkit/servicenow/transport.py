"""Session construction: URL policy, TLS trust, proxies, pooling and timeouts, decided once.

The recurring complaints about ServiceNow clients (reference §12) are transport ones: requests
that hang without a timeout, ``REQUESTS_CA_BUNDLE`` ignored, proxies that do not reach the
token endpoint, and stacked retry layers. So:

- https is required; plain http only on loopback (the embedded instance, test servers).
  A bare instance name (``dev12345``) means ``https://dev12345.service-now.com``.
- TLS trust is resolved explicitly: ``verify=False`` / a CA path / ``ca_bundle`` /
  ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` / system trust, in that order. The session does
  not read the environment on its own (``trust_env=False``), so ``.netrc`` cannot silently
  override our authentication and the choice is visible in one place.
- Proxies: explicit ones, else the environment's (``HTTPS_PROXY``, ``NO_PROXY`` honoured);
  never for loopback.
- One ``HTTPAdapter`` with a pool as large as the worker count and ``max_retries=0``: our retry
  manager is the only retry layer (stacking urllib3's ``Retry`` multiplies attempts).
- No cookies: the session's jar accepts none (:data:`NO_COOKIES`). A real instance binds
  the requests of one session cookie (``JSESSIONID``) to one server-side session and runs
  them one at a time; with the jar shared by every worker thread, the whole pool queued on
  one session and the instance answered the overflow with HTTP 202 and no content. Every
  request authenticates on its own (API key, token or basic), so a session buys nothing.
- Connect and read timeouts always set, growing ×1.5 per retry attempt up to a cap, so a slow
  instance gets more patience on the retry instead of the same doomed deadline.
"""

from __future__ import annotations

import http.cookiejar
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from snowkit import __version__
from snowkit.loopback import is_loopback

#: Methods whose repeat has the same effect as one call: safe to resend after a lost answer.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
USER_AGENT = f"snowkit/{__version__} (+resilient ServiceNow client)"
#: Accepts and returns no cookie at all (no domain is allowed): see the module docstring.
NO_COOKIES = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])


class InstanceURLError(ValueError):
    """The instance URL is malformed or uses plain http off loopback."""


def display_url(text: str) -> str:
    """``text`` as it may appear in a message: no query, fragment or ``user:password@``."""
    text = text.split("?", 1)[0].split("#", 1)[0]
    scheme, sep, rest = text.rpartition("://") if "://" in text else ("", "", text)
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


def normalize_instance_url(url: str) -> str:
    """Validate and normalise to ``scheme://host[:port]`` (no trailing slash, no path).

    Error messages never echo a query string or a ``user:password@`` part of the input.
    """
    text = (url or "").strip()
    if not text:
        raise InstanceURLError(
            "no ServiceNow instance URL: set SERVICENOW_INSTANCE "
            "(e.g. https://dev12345.service-now.com) or use the embedded instance ('embedded')"
        )
    shown = display_url(text)
    if "@" in text.split("?", 1)[0].split("#", 1)[0]:
        raise InstanceURLError(
            f"instance URL {shown!r} carries a user name or password (user:password@): remove "
            "it and give the credentials as SERVICENOW_USERNAME/SERVICENOW_PASSWORD, "
            "SERVICENOW_API_KEY or OAuth settings instead (the URL appears in logs and reports)"
        )
    if "://" not in text:
        if "." in text or ":" in text or "/" in text:
            raise InstanceURLError(f"instance URL {shown!r} has no scheme: write https://{shown}")
        text = f"https://{text}.service-now.com"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if not parts.hostname:
        raise InstanceURLError(f"instance URL {shown!r} has no host name")
    if scheme == "http":
        if not is_loopback(parts.hostname):
            raise InstanceURLError(
                f"refusing plain http for {parts.hostname}: credentials would travel unencrypted. "
                "Use https:// (plain http is only allowed on 127.0.0.1/localhost/::1)"
            )
    elif scheme != "https":
        raise InstanceURLError(f"instance URL {shown!r}: scheme must be https")
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def resolve_verify(
    verify: bool | str | None = None,
    ca_bundle: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] = os.environ,
) -> bool | str:
    """What ``requests`` gets as ``verify``: explicit > ca_bundle > env bundles > system trust."""
    if verify is False:
        return False
    if isinstance(verify, str | os.PathLike) and not isinstance(verify, bool):
        return _existing(str(verify), "verify")
    if ca_bundle:
        return _existing(str(ca_bundle), "ca_bundle")
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        if env.get(name):
            return _existing(env[name], name)
    return True


def _existing(path: str, origin: str) -> str:
    if not os.path.exists(path):
        raise InstanceURLError(
            f"CA bundle from {origin} not found: {path}. Point it at the PEM file of the CA that "
            "signed the instance's certificate"
        )
    return path


def resolve_proxies(instance_url: str, proxies: Mapping[str, str] | None = None) -> dict[str, str]:
    """Proxies for ``instance_url``: explicit, else the environment's; none on loopback."""
    if is_loopback(urlsplit(instance_url).hostname or ""):
        return {}
    if proxies:
        return dict(proxies)
    return dict(requests.utils.get_environ_proxies(instance_url))


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Connect/read timeouts per attempt: ``base × growth^(attempt-1)``, capped."""

    connect: float = 10.0
    read: float = 60.0
    growth: float = 1.5
    cap: float = 180.0

    def for_attempt(self, attempt: int, left: float | None = None) -> tuple[float, float]:
        """The timeouts of attempt ``attempt``, none longer than ``left`` (the seconds left of
        the operation's deadline): a growing timeout must not carry an attempt past it."""
        factor = self.growth ** max(0, attempt - 1)
        limit = self.cap if left is None else min(self.cap, left)
        return (min(self.connect * factor, limit), min(self.read * factor, limit))


def build_session(
    instance_url: str,
    *,
    workers: int = 8,
    verify: bool | str = True,
    proxies: Mapping[str, str] | None = None,
) -> requests.Session:
    """A pooled session sized to ``workers`` with no transport-level retries."""
    session = requests.Session()
    session.trust_env = False
    session.cookies.set_policy(NO_COOKIES)
    session.verify = verify
    session.proxies = dict(proxies or {})
    session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})
    size = max(1, int(workers))
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=size, max_retries=0, pool_block=False)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
