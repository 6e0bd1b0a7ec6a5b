"""Which limit ended an LLM wait, judged by what the wait had when it fired; and Retry-After hints that
no status could carry."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from services.response.llm import Deadline, GroqClient, _retry_after


async def _timed_out(deadline: Deadline, cap_in: float, joined_after: float | None = None) -> str:
    loop = asyncio.get_running_loop()
    wait = deadline.within(loop.time() + cap_in)
    with pytest.raises(TimeoutError):
        async with wait:
            await asyncio.sleep(1)
    if joined_after is not None:
        deadline.extend(loop.time() + joined_after)     # a caller joins the shared call right after
    return GroqClient._timed_out(deadline, wait, "stalled", False).kind


async def test_the_callers_deadline_is_told_from_a_stall_even_when_a_caller_joins_as_it_fires():
    loop = asyncio.get_running_loop()
    assert await _timed_out(Deadline(loop.time() + 0.05), cap_in=5) == "deadline"
    # The patient caller's join moves the deadline later once the wait has fired: still the deadline,
    # not a stall of the model (which would count against its breaker).
    assert await _timed_out(Deadline(loop.time() + 0.05), cap_in=5, joined_after=10) == "deadline"
    assert await _timed_out(Deadline(loop.time() + 10), cap_in=0.05) == "stalled"
    assert await _timed_out(Deadline(loop.time() + 10).capped(loop.time() + 0.05), cap_in=5) == "timeout"


@pytest.mark.parametrize("header, seconds", [
    ({"retry-after": "3"}, 3.0), ({"retry-after-ms": "1500"}, 1.5), ({"retry-after": "-4"}, 0.0),
    ({"retry-after": "1e999"}, 365 * 24 * 3600.0), ({"retry-after": "nan"}, None),
    ({"retry-after": "Mon, 01 Jan 99999999999 00:00:00 GMT"}, None), ({"retry-after": "soon"}, None),
])
def test_retry_after_hints_are_bounded_or_ignored(header, seconds):
    assert _retry_after(httpx.Headers(header)) == seconds
