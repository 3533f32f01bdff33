"""Fault injection for the embedded instance: the failures a real ServiceNow instance produces.

The resilience layer (retry, breaker, outbox, ambiguous-write handling) can only be tested if
the server misbehaves on demand and reproducibly. A profile is plain data (a JSON object, see
docs/sandbox.md); a :class:`FaultInjector` turns it into per-request decisions driven by a
seeded RNG and an injectable clock and sleep, so a test can replay the same failure sequence.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

RATE_LIMIT_RULE_SYS_ID = "5b1c5f1a1b2e3d40a1b2c3d4e5f60718"
ERROR_STATUSES = (500, 502, 503)


@dataclass(frozen=True)
class RateLimitRule:
    """``requests`` allowed per user in each fixed ``window_seconds`` window."""

    requests: int
    window_seconds: float = 3600.0


@dataclass(frozen=True)
class OutageWindow:
    """Connections are refused from ``after_seconds`` for ``duration_seconds``."""

    after_seconds: float
    duration_seconds: float


@dataclass(frozen=True)
class FaultProfile:
    """What the instance should do wrong. Every field is optional; the default is healthy."""

    seed: int | None = None
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    max_concurrency: int | None = None
    queue_timeout_ms: float = 500.0
    error_rate: float = 0.0
    reset_rate: float = 0.0
    ambiguous_write_rate: float = 0.0
    batch_unserviced_rate: float = 0.0
    rate_limit: RateLimitRule | None = None
    hibernating: bool = False
    missing_tables: tuple[str, ...] = ()
    outage: OutageWindow | None = None

    @classmethod
    def load(cls, source: FaultProfile | Mapping[str, Any] | str | Path | None) -> FaultProfile:
        """Build a profile from a profile, a mapping, a JSON file path, or ``None`` (no faults)."""
        if source is None:
            return cls()
        if isinstance(source, FaultProfile):
            return source
        if isinstance(source, str | Path):
            path = Path(source)
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise ValueError(f"fault profile file not found: {path}") from None
            except json.JSONDecodeError as exc:
                raise ValueError(f"fault profile {path} is not valid JSON: {exc}") from None
            return cls.from_dict(data)
        if isinstance(source, Mapping):
            return cls.from_dict(source)
        raise TypeError(f"a fault profile must be a dict or a JSON file path, not {type(source)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultProfile:
        """Validate a profile mapping; unknown keys and out-of-range values raise ``ValueError``."""
        if not isinstance(data, Mapping):
            raise ValueError("a fault profile must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown fault profile keys {unknown}; allowed keys: {sorted(known)} "
                "(see docs/sandbox.md)"
            )
        kwargs: dict[str, Any] = dict(data)
        for name in ("error_rate", "reset_rate", "ambiguous_write_rate", "batch_unserviced_rate"):
            value = float(kwargs.get(name, 0.0))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
            kwargs[name] = value
        for name in ("latency_ms", "latency_jitter_ms", "queue_timeout_ms"):
            if name in kwargs:
                kwargs[name] = float(kwargs[name])
                if kwargs[name] < 0:
                    raise ValueError(f"{name} must not be negative")
        if kwargs.get("max_concurrency") is not None:
            kwargs["max_concurrency"] = int(kwargs["max_concurrency"])
            if kwargs["max_concurrency"] < 1:
                raise ValueError("max_concurrency must be at least 1")
        if kwargs.get("rate_limit") is not None:
            rule = kwargs["rate_limit"]
            try:
                kwargs["rate_limit"] = RateLimitRule(
                    requests=int(rule["requests"]),
                    window_seconds=float(rule.get("window_seconds", 3600.0)),
                )
            except (KeyError, TypeError, AttributeError):
                raise ValueError(
                    'rate_limit must look like {"requests": 100, "window_seconds": 3600}'
                ) from None
            if kwargs["rate_limit"].requests < 0 or kwargs["rate_limit"].window_seconds <= 0:
                raise ValueError("rate_limit needs requests >= 0 and window_seconds > 0")
        if kwargs.get("outage") is not None:
            window = kwargs["outage"]
            try:
                kwargs["outage"] = OutageWindow(
                    after_seconds=float(window.get("after_seconds", 0.0)),
                    duration_seconds=float(window["duration_seconds"]),
                )
            except (KeyError, TypeError, AttributeError):
                raise ValueError(
                    'outage must look like {"after_seconds": 5, "duration_seconds": 10}'
                ) from None
        if "missing_tables" in kwargs:
            tables = kwargs["missing_tables"]
            if isinstance(tables, str) or not all(isinstance(t, str) for t in tables):
                raise ValueError("missing_tables must be a list of table names")
            kwargs["missing_tables"] = tuple(tables)
        if "hibernating" in kwargs:
            kwargs["hibernating"] = bool(kwargs["hibernating"])
        if kwargs.get("seed") is not None:
            kwargs["seed"] = int(kwargs["seed"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The profile as JSON-ready data (the format :meth:`from_dict` reads)."""
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, RateLimitRule | OutageWindow):
                value = dict(value.__dict__)
            elif isinstance(value, tuple):
                value = list(value)
            data[f.name] = value
        return data


@dataclass
class RateDecision:
    """Outcome of a rate-limit check: headers to send, and whether the request may proceed."""

    allowed: bool
    limit: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    retry_after: int = 0


class FaultInjector:
    """Per-request fault decisions for the current :class:`FaultProfile`; thread-safe."""

    def __init__(
        self,
        profile: FaultProfile | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.set_profile(profile or FaultProfile())

    @property
    def profile(self) -> FaultProfile:
        return self._profile

    def set_profile(self, profile: FaultProfile) -> None:
        """Switch profiles; resets the RNG, the rate-limit counts and the outage start time."""
        with self._lock:
            self._profile = profile
            self._rng = random.Random(profile.seed)
            self._counts: dict[tuple[str, int], int] = {}
            self._set_at = self._clock()
            self._semaphore = (
                threading.BoundedSemaphore(profile.max_concurrency)
                if profile.max_concurrency
                else None
            )

    # -- decisions ---------------------------------------------------------------------------

    def _roll(self, rate: float) -> bool:
        if rate <= 0.0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def in_outage(self) -> bool:
        """True while the profile's outage window is open (measured from when it was set)."""
        window = self._profile.outage
        if window is None:
            return False
        elapsed = self._clock() - self._set_at
        return window.after_seconds <= elapsed < window.after_seconds + window.duration_seconds

    def delay(self) -> None:
        """Sleep the configured latency plus a uniform jitter."""
        profile = self._profile
        if profile.latency_ms <= 0 and profile.latency_jitter_ms <= 0:
            return
        jitter = 0.0
        if profile.latency_jitter_ms > 0:
            with self._lock:
                jitter = self._rng.uniform(0.0, profile.latency_jitter_ms)
        self._sleep((profile.latency_ms + jitter) / 1000.0)

    def should_reset(self) -> bool:
        return self._roll(self._profile.reset_rate)

    def error_status(self) -> int | None:
        """500, 502 or 503 for the share of requests ``error_rate`` asks for, else ``None``."""
        if not self._roll(self._profile.error_rate):
            return None
        with self._lock:
            return self._rng.choice(ERROR_STATUSES)

    def should_drop_after_commit(self) -> bool:
        return self._roll(self._profile.ambiguous_write_rate)

    def should_leave_unserviced(self) -> bool:
        rate = self._profile.batch_unserviced_rate  # asked once per batch item: stay cheap
        return rate > 0.0 and self._roll(rate)

    def check_rate_limit(self, user: str) -> RateDecision:
        """Count one request for ``user`` in the current fixed window of the rule, if any."""
        rule = self._profile.rate_limit
        if rule is None:
            return RateDecision(allowed=True)
        now = self._clock()
        window_index = int(now // rule.window_seconds)
        reset_at = (window_index + 1) * rule.window_seconds
        with self._lock:
            if len(self._counts) > 10_000:  # forget past windows on a long-running sandbox
                self._counts = {k: v for k, v in self._counts.items() if k[1] == window_index}
            key = (user, window_index)
            count = self._counts.get(key, 0) + 1
            if count <= rule.requests:
                self._counts[key] = count
            allowed = count <= rule.requests
        headers = [
            ("X-RateLimit-Limit", str(rule.requests)),
            ("X-RateLimit-Reset", str(math.ceil(reset_at))),
            ("X-RateLimit-Rule", RATE_LIMIT_RULE_SYS_ID),
        ]
        retry_after = max(1, math.ceil(reset_at - now))
        return RateDecision(allowed, rule.requests, headers, retry_after)

    def acquire_slot(self) -> threading.BoundedSemaphore | bool | None:
        """Take a concurrency slot: the semaphore to release, None (no cap) or False (full)."""
        semaphore = self._semaphore
        if semaphore is None:
            return None
        if semaphore.acquire(timeout=self._profile.queue_timeout_ms / 1000.0):
            return semaphore
        return False
