"""The credential fallback chain: which auth method is in use, and what to do after a 401.

``credentials.auth_methods()`` gives the configured methods in order (API key → OAuth → basic).
A method is *prepared* once (``method.apply`` on a scratch session, so an OAuth token fetch or a
header it sets happens here, not per request) into an immutable :class:`AuthState`. On a 401
the pipeline asks :meth:`AuthChain.advance` for the next state: the same method refreshed once
(a new OAuth token), else the next method that prepares. States are swapped under a lock, so
concurrent requests never see half an update, and a thread whose 401 arrives after another
thread already moved on simply takes the newer state.

Nothing here logs or repr()s a secret: states carry headers and auth objects with
``repr=False``, and only method *names* reach logs and errors.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from snowkit.ops.errors import AuthenticationError, ErrorHandler
from snowkit.ops.logging import StructuredLogger

JSON_CONTENT = {"Content-Type": "application/json"}
#: Characters no HTTP header value may hold (http.client refuses them with the value in its
#: message, which would carry the secret into errors and logs).
_FORBIDDEN_IN_HEADERS = frozenset("\r\n\0")
INVALID_VALUE = "invalid_header_value"


def check_header_values(method: str, headers: Mapping[str, str]) -> None:
    """Refuse a credential that cannot travel in a header (a pasted key with its newline):
    an :class:`AuthenticationError` naming the method and header, never the value."""
    for header, value in headers.items():
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if _FORBIDDEN_IN_HEADERS.intersection(str(value)):
            raise AuthenticationError(
                f"the {method} credential contains a line break or NUL character, which cannot "
                f"be sent in the {header} header; nothing was sent",
                operation="prepare_auth",
                details={"auth_method": method, "header": header, "reason": INVALID_VALUE},
                guidance=(
                    f"Remove the stray character from the value configured for {method} (it "
                    "usually comes from pasting, or from a file read with its trailing "
                    "newline), then run again."
                ),
            )


def is_invalid_value(exc: BaseException) -> bool:
    """``exc`` is :func:`check_header_values`' refusal (the user fixes the value; no fallback)."""
    return (
        isinstance(exc, AuthenticationError) and exc.context.details.get("reason") == INVALID_VALUE
    )


class _CheckedAuth(requests.auth.AuthBase):
    """An auth method whose headers are checked as it sets them on each request (a method
    like OAuth only knows its value then)."""

    def __init__(self, inner: Any, name: str) -> None:
        self._inner = inner
        self._name = name

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        before = dict(request.headers)
        request = self._inner(request)
        changed = {k: v for k, v in request.headers.items() if before.get(k) != v}
        check_header_values(self._name, changed)
        return request

    def __repr__(self) -> str:
        return f"_CheckedAuth({self._name!r})"


class AuthMethodLike(Protocol):
    """What the chain needs of an auth method (``snowkit.credentials.AuthMethod`` has it).

    ``apply`` attaches the method to a session (``session.auth`` and/or headers); an optional
    ``refresh() -> bool`` fetches new credentials after a 401 (OAuth).
    """

    name: str

    def apply(self, session: requests.Session, instance_url: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class AuthState:
    """One prepared auth method: what to attach to each request (never logged).

    ``headers`` and ``json_headers`` (the same plus ``Content-Type``) are built once here so
    the hot path only picks one; treat them as read-only.
    """

    index: int
    name: str
    auth: Any = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)  # may hold x-sn-apikey / Authorization
    json_headers: Mapping[str, str] = field(repr=False)
    session: requests.Session | None = field(repr=False)


def method_name(method: Any, fallback: object = None) -> str:
    """A method's display name (``api_key``, ``oauth``, ``basic``): never its value."""
    return str(getattr(method, "name", fallback if fallback is not None else type(method).__name__))


class AuthChain:
    """The ordered auth methods and the one currently in use (thread-safe)."""

    def __init__(
        self,
        methods: Sequence[AuthMethodLike],
        *,
        instance_url: str,
        verify: bool | str,
        proxies: Mapping[str, str],
        logger: StructuredLogger,
    ) -> None:
        self._methods = list(methods)
        self._instance_url = instance_url
        self._verify = verify
        self._proxies = dict(proxies)
        self._logger = logger
        self._lock = threading.Lock()
        self._confirmed = False
        self._state: AuthState | None = self._first_usable(0)

    @property
    def current(self) -> AuthState | None:
        """The state to send with now (None: no credentials configured)."""
        return self._state

    @property
    def names(self) -> list[str]:
        return [method_name(m, m) for m in self._methods]

    def can_refresh(self, state: AuthState) -> bool:
        return callable(getattr(self._methods[state.index], "refresh", None))

    def confirm(self, state: AuthState) -> None:
        """Log the first success of the method in use (once per method switch)."""
        if not self._confirmed:
            self._confirmed = True
            self._logger.log_credential_access(state.name, True)

    def advance(self, failed: AuthState, *, refresh: bool) -> AuthState | None:
        """The state to re-send with after ``failed`` got a 401; None when all are used up."""
        with self._lock:
            current = self._state
            if current is not None and current is not failed and current.index >= failed.index:
                return current  # another thread already moved on
            new: AuthState | None = None
            if refresh:  # e.g. an expired OAuth token: fetch a new one once, same method
                try:
                    if self._methods[failed.index].refresh():
                        new = self._prepare(failed.index)
                except Exception as exc:
                    self._logger.log_credential_access(failed.name, False, type(exc).__name__)
                    new = None
            if new is None:
                new = self._first_usable(failed.index + 1)
            if new is None:
                return None
            if new.index == failed.index:
                self._logger.event("auth_refreshed", method=new.name)
            else:
                self._logger.event("auth_fallback", level="WARNING", old=failed.name, new=new.name)
            self._state = new
            self._confirmed = False
            return new

    def exhausted(self, operation: str, error_handler: ErrorHandler) -> AuthenticationError:
        """The error for "every method was rejected", naming them and what to set."""
        names = self.names or ["none"]
        ctx = error_handler.handle_authentication_error(
            names[0] if len(names) == 1 else "any configured method",
            {
                "reason": "ServiceNow rejected every configured credential "
                f"(tried: {', '.join(names)})",
                "http_status": 401,
                "tried_methods": names,
                "operation": operation,
            },
        )
        self._logger.log_error(ctx)
        return AuthenticationError(ctx)

    def close(self) -> None:
        state = self._state
        if state is not None and state.session is not None:
            state.session.close()

    def __repr__(self) -> str:
        return f"AuthChain({self._methods!r}, current={self._state!r})"

    # -- preparing a method -----------------------------------------------------------------
    def _prepare(self, index: int) -> AuthState:
        method = self._methods[index]
        scratch = requests.Session()
        scratch.trust_env = False
        scratch.verify = self._verify
        scratch.proxies = dict(self._proxies)
        scratch.headers.clear()
        method.apply(scratch, self._instance_url)
        headers = dict(scratch.headers)
        name = method_name(method)
        check_header_values(name, headers)
        auth = scratch.auth
        if isinstance(auth, tuple):  # requests' shorthand for Basic: wrap the callable form
            auth = requests.auth.HTTPBasicAuth(*auth)
        return AuthState(
            index=index,
            name=name,
            auth=_CheckedAuth(auth, name) if auth is not None else None,
            headers=headers,
            json_headers={**JSON_CONTENT, **headers},
            session=scratch,
        )

    def _first_usable(self, start: int) -> AuthState | None:
        for index in range(start, len(self._methods)):
            try:
                return self._prepare(index)
            except Exception as exc:  # e.g. an OAuth token fetch that failed
                if is_invalid_value(exc):
                    raise  # a value to fix, not a method to skip quietly
                name = method_name(self._methods[index], index)
                self._logger.log_credential_access(name, False, type(exc).__name__)
        return None
