"""AdaptiveLimiter (AIMD on concurrency) and RateLimitPacer, with fake clocks."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snowkit.ops.errors import RateLimitError
from snowkit.servicenow import AdaptiveLimiter, RateLimitPacer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(limiter: AdaptiveLimiter, latency: float, throttled: bool = False) -> None:
    assert limiter.acquire(timeout=0)
    limiter.release(latency, throttled=throttled)


def test_grows_by_one_after_a_run_of_successes() -> None:
    limiter = AdaptiveLimiter(initial=2, maximum=4, increase_after=3, clock=Clock())
    for _ in range(3):
        run(limiter, 0.1)
    assert limiter.limit == 3
    for _ in range(30):
        run(limiter, 0.1)
    assert limiter.limit == 4  # bounded by maximum


def test_halves_on_429_once_per_cooldown() -> None:
    clock = Clock()
    limiter = AdaptiveLimiter(initial=16, maximum=16, cooldown_s=1.0, clock=clock)
    run(limiter, 0.1, throttled=True)
    assert limiter.limit == 8
    run(limiter, 0.1, throttled=True)  # same congestion episode: no second cut
    assert limiter.limit == 8
    clock.now += 1.5
    run(limiter, 0.1, throttled=True)
    assert limiter.limit == 4


def test_a_throttle_noted_mid_flight_cuts_at_once_and_respects_the_cooldown() -> None:
    clock = Clock()
    limiter = AdaptiveLimiter(initial=8, maximum=8, cooldown_s=1.0, clock=clock)
    assert limiter.acquire(timeout=0)
    limiter.note_throttled(20.0)  # the request is still being retried
    assert limiter.limit == 4
    limiter.release(0.1, throttled=True)  # same episode: no second cut
    assert limiter.limit == 4


def test_a_request_waiting_to_be_retried_lends_its_slot_and_takes_one_again() -> None:
    limiter = AdaptiveLimiter(initial=1, minimum=1, maximum=1, clock=Clock())
    assert limiter.acquire(timeout=0)
    assert limiter.step_out()  # its Retry-After sleep: nothing of it is at the instance
    assert limiter.in_flight == 0

    def another_request() -> None:  # goes meanwhile, from another thread
        assert limiter.acquire(timeout=0)
        limiter.release(0.05)

    other = threading.Thread(target=another_request)
    other.start()
    other.join()
    limiter.step_in()  # the retry takes a slot again before it goes out
    assert limiter.in_flight == 1
    assert not limiter.acquire(timeout=0)  # the one slot is the retry's again
    limiter.release(0.05)
    assert limiter.in_flight == 0


def test_only_a_thread_that_holds_a_slot_can_lend_it() -> None:
    limiter = AdaptiveLimiter(initial=2, maximum=2, clock=Clock())
    assert limiter.acquire(timeout=0)
    lent: list[bool] = []
    elsewhere = threading.Thread(target=lambda: lent.append(limiter.step_out()))
    elsewhere.start()
    elsewhere.join()
    assert lent == [False] and limiter.in_flight == 1  # e.g. a lookup outside any batch
    limiter.release(0.05)
    assert not limiter.step_out()  # given back already: nothing left to lend
    assert limiter.in_flight == 0


def test_stepping_back_in_waits_while_the_limit_is_full() -> None:
    limiter = AdaptiveLimiter(initial=1, minimum=1, maximum=1, clock=Clock())
    lent, taken, back = threading.Event(), threading.Event(), threading.Event()

    def retried_request() -> None:
        assert limiter.acquire(timeout=0)
        assert limiter.step_out()
        lent.set()
        assert taken.wait(5)
        limiter.step_in()  # the slot is someone else's now: wait for it
        back.set()
        limiter.release(0.05)

    retrying = threading.Thread(target=retried_request)
    retrying.start()
    assert lent.wait(5)
    assert limiter.acquire(timeout=0)  # another request takes the lent slot
    taken.set()
    assert not back.wait(0.05)  # full: the retry waits
    limiter.release(0.05)
    assert back.wait(5)
    retrying.join()
    assert limiter.in_flight == 0


def test_a_thread_whose_slot_is_lent_frees_no_one_elses_slot() -> None:
    """A step back in cut short (an interrupt while waiting) leaves the thread without a
    slot: its release must not free the one another request holds."""
    limiter = AdaptiveLimiter(initial=1, minimum=1, maximum=1, clock=Clock())
    assert limiter.acquire(timeout=0)
    assert limiter.step_out()
    other = threading.Thread(target=lambda: limiter.acquire(timeout=0))
    other.start()
    other.join()
    limiter.release(0.05)  # this thread's slot was lent and never taken back
    assert limiter.in_flight == 1  # the other request's slot still counts


def test_a_slot_may_be_given_back_by_another_thread() -> None:
    """A dispatcher acquires, a worker releases when the request is done: no slot leaks."""
    limiter = AdaptiveLimiter(initial=1, minimum=1, maximum=1, clock=Clock())
    assert limiter.acquire(timeout=0)
    worker = threading.Thread(target=lambda: limiter.release(0.05))
    worker.start()
    worker.join()
    assert limiter.in_flight == 0 and limiter.acquire(timeout=0)


def in_thread(call: Callable[[], object]) -> object:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    thread.join()
    return out[0]


def test_after_a_slot_was_handed_to_another_thread_none_is_lent() -> None:
    """The taker's count still says it holds the slot it handed over: lending that would let
    a second request run under a limit of one (and stepping back in would then leak one)."""
    limiter = AdaptiveLimiter(initial=1, minimum=1, maximum=1, clock=Clock())
    assert limiter.acquire(timeout=0)
    in_thread(lambda: limiter.release(0.05))  # a worker finishes the dispatcher's request
    assert in_thread(lambda: limiter.acquire(timeout=0))  # another request has the slot
    assert not limiter.step_out()  # the dispatcher backs off a request that holds none
    assert limiter.in_flight == 1
    assert not in_thread(lambda: limiter.acquire(timeout=0))  # still one at a time
    in_thread(lambda: limiter.release(0.05))
    assert in_thread(lambda: limiter.acquire(timeout=0))  # and nothing leaked


def test_time_lent_out_is_not_taken_for_a_slow_instance() -> None:
    """One 429 cut the limit twice: once when it came, once more when the retry, 20 s of
    Retry-After later, was released with those 20 s counted as its latency."""
    clock = Clock()
    limiter = AdaptiveLimiter(initial=8, maximum=8, latency_factor=3.0, clock=clock)
    run(limiter, 0.05)
    assert limiter.acquire(timeout=0)
    started = clock.now
    limiter.note_throttled(20.0)  # the 429: 8 -> 4
    assert limiter.limit == 4
    assert limiter.step_out()
    clock.now += 20.0  # the Retry-After, slot lent
    limiter.step_in()
    clock.now += 0.05  # the retry itself
    limiter.release(clock.now - started)
    assert limiter.limit == 4 and limiter.cuts == 1
    run(limiter, 0.5)  # a slow request of its own (10x the baseline) is still one
    assert limiter.limit == 2 and limiter.cuts == 2


def test_a_thread_holding_two_slots_lends_neither() -> None:
    limiter = AdaptiveLimiter(initial=2, maximum=2, clock=Clock())
    assert limiter.acquire(timeout=0) and limiter.acquire(timeout=0)
    assert not limiter.step_out()  # stepping back in could wait on its own other slot
    assert limiter.in_flight == 2


def test_cuts_when_latency_rises_well_above_baseline() -> None:
    clock = Clock()
    limiter = AdaptiveLimiter(initial=8, latency_factor=3.0, increase_after=100, clock=clock)
    for _ in range(5):
        run(limiter, 0.050)
    assert limiter.baseline_s == pytest.approx(0.050)
    run(limiter, 0.120)  # 2.4x: fine
    assert limiter.limit == 8
    run(limiter, 0.200)  # 4x: the queue is filling up
    assert limiter.limit == 4


def test_never_below_minimum() -> None:
    clock = Clock()
    limiter = AdaptiveLimiter(initial=4, minimum=2, cooldown_s=0, clock=clock)
    for _ in range(10):
        run(limiter, 0.1, throttled=True)
    assert limiter.limit == 2


def test_acquire_blocks_at_the_limit_and_release_wakes_a_waiter() -> None:
    limiter = AdaptiveLimiter(initial=1, maximum=1)
    assert limiter.acquire(timeout=0)
    assert not limiter.acquire(timeout=0.01)
    got = threading.Event()
    waiter = threading.Thread(target=lambda: limiter.acquire() and got.set())
    waiter.start()
    limiter.release(0.01)
    waiter.join(5)
    assert got.is_set()
    limiter.release(0.01)


def test_context_manager_measures_latency_and_sees_rate_limits() -> None:
    clock = Clock()
    limiter = AdaptiveLimiter(initial=4, clock=clock)
    with limiter:
        clock.now += 0.25
    assert limiter.baseline_s == pytest.approx(0.25)
    with pytest.raises(RateLimitError), limiter:
        raise RateLimitError("429", details={"retry_after": 3})
    assert limiter.limit == 2
    assert limiter.in_flight == 0


def test_thread_safety_under_contention() -> None:
    limiter = AdaptiveLimiter(initial=3, maximum=3, increase_after=10**9)
    peak = 0
    inside = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal peak, inside
        for _ in range(200):
            with limiter:
                with lock:
                    inside += 1
                    peak = max(peak, inside)
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= peak <= 3
    assert limiter.in_flight == 0


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.tuples(st.floats(0.001, 5.0), st.booleans(), st.floats(0, 3)), max_size=60),
    initial=st.integers(1, 20),
)
def test_limit_always_within_bounds(events: list[tuple[float, bool, float]], initial: int) -> None:
    clock = Clock()
    limiter = AdaptiveLimiter(initial=initial, minimum=2, maximum=12, increase_after=2, clock=clock)
    for latency, throttled, advance in events:
        clock.now += advance
        limiter.acquire(timeout=0) or None
        limiter.release(latency, throttled)
        assert 2 <= limiter.limit <= 12


def test_pacer_is_silent_until_the_hourly_budget_runs_low() -> None:
    now = [1_000_000.0]
    pacer = RateLimitPacer(reserve=0.1, max_delay_s=120, wall_clock=lambda: now[0])
    headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Reset": str(int(now[0] + 600))}
    for _ in range(85):
        pacer.observe(headers)
    assert pacer.remaining == 15
    assert pacer.delay() == 0.0
    for _ in range(6):
        pacer.observe(headers)
    assert pacer.remaining == 9
    assert pacer.delay() == pytest.approx(600 / 9)  # spread the rest over the window
    pacer.observe({**headers, "X-RateLimit-Reset": str(int(now[0] + 4200))})  # new window
    assert pacer.remaining == 99 and pacer.delay() == 0.0


def test_pacer_prefers_a_server_remaining_header_and_caps_the_delay() -> None:
    pacer = RateLimitPacer(max_delay_s=5.0, wall_clock=lambda: 0.0)
    pacer.observe(
        {"X-RateLimit-Limit": "1000", "X-RateLimit-Reset": "3600", "X-RateLimit-Remaining": "2"}
    )
    assert pacer.remaining == 2
    assert pacer.delay() == 5.0
    assert RateLimitPacer().delay() == 0.0  # no rule, no pacing


def test_paced_callers_get_successive_slots() -> None:
    pacer = RateLimitPacer(max_delay_s=1000, wall_clock=lambda: 0.0)
    pacer.observe({"X-RateLimit-Limit": "100", "X-RateLimit-Reset": "600"})
    for _ in range(97):
        pacer.observe({"X-RateLimit-Limit": "100", "X-RateLimit-Reset": "600"})
    assert pacer.remaining == 2
    assert [pacer.delay(), pacer.delay(), pacer.delay()] == [300.0, 600.0, 900.0]


def test_an_abandoned_slot_is_free_again_and_teaches_nothing() -> None:
    limiter = AdaptiveLimiter(initial=1, maximum=4, increase_after=1, clock=Clock())
    assert limiter.acquire(timeout=0)
    assert not limiter.acquire(timeout=0)  # the one slot is taken
    limiter.abandon()
    assert limiter.in_flight == 0 and limiter.limit == 1  # not counted as a success
    assert limiter.acquire(timeout=0)
