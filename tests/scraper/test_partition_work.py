"""The crawl worker's poll loop bookkeeping (services/scraper/worker.py `_PartitionWork`): partitions in
parallel and each in order, at most max_jobs jobs at once, a partition paused while its requests are in
hand, and a request that could not be handled taken again from its offset. The consumer here only
records what the loop asks of it; the loop against a real Kafka is tests/scraper/test_crawl.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import TopicPartition

from services.scraper import worker as crawl_worker
from services.scraper.worker import _PartitionWork

T0, T1, T2 = (TopicPartition("crawl", p) for p in range(3))


@dataclass
class Record:
    value: bytes
    offset: int


class Consumer:
    def __init__(self, partitions) -> None:
        self.assigned = set(partitions)
        self.paused: set[TopicPartition] = set()
        self.commits: list[tuple[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []

    def assignment(self):
        return set(self.assigned)

    def pause(self, tp) -> None:
        self.paused.add(tp)

    def resume(self, tp) -> None:
        self.paused.discard(tp)

    def seek(self, tp, offset) -> None:
        self.seeks.append((tp, offset))

    async def commit(self, offsets) -> None:
        self.commits.extend(offsets.items())


class Worker:
    """Handles a request when the test lets it (per value), or fails it."""

    def __init__(self) -> None:
        self.gates: dict[bytes, asyncio.Event] = {}
        self.handled: list[tuple[TopicPartition, int]] = []
        self.running = 0
        self.most_running = 0
        self.fail: set[bytes] = set()

    def gate(self, value: bytes) -> asyncio.Event:
        return self.gates.setdefault(value, asyncio.Event())

    async def handle(self, value: bytes, tp: TopicPartition, offset: int) -> None:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate(value).wait()
            if value in self.fail:
                self.fail.discard(value)
                raise ConnectionError("PostgreSQL went away")
            self.handled.append((tp, offset))
        finally:
            self.running -= 1


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_long_job_holds_up_only_its_own_partition():
    consumer, worker = Consumer([T0, T1]), Worker()
    work = _PartitionWork(consumer, worker, max_jobs=4)
    work.add(T0, [Record(b"long", 0), Record(b"after-long", 1)])
    work.add(T1, [Record(b"short", 0)])
    worker.gate(b"short").set()
    worker.gate(b"after-long").set()
    await settle()
    assert worker.handled == [(T1, 0)] and consumer.commits == [(T1, 1)]
    assert consumer.paused == {T0}, "a partition with a request in hand is fetched no further"
    worker.gate(b"long").set()
    await settle()
    assert worker.handled == [(T1, 0), (T0, 0), (T0, 1)]       # the partition's requests in order
    assert consumer.commits == [(T1, 1), (T0, 1), (T0, 2)] and consumer.paused == set()
    await work.close(1)


async def test_at_most_max_jobs_run_at_once_and_the_loop_waits_for_room():
    consumer, worker = Consumer([T0, T1, T2]), Worker()
    work = _PartitionWork(consumer, worker, max_jobs=2)
    for tp in (T0, T1):
        work.add(tp, [Record(f"job-{tp.partition}".encode(), 0)])
    assert work.full
    stop = asyncio.Event()
    waiting = asyncio.create_task(work.wait_for_room(stop))
    await settle()
    assert not waiting.done()
    worker.gate(b"job-0").set()
    await asyncio.wait_for(waiting, 1)
    assert not work.full
    work.add(T2, [Record(b"job-2", 0)])
    worker.gate(b"job-1").set()
    worker.gate(b"job-2").set()
    await settle()
    assert worker.most_running == 2 and len(worker.handled) == 3
    await work.close(1)


async def test_a_request_that_could_not_be_handled_is_taken_again_from_its_offset(monkeypatch):
    monkeypatch.setattr(crawl_worker, "RETRY_SECONDS", 0)
    consumer, worker = Consumer([T0]), Worker()
    work = _PartitionWork(consumer, worker, max_jobs=4)
    worker.fail.add(b"a")
    worker.gate(b"a").set()
    work.add(T0, [Record(b"a", 7), Record(b"b", 8)])
    await settle()
    assert consumer.commits == [] and consumer.seeks == [(T0, 7)], "not committed past, fetched again from 7"
    assert consumer.paused == set() and not work.full
    await work.close(1)


async def test_closing_waits_for_the_grace_then_cancels_and_commits_nothing_more():
    consumer, worker = Consumer([T0]), Worker()
    work = _PartitionWork(consumer, worker, max_jobs=4)
    work.add(T0, [Record(b"never", 3)])
    await settle()
    await asyncio.wait_for(work.close(0.05), 2)
    assert consumer.commits == [] and worker.running == 0
