"""Remove secrets from anything snowkit writes: logs, error contexts, audit, metrics, reports.

Two complementary rules: values under secret-like keys are masked whatever they contain, and
every secret value the process has read (registered in :data:`secrets`) is masked wherever it
appears inside a string (messages, URLs, formatted tracebacks). structlog deliberately ships no
redactor, and the generic scrubbers on PyPI only know key rules, so this is ours. It runs on
every log line and every audited record, so it is built to be cheap: one precompiled regex,
rebuilt only on register(); a short-circuit when nothing is registered; strings shorter than
the shortest registered secret are never searched; keys already known not to name a secret
skip the key rule (:data:`_PLAIN_KEYS`).

For JSON writers that hash what they write (the audit trail) there is a cheaper question than
"redact this": :func:`plain_json` (is it JSON-native, with nothing under a secret-like key?)
plus :meth:`SecretRegistry.occurs_in_json` (does any registered value occur in its encoded
bytes?). When both say no, :func:`redact` would return an equal copy, so the writer may encode
the original as is and skip the copy, the per-string regex and the decode/encode round trip.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterable
from typing import Any

import orjson
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

#: Parts of a key name that make it a secret's wherever they stand (``is_secret_key``).
_SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "token", "apikey", "api_key",
                 "private_key", "authorization", "cookie")  # fmt: skip

# Shorter values are not registered: masking "a" or "12" everywhere would destroy logs.
_MIN_SECRET_LENGTH = 4


_KEY_CACHE: dict[str, bool] = {}
_KEY_CACHE_LIMIT = 4096
#: String keys known *not* to name a secret (bounded like the cache). A dict whose keys are
#: all in here needs no per-key check: one C-level ``issuperset`` replaces a call per key.
_PLAIN_KEYS: set[str] = set()


def is_secret_key(key: object) -> bool:
    """True when a mapping key names a secret (``Authorization``, ``client-secret``, ...)."""
    if not isinstance(key, str):
        return False
    cached = _KEY_CACHE.get(key)
    if cached is None:
        name = key.lower().replace("-", "_")
        cached = name in SECRET_KEYS or (
            # db_password, x_api_key, wifi_passphrase...: not only the exact names; a
            # ``*_ref`` names a 1Password reference, which is no secret
            not name.endswith("_ref") and any(word in name for word in _SECRET_WORDS)
        )
        if len(_KEY_CACHE) < _KEY_CACHE_LIMIT:  # log keys repeat; bound it anyway
            _KEY_CACHE[key] = cached
            if not cached and type(key) is str:
                _PLAIN_KEYS.add(key)
    return cached


def _spellings(raw: str) -> list[str]:
    """A secret as it may appear in text: itself, and escaped as Python's repr and JSON write
    it (a key with a trailing newline reached an error message as ``b'...\\n'``, which
    matched no registered value), without its surrounding whitespace."""
    forms = {raw, raw.strip()}
    forms.add(repr(raw)[1:-1])
    forms.add(json.dumps(raw)[1:-1])
    forms.add(raw.encode("unicode_escape").decode("ascii"))
    return [f for f in forms if len(f) >= _MIN_SECRET_LENGTH]


class SecretRegistry:
    """The set of secret values this process knows; masks them inside strings.

    Thread-safe: registration takes a lock and swaps in a new compiled pattern; readers use
    whatever pattern is current without locking.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        # (pattern, length of the shortest value, each value as it appears inside an orjson
        # string or None when one is not encodable), swapped as one so a reader never pairs a
        # new pattern with an old minimum length.
        self._state: tuple[re.Pattern[str] | None, int, tuple[bytes, ...] | None] = (None, 0, ())

    @property
    def _pattern(self) -> re.Pattern[str] | None:
        return self._state[0]

    def register(self, value: str | SecretStr | None) -> None:
        """Remember a secret value so every later sink masks it."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not raw or len(raw) < _MIN_SECRET_LENGTH:
            return
        self._add(_spellings(raw))

    def register_basic(self, user: str, password: str | SecretStr) -> None:
        """Register a password and the base64 ``user:password`` form Basic auth puts on the wire."""
        raw = password.get_secret_value() if isinstance(password, SecretStr) else password
        if not raw:
            return
        encoded = base64.b64encode(f"{user}:{raw}".encode()).decode("ascii")
        candidates = [encoded]
        if len(raw) >= _MIN_SECRET_LENGTH:
            candidates.extend(_spellings(raw))
        self._add(candidates)

    def _add(self, values: Iterable[str]) -> None:
        with self._lock:
            new = set(values) - self._values
            if not new:
                return
            self._values |= new
            # Longest first so a secret containing another is masked whole.
            ordered = sorted(self._values, key=len, reverse=True)
            pattern = re.compile("|".join(re.escape(v) for v in ordered))
            self._state = (pattern, len(ordered[-1]), _json_needles(ordered))

    def clear(self) -> None:
        """Forget every value (tests only)."""
        with self._lock:
            self._values.clear()
            self._state = (None, 0, ())

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and value in self._values

    def mask(self, text: str) -> str:
        """Replace every registered value inside ``text`` with ``***``."""
        pattern, min_length, _ = self._state
        if pattern is None or not text or len(text) < min_length:
            return text
        return pattern.sub(MASK, text)

    def occurs_in_json(self, data: bytes) -> bool:
        """Whether a registered value may occur inside a string of the orjson document ``data``.

        Never a false "no": JSON escapes character by character, so a string containing a
        secret encodes to bytes containing the secret's encoding. A "yes" may be false (a match
        across a key, or a non-redacted field); callers then take the full :func:`redact` path.
        """
        needles = self._state[2]
        if needles is None:
            return True
        for needle in needles:  # noqa: SIM110 - no generator per call: this runs per record
            if needle in data:
                return True
        return False

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
    pattern, min_length, _ = reg._state
    return _redact(obj, pattern, min_length)


def redact_text(text: str, registry: SecretRegistry | None = None) -> str:
    """Mask registered secret values inside one string."""
    return (registry if registry is not None else secrets).mask(text)


def _json_needles(values: Iterable[str]) -> tuple[bytes, ...] | None:
    """Each value's bytes inside an orjson string (None when one cannot be encoded)."""
    try:
        return tuple(orjson.dumps(v)[1:-1] for v in values)
    except (TypeError, orjson.JSONEncodeError):  # e.g. a lone surrogate
        return None


_SCALARS = frozenset({int, float, bool, type(None)})
_JSON_SCALARS = frozenset({str, int, bool, type(None)})
_PLAIN_KEYS_LIMIT = _KEY_CACHE_LIMIT


def plain_json(obj: Any) -> bool:
    """True when ``obj`` is JSON-native and carries no value under a secret-like key.

    JSON-native: exactly ``dict`` (with ``str`` keys), ``list``, ``str``, ``int``, ``bool``,
    ``None`` and finite ``float``, so ``orjson.loads(orjson.dumps(obj)) == obj`` with the same
    types. Such an object only needs the registered-value check to be known redacted
    (:meth:`SecretRegistry.occurs_in_json` on its encoding). Anything else (tuples, subclasses,
    datetimes, ``SecretStr``, NaN, int keys) is False: take the :func:`redact` path.
    """
    kind = type(obj)
    if kind is dict:
        if not _PLAIN_KEYS.issuperset(obj):
            for key, value in obj.items():
                if type(key) is not str:
                    return False
                if is_secret_key(key):
                    if value is not None:
                        return False
                elif len(_PLAIN_KEYS) < _PLAIN_KEYS_LIMIT:
                    _PLAIN_KEYS.add(key)
        values: Iterable[Any] = obj.values()
    elif kind is list:
        values = obj
    elif kind in _JSON_SCALARS:
        return True
    elif kind is float:
        return obj - obj == 0.0  # False for inf and nan
    else:
        return False
    for value in values:
        kind = type(value)
        if kind in _JSON_SCALARS:
            continue
        if kind is float:
            if value - value != 0.0:
                return False
        elif not plain_json(value):
            return False
    return True


def _redact(obj: Any, pattern: re.Pattern[str] | None, min_length: int = 0) -> Any:
    kind = type(obj)
    if kind is str:
        return pattern.sub(MASK, obj) if pattern is not None and len(obj) >= min_length else obj
    if kind in _SCALARS:
        return obj
    if isinstance(obj, str):
        return pattern.sub(MASK, obj) if pattern is not None and obj else obj
    if isinstance(obj, dict):
        if _PLAIN_KEYS.issuperset(obj):  # no key names a secret: only the values matter
            masked = {
                k: (v if type(v) in _SCALARS else _redact(v, pattern, min_length))
                for k, v in obj.items()
            }
        else:
            masked = {
                k: (MASK if v is not None and is_secret_key(k) else _redact(v, pattern, min_length))
                for k, v in obj.items()
            }
        return _mask_keys(masked, pattern) if pattern is not None else masked
    if isinstance(obj, list):
        return [_redact(v, pattern, min_length) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_redact(v, pattern, min_length) for v in obj)
    if isinstance(obj, SecretStr):
        return MASK
    if isinstance(obj, bytes) and pattern is not None:
        try:
            text = obj.decode("utf-8")
        except UnicodeDecodeError:
            return obj
        masked = pattern.sub(MASK, text)
        return masked.encode("utf-8") if masked != text else obj
    if pattern is not None and obj is not None:
        # any other object (an exception, a path, a URL) is written as its text: mask that
        text = str(obj)
        masked = pattern.sub(MASK, text)
        if masked != text:
            return masked
    return obj


def _mask_keys(obj: dict[Any, Any], pattern: re.Pattern[str]) -> dict[Any, Any]:
    """``obj`` with registered secrets masked in its keys too (a token used as a dict key, e.g.
    a cache keyed by credential). One scan over all keys decides; two keys that mask alike
    stay apart (``***#2``), so no value is dropped."""
    keys = [k for k in obj if isinstance(k, str)]
    if not keys or pattern.search("\x00".join(keys)) is None:
        return obj
    result: dict[Any, Any] = {}
    for key, value in obj.items():
        if isinstance(key, str):
            key = base = pattern.sub(MASK, key)
            n = 1
            while key in result:
                n += 1
                key = f"{base}#{n}"
        result[key] = value
    return result


__all__ = [
    "MASK",
    "SECRET_KEYS",
    "SecretRegistry",
    "is_secret_key",
    "plain_json",
    "redact",
    "redact_text",
    "secrets",
]
