"""Credentials: 1Password CLI first, environment variables as fallback, auth methods for requests.

The Python wrappers around ``op`` are tiny and unmaintained and the official SDK is pre-1.0, so
this is a thin subprocess wrapper of our own: ``op read --no-newline op://...`` with a timeout
and a closed stdin, the secret only ever on the child's stdout, never on a command line. Each
secret is read once per process, held as ``SecretStr`` and registered with the redaction
registry the moment it is read; every read is logged as ``credential_access`` (method and
source, never the value). The environment names are the ones users of the original loader
already set (``SERVICENOW_INSTANCE``, ``SERVICENOW_API_KEY``, ...).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from pydantic import SecretStr

from snowkit.ops.errors import AuthenticationError, CredentialUnavailableError, ErrorHandler
from snowkit.ops.logging import StructuredLogger
from snowkit.ops.redaction import redact_text, secrets

Runner = Callable[..., subprocess.CompletedProcess]

#: credential name → environment variable users already set.
ENV_NAMES: dict[str, str] = {
    "api_key": "SERVICENOW_API_KEY",
    "oauth_token": "SERVICENOW_OAUTH_TOKEN",
    "username": "SERVICENOW_USERNAME",
    "password": "SERVICENOW_PASSWORD",
    "client_id": "SERVICENOW_CLIENT_ID",
    "client_secret": "SERVICENOW_CLIENT_SECRET",
    "audit_key": "SNOWKIT_AUDIT_KEY",
}
#: Names that are identifiers, not secrets (still may come from 1Password).
NOT_SECRET = frozenset({"username", "client_id"})
INSTANCE_ENV = "SERVICENOW_INSTANCE"
REF_SUFFIX = "_OP_REF"
AUTH_ORDER = ("api_key", "oauth", "basic")
OP_INSTALL_HINT = "https://developer.1password.com/docs/cli/get-started/"

# 1Password service accounts are rate limited (1 000-10 000 reads an hour): a reference is
# read at most once per process, whichever CredentialManager asks.
_OP_CACHE: dict[str, SecretStr] = {}
_OP_CACHE_LOCK = threading.Lock()


def clear_op_cache() -> None:
    """Forget values read from 1Password (tests; or after rotating a secret)."""
    with _OP_CACHE_LOCK:
        _OP_CACHE.clear()


def normalize_instance(value: str) -> str:
    """``acme`` → ``https://acme.service-now.com``; URLs lose a trailing slash."""
    value = value.strip().rstrip("/")
    if "://" in value:
        return value
    return f"https://{value if '.' in value else value + '.service-now.com'}"


# -- auth methods ------------------------------------------------------------------------------
class AuthMethod(requests.auth.AuthBase):
    """A way to authenticate requests; ``apply`` attaches it to a session."""

    name: str = "auth"

    def apply(self, session: requests.Session, instance_url: str | None = None) -> None:
        session.auth = self

    def refresh(self) -> bool:
        """Try to obtain fresh credentials after a 401; True if something changed."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ApiKeyAuth(AuthMethod):
    """ServiceNow API key in the ``x-sn-apikey`` header."""

    name = "api_key"

    def __init__(self, api_key: SecretStr | str) -> None:
        self._key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        secrets.register(self._key)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["x-sn-apikey"] = self._key.get_secret_value()
        return request


class BasicAuth(AuthMethod):
    """HTTP Basic; the password and its base64 header form are registered for redaction."""

    name = "basic"

    def __init__(self, username: str, password: SecretStr | str) -> None:
        self.username = username
        self._password = password if isinstance(password, SecretStr) else SecretStr(password)
        secrets.register_basic(username, self._password)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        raw = f"{self.username}:{self._password.get_secret_value()}".encode()
        request.headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        return request


class OAuthAuth(AuthMethod):
    """Bearer token: given, or fetched from ``<instance>/oauth_token.do`` and kept fresh.

    With client id/secret (and optionally a user name/password for the password grant) the
    token is fetched on first use, refreshed ``refresh_margin_seconds`` before it expires, and
    refreshed once when the instance answers 401.
    """

    name = "oauth"

    def __init__(
        self,
        token: SecretStr | str | None = None,
        *,
        token_url: str | None = None,
        client_id: str | None = None,
        client_secret: SecretStr | str | None = None,
        username: str | None = None,
        password: SecretStr | str | None = None,
        verify: bool | str = True,
        timeout: tuple[float, float] = (5.0, 30.0),
        clock: Callable[[], float] = time.monotonic,
        refresh_margin_seconds: float = 60.0,
        post: Callable[..., requests.Response] | None = None,
    ) -> None:
        self._token = _secret(token)
        self._refresh_token: SecretStr | None = None
        self._expires_at: float | None = None
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = _secret(client_secret)
        self.username = username
        self._password = _secret(password)
        self.verify = verify
        self.timeout = timeout
        self._clock = clock
        self.refresh_margin_seconds = refresh_margin_seconds
        self._post = post or requests.post
        self._lock = threading.Lock()
        for value in (self._token, self._client_secret, self._password):
            secrets.register(value)
        if self._token is None and not self.can_fetch:
            raise ValueError("OAuthAuth needs a token, or a token_url with client id and secret")

    @property
    def can_fetch(self) -> bool:
        return bool(self.token_url and self.client_id and self._client_secret)

    def _grant(self) -> dict[str, str]:
        assert self.client_id and self._client_secret
        data = {
            "client_id": self.client_id,
            "client_secret": self._client_secret.get_secret_value(),
        }
        if self._refresh_token is not None:
            data.update(
                grant_type="refresh_token", refresh_token=self._refresh_token.get_secret_value()
            )
        elif self.username and self._password is not None:
            data.update(
                grant_type="password",
                username=self.username,
                password=self._password.get_secret_value(),
            )
        else:
            data["grant_type"] = "client_credentials"
        return data

    def _fetch(self) -> None:  # lock held
        assert self.token_url
        try:
            response = self._post(
                self.token_url,
                data=self._grant(),
                headers={"Accept": "application/json"},
                timeout=self.timeout,
                verify=self.verify,
                allow_redirects=False,  # a 307/308 would re-post the client secret elsewhere
            )
        except requests.RequestException as exc:
            raise AuthenticationError(
                f"Could not reach {self.token_url} for an OAuth token: {type(exc).__name__}",
                operation="oauth_token",
                details={"auth_method": "oauth"},
            ) from None
        if response.status_code != 200 and self._refresh_token is not None:
            self._refresh_token = None  # the refresh token expired: fall back to the grant
            return self._fetch()
        body: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            body = response.json()
        token = body.get("access_token") if isinstance(body, dict) else None
        if response.status_code != 200 or not token:
            context = ErrorHandler(persist=False).handle_authentication_error(
                "oauth",
                {"reason": f"token endpoint answered HTTP {response.status_code}"},
            )
            raise AuthenticationError(context)
        self._token = SecretStr(str(token))
        secrets.register(self._token)
        refresh = body.get("refresh_token")
        self._refresh_token = SecretStr(str(refresh)) if refresh else None
        secrets.register(self._refresh_token)
        expires_in = body.get("expires_in")
        try:
            self._expires_at = self._clock() + float(expires_in) if expires_in else None
        except (TypeError, ValueError):
            self._expires_at = None

    def current_token(self) -> SecretStr:
        """The token to send now, fetching or refreshing it first when needed."""
        with self._lock:
            stale = self._expires_at is not None and (
                self._clock() >= self._expires_at - self.refresh_margin_seconds
            )
            if (self._token is None or stale) and self.can_fetch:
                self._fetch()
            assert self._token is not None
            return self._token

    def refresh(self) -> bool:
        if not self.can_fetch:
            return False
        with self._lock:
            self._fetch()
        return True

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.current_token().get_secret_value()}"
        if self.can_fetch:
            request.register_hook("response", self._retry_on_401)
        return request

    def _retry_on_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        request = response.request
        if response.status_code != 401 or getattr(request, "_snowkit_oauth_retried", False):
            return response
        self.refresh()
        response.content  # noqa: B018 - drain so the connection can be reused
        response.close()
        retry = request.copy()
        retry._snowkit_oauth_retried = True  # type: ignore[attr-defined]
        retry.headers["Authorization"] = f"Bearer {self.current_token().get_secret_value()}"
        again = response.connection.send(retry, **kwargs)
        again.history.append(response)
        again.request = retry
        return again


def _secret(value: SecretStr | str | None) -> SecretStr | None:
    if value is None or isinstance(value, SecretStr):
        return value
    return SecretStr(value)


# -- the manager -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Read:
    value: SecretStr | None
    source: str  # "1password", "environment", "static", "config", "none"


class CredentialManager:
    """Resolves instance URL, secrets and auth methods; each secret at most once per process."""

    def __init__(
        self,
        config: Any = None,
        op_path: str = "op",
        env: Mapping[str, str] = os.environ,
        runner: Runner = subprocess.run,
        *,
        op_timeout_seconds: float | None = None,
        logger: StructuredLogger | None = None,
    ) -> None:
        self._operational = config if hasattr(config, "credentials") else None
        self._creds = config.credentials if self._operational is not None else config
        self.op_path = op_path
        self.env = env
        self.runner = runner
        timeout = getattr(self._creds, "op_timeout_seconds", None)
        self.op_timeout_seconds = op_timeout_seconds or timeout or 15.0
        self.logger = logger or StructuredLogger("snowkit.credentials")
        self._lock = threading.RLock()
        self._cache: dict[str, _Read] = {}
        self._static: dict[str, SecretStr | str] | None = None
        self._static_instance: str | None = None
        self._static_order: tuple[str, ...] = AUTH_ORDER
        self._signed_in: bool | None = None
        self._methods: dict[str | None, list[AuthMethod]] = {}  # per instance authenticated to

    @classmethod
    def static(
        cls,
        basic: tuple[str, str | SecretStr] | None = None,
        api_key: str | SecretStr | None = None,
        oauth: str | SecretStr | None = None,
        instance_url: str | None = None,
        auth_order: tuple[str, ...] = AUTH_ORDER,
    ) -> CredentialManager:
        """Fixed credentials (the embedded instance, tests); no environment, no ``op``."""
        manager = cls(config=None, env={})
        values: dict[str, SecretStr | str] = {}
        if api_key is not None:
            values["api_key"] = _secret(api_key)  # type: ignore[assignment]
        if oauth is not None:
            values["oauth_token"] = _secret(oauth)  # type: ignore[assignment]
        if basic is not None:
            values["username"] = basic[0]
            values["password"] = _secret(basic[1])  # type: ignore[assignment]
            secrets.register_basic(basic[0], values["password"])  # type: ignore[arg-type]
        for value in values.values():
            if isinstance(value, SecretStr):
                secrets.register(value)
        manager._static = values
        manager._static_instance = instance_url
        manager._static_order = auth_order
        return manager

    # -- instance and TLS --------------------------------------------------------------------
    def instance_url(self) -> str | None:
        """The instance URL: configuration, else ``SERVICENOW_INSTANCE``; None = embedded."""
        if self._static is not None:
            return self._static_instance
        configured = getattr(getattr(self._operational, "servicenow", None), "instance", None)
        if configured and configured != "embedded":
            return normalize_instance(configured)
        from_env = self.env.get(INSTANCE_ENV)
        return normalize_instance(from_env) if from_env else None

    def verify_setting(self) -> bool | str:
        """What to pass as requests' ``verify=``: False, a CA bundle path, or True.

        ``servicenow.ca_bundle`` wins, then ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` (a private
        CA), else True (the system store via certifi).
        """
        sn = getattr(self._operational, "servicenow", None)
        if sn is not None and not sn.verify:
            return False
        if sn is not None and sn.ca_bundle:
            return sn.ca_bundle
        return self.env.get("REQUESTS_CA_BUNDLE") or self.env.get("CURL_CA_BUNDLE") or True

    # -- secrets -----------------------------------------------------------------------------
    def _reference(self, name: str) -> str | None:
        env_var = ENV_NAMES[name] + REF_SUFFIX
        ref = self.env.get(env_var)
        if ref:
            return ref
        if name == "audit_key":
            return getattr(self._operational, "audit_key_ref", None)
        return getattr(self._creds, f"{name}_ref", None)

    def _configured(self, name: str) -> bool:
        """Is a value for ``name`` available without reading it?"""
        if self._static is not None:
            return name in self._static
        if name in NOT_SECRET and getattr(self._creds, name, None):
            return True
        return bool(self.env.get(ENV_NAMES[name]) or self._reference(name))

    def get(self, name: str) -> SecretStr | None:
        """The value of credential ``name`` (read once, cached), or None if not configured."""
        with self._lock:
            cached = self._cache.get(name)
            if cached is None:
                cached = self._read(name)
                self._cache[name] = cached
            return cached.value

    def _read(self, name: str) -> _Read:
        if self._static is not None:
            value = self._static.get(name)
            return _Read(_secret(value), "static" if value is not None else "none")
        if name in NOT_SECRET and getattr(self._creds, name, None):
            return _Read(SecretStr(getattr(self._creds, name)), "config")
        ref = self._reference(name)
        env_value = self.env.get(ENV_NAMES[name])
        if ref:
            try:
                value = self.read_op(ref)
            except CredentialUnavailableError:
                self.logger.log_credential_access(name, False, "source=1password")
                if not env_value:
                    raise
            else:
                self._remember(name, value)
                self.logger.log_credential_access(name, True, "source=1password")
                return _Read(value, "1password")
        if env_value:
            # a key pasted with its line break is no key with a line break in it (the header
            # it goes into refuses one); a password is taken exactly as given
            value = SecretStr(env_value if name == "password" else env_value.strip())
            self._remember(name, SecretStr(env_value))
            self._remember(name, value)
            self.logger.log_credential_access(name, True, f"source=environment:{ENV_NAMES[name]}")
            return _Read(value, "environment")
        return _Read(None, "none")

    def _remember(self, name: str, value: SecretStr) -> None:
        if name not in NOT_SECRET:
            secrets.register(value)

    def source_of(self, name: str) -> str:
        """Where ``name`` came from (after it was read): 1password, environment, static, ..."""
        cached = self._cache.get(name)
        return cached.source if cached else "unread"

    # -- 1Password CLI -----------------------------------------------------------------------
    def _op_executable(self) -> str:
        found = shutil.which(self.op_path, path=self.env.get("PATH") or os.environ.get("PATH"))
        if not found:
            raise CredentialUnavailableError(
                f"The 1Password CLI `{self.op_path}` is not installed or not on PATH.",
                operation="op_read",
                details={"source": "1password", "problem": "not_installed"},
                guidance=f"Install it ({OP_INSTALL_HINT}) and sign in, or set the SERVICENOW_* "
                "environment variables instead of the *_OP_REF references.",
            )
        return found

    def _run_op(self, args: list[str]) -> subprocess.CompletedProcess:
        executable = self._op_executable()
        child_env = dict(self.env) if self.env is not os.environ else None
        try:
            return self.runner(
                [executable, *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.op_timeout_seconds,
                check=False,
                env=child_env,
            )
        except subprocess.TimeoutExpired:
            raise CredentialUnavailableError(
                f"The 1Password CLI did not answer `op {args[0]}` within "
                f"{self.op_timeout_seconds:g} s.",
                operation="op_read",
                details={"source": "1password", "problem": "timeout"},
                guidance="Check that 1Password is unlocked (desktop app integration may be "
                "waiting for approval) or that OP_SERVICE_ACCOUNT_TOKEN is valid, then retry.",
            ) from None
        except OSError as exc:
            raise CredentialUnavailableError(
                f"The 1Password CLI could not be started: {type(exc).__name__}.",
                operation="op_read",
                details={"source": "1password", "problem": "not_installed"},
                guidance=f"Reinstall the 1Password CLI ({OP_INSTALL_HINT}).",
            ) from None

    def _whoami(self) -> bool:
        """``op whoami`` succeeds (checked once per manager); raises if ``op`` cannot run."""
        if self._signed_in is None:
            self._signed_in = self._run_op(["whoami"]).returncode == 0
        return self._signed_in

    def op_signed_in(self) -> bool:
        """Is the 1Password CLI installed and signed in? Never raises."""
        try:
            return self._whoami()
        except CredentialUnavailableError:
            return False

    def read_op(self, reference: str) -> SecretStr:
        """``op read --no-newline <reference>``; the value only travels over the child's stdout."""
        with _OP_CACHE_LOCK:
            cached = _OP_CACHE.get(reference)
        if cached is not None:
            return cached
        if not reference.startswith("op://"):
            raise CredentialUnavailableError(
                "A 1Password reference must start with op://.",
                operation="op_read",
                details={"source": "1password", "problem": "bad_reference"},
            )
        if not self._whoami():
            raise CredentialUnavailableError(
                "The 1Password CLI is not signed in (`op whoami` failed).",
                operation="op_read",
                details={"source": "1password", "problem": "not_signed_in"},
                guidance="Run `eval $(op signin)` or set OP_SERVICE_ACCOUNT_TOKEN, then retry; "
                "or set the SERVICENOW_* environment variables instead.",
            )
        result = self._run_op(["read", "--no-newline", reference])
        if result.returncode != 0:
            stderr = (result.stderr or "").strip().splitlines()
            first = redact_text(stderr[0])[:200] if stderr else f"exit status {result.returncode}"
            missing = any(
                w in first.lower() for w in ("not found", "isn't", "no item", "could not")
            )
            raise CredentialUnavailableError(
                f"1Password could not read {reference}: {first}",
                operation="op_read",
                details={
                    "source": "1password",
                    "problem": "not_found" if missing else "op_error",
                    "reference": reference,
                },
                guidance="Check the vault, item and field names in the op:// reference "
                "(`op item get <item> --vault <vault>`), and that this account can see the vault.",
            )
        value = SecretStr(result.stdout)
        secrets.register(value)
        with _OP_CACHE_LOCK:
            _OP_CACHE[reference] = value
        return value

    # -- auth --------------------------------------------------------------------------------
    def _auth_order(self) -> tuple[str, ...]:
        if self._static is not None:
            return self._static_order
        order = getattr(getattr(self._operational, "servicenow", None), "auth_order", None)
        return tuple(order) if order else AUTH_ORDER

    def _method_configured(self, method: str, has: Callable[[str], bool] | None = None) -> bool:
        """``has``: whether a credential is there (default: configured, read or not)."""
        has = has or self._configured
        if method == "api_key":
            return has("api_key")
        if method == "oauth":  # a grant needs an instance too: the client's, or the configured
            return has("oauth_token") or (has("client_id") and has("client_secret"))
        if method == "basic":
            return has("username") and has("password")
        return False

    def _readable(self, name: str, op_usable: bool) -> bool:
        """Configured, and readable now: a value only a 1Password reference holds needs `op`
        installed and signed in (health had said "pass" for credentials it could not read)."""
        if not self._configured(name):
            return False
        if self._static is not None or (name in NOT_SECRET and getattr(self._creds, name, None)):
            return True
        return bool(self.env.get(ENV_NAMES[name])) or op_usable

    def auth_methods(self, instance_url: str | None = None) -> list[AuthMethod]:
        """The configured auth methods in order (api_key → oauth → basic by default).

        ``instance_url``: the instance they authenticate to (the client passes its own). An
        OAuth token is fetched from that instance's ``/oauth_token.do``; the configured
        instance's had been used for a client of another, sending the client secret and the
        password to the wrong host. Without it, the configured instance's.
        """
        instance = instance_url.rstrip("/") if instance_url else self.instance_url()
        with self._lock:
            cached = self._methods.get(instance)
            if cached is not None:
                return list(cached)
            methods: list[AuthMethod] = []
            for method in self._auth_order():
                if not self._method_configured(method):
                    continue
                built = self._build(method, instance)
                if built is not None:
                    methods.append(built)
            self._methods[instance] = methods
            return list(methods)

    def _build(self, method: str, instance: str | None) -> AuthMethod | None:
        if method == "api_key":
            key = self.get("api_key")
            return ApiKeyAuth(key) if key else None
        if method == "basic":
            user, password = self.get("username"), self.get("password")
            if user is None or password is None:
                return None
            return BasicAuth(user.get_secret_value(), password)
        token = self.get("oauth_token") if self._configured("oauth_token") else None
        if token is not None:
            return OAuthAuth(token)
        client_id, client_secret = self.get("client_id"), self.get("client_secret")
        if not (instance and client_id and client_secret):
            return None
        user = self.get("username") if self._configured("username") else None
        password = self.get("password") if self._configured("password") else None
        return OAuthAuth(
            token_url=f"{instance}/oauth_token.do",
            client_id=client_id.get_secret_value(),
            client_secret=client_secret,
            username=user.get_secret_value() if user else None,
            password=password,
            verify=self.verify_setting(),
        )

    def next_auth_method(self, rejected: str) -> AuthMethod | None:
        """The method to fall back to after ``rejected`` was refused (the seed's recovery)."""
        methods = self.auth_methods()
        names = [m.name for m in methods]
        if rejected not in names:
            return methods[0] if methods else None
        index = names.index(rejected) + 1
        return methods[index] if index < len(methods) else None

    def availability(self) -> dict[str, bool]:
        """Which sources and methods are available: booleans only, no value is read."""
        refs = any(self._reference(name) for name in ENV_NAMES) if self._static is None else False
        try:
            op_installed = self._static is None and bool(self._op_executable())
        except CredentialUnavailableError:
            op_installed = False
        result = {
            "instance_configured": self.instance_url() is not None,
            "op_installed": op_installed,
            "op_signed_in": bool(op_installed and refs and self.op_signed_in()),
            "op_references": bool(refs),
        }
        for name in (
            "api_key",
            "oauth_token",
            "username",
            "password",
            "client_id",
            "client_secret",
        ):
            result[f"env_{name}"] = self._static is None and bool(self.env.get(ENV_NAMES[name]))
        op_usable = result["op_signed_in"]
        for method in AUTH_ORDER:
            result[method] = self._method_configured(method, lambda n: self._readable(n, op_usable))
        result["any_auth_method"] = any(result[m] for m in AUTH_ORDER)
        return result

    # -- audit key ---------------------------------------------------------------------------
    def audit_key(self) -> bytes:
        """The audit HMAC key: SNOWKIT_AUDIT_KEY or its op:// reference, else a key file (0600)."""
        if self._static is None and self._configured("audit_key"):
            value = self.get("audit_key")
            if value is not None:
                return value.get_secret_value().encode("utf-8")
        from snowkit.ops.audit_chain import default_key_file, load_audit_key

        key_file = default_key_file()
        if key_file.exists() and stat.S_IMODE(key_file.stat().st_mode) & 0o077:
            os.chmod(key_file, 0o600)  # tighten a key file someone loosened
        key = load_audit_key(key_file, env={})  # the variables were looked at above
        self.logger.log_credential_access("audit_key", True, "source=key_file")
        return key


__all__ = [
    "ENV_NAMES",
    "INSTANCE_ENV",
    "ApiKeyAuth",
    "AuthMethod",
    "BasicAuth",
    "CredentialManager",
    "OAuthAuth",
    "clear_op_cache",
    "normalize_instance",
]
