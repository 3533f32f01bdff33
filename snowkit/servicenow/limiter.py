"""Client-side throttling: an AIMD concurrency limit and an hourly rate-limit pacer.

No library fits a thread-pool loader talking to one ServiceNow instance: ``AdaptiveLimiter``
is TCP-style additive-increase / multiplicative-decrease on the number of requests in flight,
driven by what the instance tells us (429) and by latency (the semaphore queue filling up shows
as rising latency before it shows as 429). ``RateLimitPacer`` turns ServiceNow's per-hour rule
headers into a pace so a long load spreads its last requests over the window instead of
running into a 429 wall (ServiceNow sends only ``X-RateLimit-Limit``/``-Reset``; we keep the
count ourselves, and use ``X-RateLimit-Remaining`` when a server adds it).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType


class AdaptiveLimiter:
    """AIMD concurrency limit bounded to ``[minimum, maximum]``.

    - ``release(latency_s, throttled=True)`` (a 429) or a latency above
      ``latency_factor`` × the baseline halves the limit, at most once per ``cooldown_s``
      (the requests already in flight when we cut carry the same signal).
    - ``increase_after`` consecutive good releases add one.
    - The baseline is the lowest latency seen recently: a slowly decaying minimum, so it follows
      a network that gets permanently slower without forgetting what "fast" looks like.

    Use ``acquire()``/``release(...)`` or ``with limiter:`` (which measures the latency and
    treats an exception with ``retry_after`` or a 429 ``status_code`` as a throttle signal).
    """

    def __init__(
        self,
        initial: int = 4,
        minimum: int = 1,
        maximum: int = 16,
        *,
        increase_after: int = 8,
        decrease_factor: float = 0.5,
        latency_factor: float = 3.0,
        cooldown_s: float = 1.0,
        baseline_decay: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError("need 1 <= minimum <= maximum")
        if not 0 < decrease_factor < 1:
            raise ValueError("decrease_factor must be in (0, 1)")
        self.minimum = minimum
        self.maximum = maximum
        self._limit = float(min(max(initial, minimum), maximum))
        self.increase_after = increase_after
        self.decrease_factor = decrease_factor
        self.latency_factor = latency_factor
        self.cooldown_s = cooldown_s
        self.baseline_decay = baseline_decay
        self._clock = clock
        self._cond = threading.Condition()
        self._in_flight = 0
        self._held_total = 0  #: slots the threads' own counts say they hold
        self._successes = 0
        self._baseline: float | None = None
        self._last_cut: float | None = None
        self._local = threading.local()
        self.cuts = 0
        self.increases = 0

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def baseline_s(self) -> float | None:
        return self._baseline

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait for a free slot; False if ``timeout`` (seconds) passed first."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._in_flight < int(self._limit), timeout)
            if ok:
                self._in_flight += 1
                self._held_total += 1
                self._local.held = self._held() + 1
            return ok

    def release(self, latency_s: float | None = None, throttled: bool = False) -> None:
        """Give the slot back and feed the outcome into the limit. ``latency_s`` may include
        time the slot was lent out (:meth:`step_out`): that time is taken off, so waiting out
        a ``Retry-After`` does not read as a slow instance (one 429 had cut the limit twice)."""
        with self._cond:
            away, self._local.away_s = getattr(self._local, "away_s", 0.0), 0.0
            if latency_s is not None:
                latency_s = max(0.0, latency_s - away)
            self._give_back()
            if throttled or self._too_slow(latency_s):
                self._cut()
            else:
                self._observe(latency_s)
                self._successes += 1
                if self._successes >= self.increase_after and self._limit < self.maximum:
                    self._limit = min(self.maximum, self._limit + 1)
                    self._successes = 0
                    self.increases += 1
            self._cond.notify_all()

    def abandon(self) -> None:
        """Give a slot back unused (nothing was sent): no outcome to learn from."""
        with self._cond:
            self._give_back()
            self._cond.notify_all()

    def _give_back(self) -> None:
        """A slot is free (under the lock); any thread may give back one another took. A
        thread whose slot is still lent (:meth:`step_out`, the step back in cut short) gave
        it back then: its release frees nobody else's."""
        if getattr(self._local, "lent", False):
            self._local.lent = False
            return
        if self._held() > 0:
            self._local.held -= 1
            self._held_total -= 1
        # else another thread took it: that thread still counts it as held, so from now on
        # the counts cannot tell who holds what and no slot is lent (see ``step_out``)
        self._in_flight = max(0, self._in_flight - 1)

    def step_out(self) -> bool:
        """The calling thread's request waits to be retried (a back-off, a ``Retry-After``):
        lend its slot out meanwhile, since nothing of it is at the instance. Sleeping retries
        that kept their slots stalled every other request for a second after a cut. False
        (nothing lent) unless this thread holds exactly one slot (with more, stepping back in
        could wait on its own other slot), or once any slot was given back by a thread that
        did not take it: the taker's count then says it holds a slot it handed over, and
        lending that would let one request too many run."""
        with self._cond:
            if self._held() != 1 or self._held_total != self._in_flight:
                return False
            self._local.held, self._local.lent = 0, True
            self._held_total -= 1
            self._in_flight = max(0, self._in_flight - 1)
            self._local.away_from = self._clock()
            self._cond.notify_all()
            return True

    def step_in(self) -> None:
        """After :meth:`step_out`: take a slot again before the retry goes out (waiting, like
        any request, while the limit is full)."""
        self.acquire()
        self._local.lent = False
        away_from = getattr(self._local, "away_from", None)
        if away_from is not None:
            self._local.away_from = None
            self._local.away_s = getattr(self._local, "away_s", 0.0) + self._clock() - away_from

    def _held(self) -> int:
        return getattr(self._local, "held", 0)

    def note_throttled(self, retry_after_s: float | None = None) -> None:
        """A 429 arrived (possibly for a request still being retried): cut now."""
        with self._cond:
            self._cut()
            self._cond.notify_all()

    def _too_slow(self, latency_s: float | None) -> bool:
        return (
            latency_s is not None
            and self._baseline is not None
            and latency_s > self._baseline * self.latency_factor
        )

    def _observe(self, latency_s: float | None) -> None:
        if latency_s is None or latency_s < 0:
            return
        if self._baseline is None or latency_s < self._baseline:
            self._baseline = latency_s
        else:  # drift up slowly towards what we see now
            self._baseline += (latency_s - self._baseline) * self.baseline_decay

    def _cut(self) -> None:
        self._successes = 0
        now = self._clock()
        if self._last_cut is not None and now - self._last_cut < self.cooldown_s:
            return
        self._last_cut = now
        new = max(float(self.minimum), self._limit * self.decrease_factor)
        if int(new) < int(self._limit):
            self.cuts += 1
        self._limit = new

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> AdaptiveLimiter:
        self.acquire()
        starts = getattr(self._local, "starts", None)
        if starts is None:
            starts = self._local.starts = []
        starts.append(self._clock())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        started = self._local.starts.pop()
        throttled = exc is not None and (
            getattr(exc, "retry_after", None) is not None
            or getattr(exc, "status_code", None) == 429
            or getattr(getattr(exc, "context", None), "http_status", None) == 429
        )
        self.release(self._clock() - started, throttled=throttled)


class RateLimitPacer:
    """Spreads requests over a ServiceNow rate-limit window once the budget runs low.

    Fed with each response's headers; ``delay()`` says how long to wait before the next
    request: zero while more than ``reserve`` of the hourly budget is left, then
    ``time_to_reset / remaining`` so the remaining requests last until the window resets.
    """

    def __init__(
        self,
        *,
        reserve: float = 0.1,
        max_delay_s: float = 30.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.reserve = reserve
        self.max_delay_s = max_delay_s
        self._now = wall_clock
        self._lock = threading.Lock()
        self._limit: int | None = None
        self._reset_at: float | None = None
        self._used = 0
        self._server_remaining: int | None = None
        self._next_slot: float | None = None

    def observe(self, headers: Mapping[str, str]) -> None:
        limit = _int(headers.get("X-RateLimit-Limit"))
        reset = _int(headers.get("X-RateLimit-Reset"))
        remaining = _int(headers.get("X-RateLimit-Remaining"))
        with self._lock:
            if limit is None:
                return
            if reset is not None and reset != self._reset_at:
                self._reset_at, self._used = float(reset), 0
            self._limit = limit
            self._used += 1
            self._server_remaining = remaining

    @property
    def remaining(self) -> int | None:
        with self._lock:
            return self._remaining_locked()

    def _remaining_locked(self) -> int | None:
        if self._limit is None:
            return None
        if self._server_remaining is not None:
            return self._server_remaining
        return max(0, self._limit - self._used)

    def delay(self) -> float:
        """Seconds the caller should wait before its request (0.0 while the budget is ample).

        Each paced caller reserves the next slot, so concurrent workers are spaced out one
        interval apart instead of all waiting the same interval and firing together.
        """
        with self._lock:
            remaining = self._remaining_locked()
            if remaining is None or self._reset_at is None or self._limit is None:
                return 0.0
            now = self._now()
            to_reset = self._reset_at - now
            if to_reset <= 0 or remaining > self._limit * self.reserve:
                self._next_slot = None
                return 0.0
            interval = to_reset / max(remaining, 1)
            self._next_slot = max(now, self._next_slot or now) + interval
            return min(self.max_delay_s, self._next_slot - now)


def _int(value: str | None) -> int | None:
    """A header's whole number, or None for anything else (``1e400``, ``inf``, ``nan``, text):
    these headers only tune pacing, so a strange one is ignored, never an error."""
    if value is None:
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return int(number) if math.isfinite(number) else None
