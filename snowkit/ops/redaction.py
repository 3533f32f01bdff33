"""Remove secrets from anything snowkit writes: logs, error contexts, audit, metrics, reports.

Two complementary rules: values under secret-like keys are masked whatever they contain, and
every secret value the process has read (registered in :data:`secrets`) is masked wherever it
appears inside a string (messages, URLs, formatted tracebacks). structlog deliberately ships no
redactor, and the generic scrubbers on PyPI only know key rules, so this is ours. It runs on
every log line, so it is built to be cheap: one precompiled regex, rebuilt only on register(),
and a short-circuit when nothing is registered.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr

MASK = "***"

#: Keys whose values are always masked (compared case-insensitively, ``-`` and ``_`` alike).
SECRET_KEYS: frozenset[str] = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "x_sn_apikey",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "client_secret",
        "refresh_token",
        "access_token",
        "private_key",
        "session",
        "audit_key",
        "oauth_token",
    }
)

# Shorter values are not registered: masking "a" or "12" everywhere would destroy logs.
_MIN_SECRET_LENGTH = 4


_KEY_CACHE: dict[str, bool] = {}
_KEY_CACHE_LIMIT = 4096


def is_secret_key(key: object) -> bool:
    """True when a mapping key names a secret (``Authorization``, ``client-secret``, ...)."""
    if not isinstance(key, str):
        return False
    cached = _KEY_CACHE.get(key)
    if cached is None:
        cached = key.lower().replace("-", "_") in SECRET_KEYS
        if len(_KEY_CACHE) < _KEY_CACHE_LIMIT:  # log keys repeat; bound it anyway
            _KEY_CACHE[key] = cached
    return cached


class SecretRegistry:
    """The set of secret values this process knows; masks them inside strings.

    Thread-safe: registration takes a lock and swaps in a new compiled pattern; readers use
    whatever pattern is current without locking.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def register(self, value: str | SecretStr | None) -> None:
        """Remember a secret value so every later sink masks it."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not raw or len(raw) < _MIN_SECRET_LENGTH:
            return
        self._add([raw])

    def register_basic(self, user: str, password: str | SecretStr) -> None:
        """Register a password and the base64 ``user:password`` form Basic auth puts on the wire."""
        raw = password.get_secret_value() if isinstance(password, SecretStr) else password
        if not raw:
            return
        encoded = base64.b64encode(f"{user}:{raw}".encode()).decode("ascii")
        candidates = [encoded]
        if len(raw) >= _MIN_SECRET_LENGTH:
            candidates.append(raw)
        self._add(candidates)

    def _add(self, values: Iterable[str]) -> None:
        with self._lock:
            new = set(values) - self._values
            if not new:
                return
            self._values |= new
            # Longest first so a secret containing another is masked whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def clear(self) -> None:
        """Forget every value (tests only)."""
        with self._lock:
            self._values.clear()
            self._pattern = None

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and value in self._values

    def mask(self, text: str) -> str:
        """Replace every registered value inside ``text`` with ``***``."""
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def __repr__(self) -> str:  # never show the values
        return f"SecretRegistry({len(self._values)} values)"


#: The process-wide registry every credential source registers with.
secrets = SecretRegistry()


def redact(obj: Any, registry: SecretRegistry | None = None) -> Any:
    """Return a copy of ``obj`` with secrets masked as ``"***"``.

    Recurses through dicts, lists and tuples; masks values under secret-like keys and registered
    secret values inside strings; turns ``SecretStr`` into the mask. Other objects pass through
    unchanged (the renderer decides how to print them).
    """
    reg = registry if registry is not None else secrets
    return _redact(obj, reg._pattern)


def redact_text(text: str, registry: SecretRegistry | None = None) -> str:
    """Mask registered secret values inside one string."""
    return (registry if registry is not None else secrets).mask(text)


_SCALARS = frozenset({int, float, bool, type(None)})


def _redact(obj: Any, pattern: re.Pattern[str] | None) -> Any:
    kind = type(obj)
    if kind is str:
        return pattern.sub(MASK, obj) if pattern is not None and obj else obj
    if kind in _SCALARS:
        return obj
    if isinstance(obj, str):
        return pattern.sub(MASK, obj) if pattern is not None and obj else obj
    if isinstance(obj, dict):
        return {
            k: (MASK if v is not None and is_secret_key(k) else _redact(v, pattern))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_redact(v, pattern) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_redact(v, pattern) for v in obj)
    if isinstance(obj, SecretStr):
        return MASK
    if isinstance(obj, bytes) and pattern is not None:
        try:
            text = obj.decode("utf-8")
        except UnicodeDecodeError:
            return obj
        masked = pattern.sub(MASK, text)
        return masked.encode("utf-8") if masked != text else obj
    return obj


__all__ = [
    "MASK",
    "SECRET_KEYS",
    "SecretRegistry",
    "is_secret_key",
    "redact",
    "redact_text",
    "secrets",
]
