"""The crawl worker's consumer replaced when its polls fail: aiokafka ends its group coordination for
good on an error it does not expect (under uvloop, "the handler is closed" on a connection the broker
dropped while it was away), and every poll after raises it. The worker went down with it, mid fault
test. The consumers here stand in for aiokafka's: what is tested is the worker's loop around them."""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaConnectionError, KafkaError

from services.scraper.settings import ScraperSettings
from services.scraper.worker import CONSUMER_RESTARTS, consume

BROKEN = KafkaError("Unexpected error during coordination RuntimeError('unable to perform operation on "
                    "<TCPTransport closed=True reading=False>; the handler is closed')")


class _Consumer:
    def __init__(self, *, broken: bool = False, starts: bool = True) -> None:
        self.broken, self.starts = broken, starts
        self.started = self.stopped = False
        self.polls = 0

    def subscribe(self, topics, listener) -> None:
        self.topics = topics

    async def start(self) -> None:
        if not self.starts:
            raise KafkaConnectionError("the broker is away")
        self.started = True

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        self.polls += 1
        if self.broken:
            raise BROKEN           # every poll, as aiokafka's check of its ended coordination does
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def stop(self) -> None:
        self.stopped = True


async def _until(check, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not reached in time")


async def test_a_consumer_whose_polls_fail_is_replaced_and_the_worker_goes_on():
    first, second = _Consumer(broken=True), _Consumer()
    made = iter([first, second])
    stop = asyncio.Event()
    before = CONSUMER_RESTARTS._value.get()
    task = asyncio.ensure_future(consume(ScraperSettings(), worker=None, stop=stop, new_consumer=lambda: next(made)))
    await _until(lambda: second.polls >= 2)
    assert first.started and first.stopped and first.polls == 1       # stopped after its first failed poll
    assert second.started and not second.stopped
    assert CONSUMER_RESTARTS._value.get() - before == 1
    stop.set()
    await asyncio.wait_for(task, 5)
    assert second.stopped


async def test_a_worker_told_to_stop_while_no_new_consumer_can_start_stops():
    first, second = _Consumer(broken=True), _Consumer(starts=False)
    made = iter([first, second])
    stop = asyncio.Event()
    task = asyncio.ensure_future(consume(ScraperSettings(), worker=None, stop=stop, new_consumer=lambda: next(made)))
    await _until(lambda: first.stopped)
    await asyncio.sleep(0.5)                 # the new one is being tried, the broker "away"
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 5)          # within the stop, not after the start's attempts
    assert not second.started
