"""The plan's yes/no questions about the instance, asked as one Batch API request.

Before a full read the plan asks about a dozen cheap questions: is each class table
installed, does ``cmdb_ci`` hold any record, any without a source id, any with one. As one
GET each they outnumber the instance's concurrency slots (8 by default) and take two round
trips; as the sub-requests of one Batch API request they take one round trip and one slot.

When the Batch API answer cannot be used as is (the request failed, an item failed in a
way that is not an answer), :func:`ask_together` returns None and the caller asks them one
by one, with the client's own retries and error messages.

A :class:`Rider` is the same idea for other small reads: a sub-request that goes along in
another round's Batch API request (a rerun's listings), its answer handed to ``take``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from snowkit.servicenow.batch import BatchRequest


@dataclass(frozen=True, slots=True)
class Question:
    """Does ``table`` hold any row matching ``query`` (an encoded query; "" = any row)?"""

    table: str
    query: str = ""


@dataclass(frozen=True, slots=True)
class Rider:
    """A read sent along in another round's Batch API request. ``take`` gets its answer and
    may ignore it (not ok, too long): whoever needs the data then reads it on its own."""

    request: BatchRequest
    take: Callable[[Any], None]


#: The answer for a table the instance does not have (a plugin not installed).
MISSING = None


def table_url(table: str, params: Mapping[str, str]) -> str:
    """A Table API list address for a Batch API sub-request."""
    return f"/api/now/table/{table}?{urlencode(params)}"


def ask_together(
    client: Any, questions: Sequence[Question], riders: Sequence[Rider] = ()
) -> list[bool | None] | None:
    """One answer per question, in order: True/False, or :data:`MISSING` when the table does
    not exist. None when the answers cannot be trusted (ask one by one then). ``riders`` go
    in the same request; each gets its answer whenever the request was answered."""
    if not questions or not callable(getattr(client, "batch", None)):
        return None
    params = {"sysparm_fields": "sys_id", "sysparm_limit": "1"}
    requests = [
        BatchRequest("GET", table_url(q.table, {"sysparm_query": q.query, **params}))
        for q in questions
    ]
    requests += [rider.request for rider in riders]
    try:
        answers = client.batch(requests)
    except Exception:  # asked one by one next: their errors are the ones worth showing
        return None
    for rider, answer in zip(riders, answers[len(questions) :], strict=True):
        rider.take(answer)
    answers = answers[: len(questions)]
    out: list[bool | None] = []
    for answer in answers:
        rows = answer.result if answer.ok else None
        if isinstance(rows, list):
            # the count too: a real instance cuts the page before its ACLs, so the one row
            # asked for may be hidden while others match (an answer "none" skipped adoption)
            out.append(bool(rows) or bool(answer.total))
        elif _invalid_table(answer):
            out.append(MISSING)
        else:
            return None
    return out


def _invalid_table(answer: Any) -> bool:
    """The instance answered that the table does not exist (HTTP 400 "Invalid table", as the
    client classifies it)."""
    if not answer.serviced or answer.status_code != 400:
        return False
    return "invalid table" in (answer.error_message or "").lower()


def any_row(client: Any, table: str, query: str = "") -> bool:
    """One cheap request: does ``table`` hold any row matching ``query``? Asked as a count,
    which ACLs hiding the first row do not turn into "no" (a one-row page would, and paging
    past hidden rows one at a time is unbounded); a row read when the instance sends no
    count."""
    count = getattr(client, "count", None)
    if callable(count):
        try:
            return count(table, query) > 0
        except Exception as exc:
            details = getattr(getattr(exc, "context", None), "details", None) or {}
            if "x_total_count" not in details:  # any other failure is the caller's
                raise
    rows = client.query(table, query, fields=["sys_id"], page_size=1)
    return any(True for _ in itertools.islice(rows, 1))


def ask_one(client: Any, question: Question) -> bool | None:
    """One question as one request (True/False, or :data:`MISSING`)."""
    try:
        return any_row(client, question.table, question.query)
    except Exception as exc:
        if type(exc).__name__ == "InvalidTableError":
            return MISSING
        raise


def ask(
    client: Any, questions: Sequence[Question], *, width: int, riders: Sequence[Rider] = ()
) -> list[bool | None]:
    """Every answer: together when the Batch API answers cleanly, else ``width`` at a time
    (``riders`` then go unanswered: whoever needs their data reads it later)."""
    answers = ask_together(client, questions, riders)
    if answers is not None:
        return answers
    if len(questions) <= 1 or width <= 1:
        return [ask_one(client, q) for q in questions]
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="snowkit-ask") as pool:
        return list(pool.map(lambda q: ask_one(client, q), questions))
