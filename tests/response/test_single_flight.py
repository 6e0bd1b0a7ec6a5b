"""In-process single-flight on its own: who joins a flight, and what each caller is handed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from services.common.errors import Unavailable
from services.response.llm import Deadline
from services.response.singleflight import SingleFlight


def _later(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_a_caller_after_the_last_one_left_starts_its_own_flight_while_the_old_one_cleans_up():
    """The abandoned flight's cleanup (a Redis unlock, closing the LLM's stream) takes a while; the
    same question asked meanwhile is answered, not handed that flight's cancellation."""
    flights = SingleFlight()
    cleaning, cleaned = asyncio.Event(), asyncio.Event()
    runs = 0

    async def work(_deadline: Deadline) -> AsyncIterator[str]:
        nonlocal runs
        runs += 1
        run = runs
        try:
            yield f"piece {run}"
            await asyncio.sleep(0.05)
            yield f"answer {run}"
        finally:
            if run == 1:
                cleaning.set()
                await asyncio.sleep(0.3)
                cleaned.set()

    first = flights.run("q", work, _later(30))
    assert await first.__anext__() == (True, "piece 1")
    await first.aclose()          # the last caller leaves: the flight is cancelled
    await cleaning.wait()
    assert not cleaned.is_set()
    got = [item async for item in flights.run("q", work, _later(30))]
    assert got == [(True, "piece 2"), (True, "answer 2")]
    await cleaned.wait()
    assert flights.in_flight() == 0


async def test_callers_of_a_flight_cancelled_by_someone_else_get_no_cancellation_of_their_own():
    flights = SingleFlight()
    started = asyncio.Event()

    async def work(_deadline: Deadline) -> AsyncIterator[str]:
        started.set()
        await asyncio.sleep(30)
        yield "never"

    async def caller() -> list:
        return [item async for item in flights.run("q", work, _later(30))]

    callers = [asyncio.create_task(caller()) for _ in range(2)]
    await started.wait()
    flights._flights["q"].task.cancel()     # as the loop's shutdown would
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results), results
    assert not any(c.cancelled() for c in callers)



async def test_each_caller_of_a_failed_flight_gets_an_error_of_its_own():
    """What one caller sets on its error (its request id in the trailers) is not the others'."""
    flights = SingleFlight()
    started = asyncio.Event()

    async def work(_deadline: Deadline) -> AsyncIterator[str]:
        started.set()
        await asyncio.sleep(0.05)
        raise Unavailable("the LLM is not answering", trailers={"retry-after": "30"})
        yield "never"

    async def caller(name: str) -> Unavailable:
        try:
            async for _ in flights.run("q", work, _later(30)):
                pass
        except Unavailable as exc:
            exc.trailers = {**exc.trailers, "x-parley-request-id": name}
            return exc
        raise AssertionError("the flight failed")

    errors = await asyncio.gather(*(caller(f"r{i}") for i in range(3)))
    assert len({id(e) for e in errors}) == 3
    assert [e.trailers for e in errors] == [{"retry-after": "30", "x-parley-request-id": f"r{i}"} for i in range(3)]
    assert all(e.message == "the LLM is not answering" and isinstance(e.__cause__, Unavailable) for e in errors)


async def test_a_caller_who_joins_pushes_the_flights_deadline_to_its_own_and_an_earlier_one_does_not():
    flights = SingleFlight()
    started, release = asyncio.Event(), asyncio.Event()
    seen: list[Deadline] = []

    async def work(deadline: Deadline) -> AsyncIterator[str]:
        seen.append(deadline)
        started.set()
        await release.wait()
        yield "answer"

    async def caller(seconds: float) -> list:
        return [item async for item in flights.run("q", work, _later(seconds))]

    hurried = asyncio.create_task(caller(1))
    await started.wait()
    first = seen[0].at
    patient = asyncio.create_task(caller(20))
    await asyncio.sleep(0)
    assert seen[0].at - first > 18
    pushed = seen[0].at
    earlier = asyncio.create_task(caller(5))
    await asyncio.sleep(0)
    assert seen[0].at == pushed
    release.set()
    assert await asyncio.gather(hurried, patient, earlier) == [[(True, "answer")], [(False, "answer")],
                                                                [(False, "answer")]]
    assert len(seen) == 1 and flights.in_flight() == 0
