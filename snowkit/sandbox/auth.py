"""Authentication for the embedded instance: basic, OAuth 2.0 bearer tokens and API keys.

A real instance accepts all three; snowkit's credential fallback (API key → OAuth → basic) and
pysnc's OAuth flows can only be exercised against a server that issues, refreshes and expires
tokens the same way. Secrets are compared in constant time and never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

ADMIN = "admin"
READONLY = "readonly"
DEFAULT_TOKEN_LIFETIME_SECONDS = 1800
REFRESH_TOKEN_LIFETIME_SECONDS = 100 * 24 * 3600
TOKEN_ERROR_BODY = {"error_description": "access_denied", "error": "server_error"}


@dataclass(frozen=True)
class Identity:
    """The authenticated caller of one request."""

    user: str
    roles: frozenset[str]

    @property
    def can_write(self) -> bool:
        return READONLY not in self.roles


@dataclass(frozen=True)
class OAuthClient:
    """The OAuth application registered on the sandbox (like an ``oauth_entity`` record)."""

    client_id: str
    client_secret: str = field(repr=False)


@dataclass
class _Token:
    user: str
    expires_at: float


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def default_users(given: Mapping[str, str] | None = None) -> dict[str, str]:
    """``admin`` and ``readonly`` with random passwords, overridden or extended by ``given``."""
    users = {ADMIN: generate_password(), READONLY: generate_password()}
    users.update(given or {})
    return users


def roles_for(user: str) -> frozenset[str]:
    """The ``readonly`` user may only read; every other local user is an admin."""
    return frozenset({READONLY}) if user == READONLY else frozenset({ADMIN})


class AuthService:
    """Checks request credentials and runs the ``/oauth_token.do`` endpoint."""

    def __init__(
        self,
        users: Mapping[str, str],
        oauth_client: OAuthClient,
        api_keys: Mapping[str, str],
        *,
        token_lifetime_seconds: float = DEFAULT_TOKEN_LIFETIME_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._users = dict(users)
        self._client = oauth_client
        self._api_keys = dict(api_keys)  # key -> user name
        self.token_lifetime_seconds = token_lifetime_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._access: dict[str, _Token] = {}
        self._refresh: dict[str, _Token] = {}

    # -- request authentication --------------------------------------------------------------

    def authenticate(self, authorization: str | None, api_key: str | None) -> Identity | None:
        """The caller named by an ``Authorization`` header or an ``x-sn-apikey``, or ``None``."""
        if api_key:
            for key, user in self._api_keys.items():
                if hmac.compare_digest(key.encode(), api_key.encode()):
                    return Identity(user, roles_for(user))
            return None
        if not authorization:
            return None
        scheme, _, credentials = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            pair = _decode_basic(credentials)
            if pair and self._check_password(*pair):
                return Identity(pair[0], roles_for(pair[0]))
            return None
        if scheme == "bearer":
            with self._lock:
                token = self._access.get(credentials.strip())
            if token and token.expires_at > self._clock():
                return Identity(token.user, roles_for(token.user))
        return None

    def _check_password(self, user: str, password: str) -> bool:
        expected = self._users.get(user)
        if expected is None:
            # Compare anyway so unknown users cost the same time as wrong passwords.
            hmac.compare_digest(password.encode(), password.encode())
            return False
        return hmac.compare_digest(expected.encode(), password.encode())

    # -- token endpoint ----------------------------------------------------------------------

    def token_endpoint(self, body: bytes, authorization: str | None) -> tuple[int, dict[str, Any]]:
        """Handle a form-encoded ``POST /oauth_token.do``; returns (status, JSON body)."""
        try:
            form = {
                k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()
            }
        except UnicodeDecodeError:
            return 401, dict(TOKEN_ERROR_BODY)
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            pair = _decode_basic(authorization.split(" ", 1)[1])
            if pair:
                client_id, client_secret = pair
        if not self._check_client(client_id, client_secret):
            return 401, dict(TOKEN_ERROR_BODY)
        grant = form.get("grant_type", "")
        if grant == "password":
            user, password = form.get("username", ""), form.get("password", "")
            if not self._check_password(user, password):
                return 401, dict(TOKEN_ERROR_BODY)
            return 200, self._issue(user, with_refresh=True)
        if grant == "refresh_token":
            presented = form.get("refresh_token", "")
            with self._lock:
                token = self._refresh.get(presented)
            if token is None or token.expires_at <= self._clock():
                return 401, dict(TOKEN_ERROR_BODY)
            issued = self._issue(token.user, with_refresh=False)
            issued["refresh_token"] = presented  # same refresh token inside its lifetime
            return 200, issued
        if grant == "client_credentials":
            return 200, self._issue(ADMIN, with_refresh=False)
        return 401, dict(TOKEN_ERROR_BODY)

    def _check_client(self, client_id: str | None, client_secret: str | None) -> bool:
        if not client_id or client_secret is None:
            return False
        same_id = hmac.compare_digest(client_id.encode(), self._client.client_id.encode())
        same_secret = hmac.compare_digest(
            client_secret.encode(), self._client.client_secret.encode()
        )
        return same_id and same_secret

    def _issue(self, user: str, *, with_refresh: bool) -> dict[str, Any]:
        now = self._clock()
        access = secrets.token_urlsafe(48)
        body: dict[str, Any] = {
            "access_token": access,
            "scope": "useraccount",
            "token_type": "Bearer",
            "expires_in": max(int(self.token_lifetime_seconds) - 1, 0),
        }
        with self._lock:
            self._purge(now)
            self._access[access] = _Token(user, now + self.token_lifetime_seconds)
            if with_refresh:
                refresh = secrets.token_urlsafe(48)
                self._refresh[refresh] = _Token(user, now + REFRESH_TOKEN_LIFETIME_SECONDS)
                body["refresh_token"] = refresh
        return body

    def _purge(self, now: float) -> None:
        """Forget expired tokens so a long-running sandbox does not grow without bound."""
        if len(self._access) > 10_000:
            for key in [k for k, t in self._access.items() if t.expires_at <= now]:
                del self._access[key]


def _decode_basic(credentials: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def new_oauth_client() -> OAuthClient:
    return OAuthClient(client_id=uuid.uuid4().hex, client_secret=secrets.token_urlsafe(24))


def new_api_key() -> str:
    return "now_" + secrets.token_urlsafe(32)
