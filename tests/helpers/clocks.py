"""Fake clocks and sleeps: tests inject these so nothing waits out a real back-off."""

from __future__ import annotations


class FakeClock:
    """A controllable clock; ``sleep`` advances it and records the requested delays."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
