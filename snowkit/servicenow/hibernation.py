"""Recognise a hibernating ServiceNow developer instance.

A sleeping personal developer instance (PDI) does not answer API calls with an error: it
answers **200 with an HTML page** ("Instance Hibernating page"). Clients that only look at the
status code then fail later with a confusing JSON decode error. We check the content type and
the page text once, on responses that should have been JSON, and (when asked) keep re-checking
for a bounded time instead of failing at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests

from snowkit.ops.breaker import CircuitOpenError
from snowkit.ops.errors import HibernatingInstanceError

T = TypeVar("T")


GUIDANCE = (
    "the instance is hibernating (a developer instance sleeps after inactivity). Wake it: sign "
    "in at https://developer.servicenow.com, open 'My instance' and choose 'Wake up instance'; "
    "it takes a few minutes. Then run again (or set a hibernation wait to keep checking)."
)


def is_unexpected_html(response: requests.Response) -> bool:
    """An HTML page where the REST API promised JSON (a proxy, an SSO or maintenance page)."""
    content_type = response.headers.get("Content-Type", "").lower()
    return "html" in content_type


@dataclass(frozen=True, slots=True)
class HibernationWait:
    """How long to keep re-checking a sleeping instance before giving up (0: don't wait).

    Waking a developer instance takes minutes, so an unattended load may prefer waiting to
    failing. While we wait, the circuit breaker opens on the repeated hibernation answers; a
    :class:`CircuitOpenError` *after* a hibernation answer is therefore part of the same wait,
    while one before any is somebody else's outage and is raised at once.
    """

    wait_seconds: float = 0.0
    poll_seconds: float = 30.0

    def run(
        self,
        request: Callable[[], T],
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        on_wait: Callable[[float], None],
    ) -> T:
        """``request()``, re-run every ``poll_seconds`` while the instance sleeps, bounded."""
        deadline = clock() + self.wait_seconds
        sleeping: HibernatingInstanceError | None = None
        while True:
            try:
                return request()
            except (HibernatingInstanceError, CircuitOpenError) as exc:
                if isinstance(exc, HibernatingInstanceError):
                    sleeping = exc
                elif sleeping is None:
                    raise  # the breaker opened for another reason: not ours to wait out
                if clock() + self.poll_seconds > deadline:
                    raise sleeping from None
                on_wait(self.poll_seconds)
                sleep(self.poll_seconds)
