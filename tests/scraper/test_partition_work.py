"""The crawl worker's poll loop bookkeeping (services/scraper/worker.py `_PartitionWork`): partitions in
parallel and each in order, at most max_jobs jobs at once, a partition paused while its requests are in
hand, a request that could not be handled taken again from its offset (or dead-lettered when it fails
for a reason other than a dependency gone), and no request started once closing (one waiting for a slot
included). The consumer here only records what the loop asks of it; the loop against a real Kafka is
tests/scraper/test_crawl.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

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
        self.fail: dict[bytes, Exception] = {}
        self.dead: list[tuple[bytes, str, int]] = []

    def gate(self, value: bytes) -> asyncio.Event:
        return self.gates.setdefault(value, asyncio.Event())

    async def dead_letter(self, value: bytes, reason: str, tp: TopicPartition, offset: int) -> None:
        self.dead.append((value, reason, offset))

    async def handle(self, value: bytes, tp: TopicPartition, offset: int) -> None:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate(value).wait()
            if value in self.fail:
                raise self.fail.pop(value)
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


async def test_at_most_max_jobs_run_at_once_and_the_others_wait_for_a_slot():
    consumer, worker = Consumer([T0, T1, T2]), Worker()
    work = _PartitionWork(consumer, worker, max_jobs=2)
    for tp in (T0, T1, T2):
        work.add(tp, [Record(f"job-{tp.partition}".encode(), 0)])
    await settle()
    assert worker.running == 2 and consumer.paused == {T0, T1, T2}, "the waiting partition is paused too"
    worker.gate(b"job-0").set()
    await settle()
    assert worker.running == 2 and worker.handled == [(T0, 0)]
    worker.gate(b"job-1").set()
    worker.gate(b"job-2").set()
    await settle()
    assert worker.most_running == 2 and len(worker.handled) == 3 and consumer.paused == set()
    await work.close(1)


async def test_a_request_that_could_not_be_handled_is_taken_again_from_its_offset(monkeypatch):
    monkeypatch.setattr(crawl_worker, "RETRY_SECONDS", 0)
    consumer, worker = Consumer([T0]), Worker()
    work = _PartitionWork(consumer, worker, max_jobs=4)
    worker.fail[b"a"] = ConnectionError("PostgreSQL went away")
    worker.gate(b"a").set()
    work.add(T0, [Record(b"a", 7), Record(b"b", 8)])
    await settle()
    assert consumer.commits == [] and consumer.seeks == [(T0, 7)], "not committed past, fetched again from 7"
    assert consumer.paused == set() and worker.dead == []
    await work.close(1)


async def test_a_request_that_fails_every_time_is_dead_lettered_and_the_partition_goes_on():
    consumer, worker = Consumer([T0]), Worker()
    work = _PartitionWork(consumer, worker, max_jobs=4)
    worker.fail[b"bad"] = TypeError("a bytes-like object is required, not 'NoneType'")
    for value in (b"bad", b"good"):
        worker.gate(value).set()
    work.add(T0, [Record(b"bad", 3), Record(b"good", 4)])
    await settle()
    assert [(v, o) for v, _, o in worker.dead] == [(b"bad", 3)] and "TypeError" in worker.dead[0][1]
    assert worker.handled == [(T0, 4)] and consumer.commits == [(T0, 4), (T0, 5)] and consumer.seeks == []
    await work.close(1)


async def test_a_failed_commit_leaves_the_requests_not_yet_handled_to_be_fetched_again():
    class Refusing(Consumer):
        async def commit(self, offsets) -> None:
            raise CommitFailedError("the group rebalanced")

    consumer, worker = Refusing([T0]), Worker()
    work = _PartitionWork(consumer, worker, max_jobs=4)
    for value in (b"one", b"two"):
        worker.gate(value).set()
    work.add(T0, [Record(b"one", 5), Record(b"two", 6)])
    await settle()
    assert worker.handled == [(T0, 5)] and consumer.seeks == [(T0, 6)]
    await work.close(1)


async def test_closing_waits_for_the_grace_then_cancels_and_starts_no_other_request():
    consumer, worker = Consumer([T0]), Worker()
    work = _PartitionWork(consumer, worker, max_jobs=4)
    work.add(T0, [Record(b"slow", 3), Record(b"next", 4)])
    worker.gate(b"next").set()
    await settle()
    closing = asyncio.create_task(work.close(0.5))
    await settle()
    worker.gate(b"slow").set()          # done within the grace period
    await asyncio.wait_for(closing, 2)
    assert worker.handled == [(T0, 3)] and consumer.commits == [(T0, 4)], "the queued request was not started"
    work = _PartitionWork(consumer, worker, max_jobs=4)
    work.add(T0, [Record(b"never", 9)])
    await settle()
    await asyncio.wait_for(work.close(0.05), 2)
    assert consumer.commits == [(T0, 4)] and worker.running == 0


async def test_a_request_waiting_for_a_slot_when_closing_begins_is_not_started_in_the_grace():
    consumer, worker = Consumer([T0, T1]), Worker()
    work = _PartitionWork(consumer, worker, max_jobs=1)
    work.add(T0, [Record(b"running", 0)])
    work.add(T1, [Record(b"waiting", 5)])       # taken from its queue, waiting for the one slot
    worker.gate(b"waiting").set()
    await settle()
    assert worker.running == 1
    closing = asyncio.create_task(work.close(0.5))
    await settle()
    worker.gate(b"running").set()               # the slot frees within the grace period
    await asyncio.wait_for(closing, 2)
    assert worker.handled == [(T0, 0)] and consumer.commits == [(T0, 1)], "the waiting request was started"
