"""Chat turns for the stream bench: realistic events over many keys, produced as fast as the broker
takes them, or at a steady rate from a separate process (so the generator does not share the
bench's event loop, and is measured apart from the worker)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from datetime import datetime, timezone

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from services.common.kafka import new_event_id
from services.common.pb.parley.v1 import common_pb2, events_pb2


def turn(key_id: str, i: int, when: datetime | None = None) -> events_pb2.ChatTurn:
    t = events_pb2.ChatTurn(
        event_id=new_event_id(), product_key_id=key_id, session_id=f"s{i % 500}", request_id=uuid.uuid4().hex,
        message=f"question number {i % 300}", answer="an answer of ordinary length, with a citation [12]",
        strategy=common_pb2.STRATEGY_KNOWLEDGE if i % 7 else common_pb2.STRATEGY_NO_ANSWER,
        model="extractive", cache_status=common_pb2.CACHE_STATUS_HIT if i % 3 == 0 else common_pb2.CACHE_STATUS_MISS,
        timings=common_pb2.Timings(total_ms=5 + i % 200, search_ms=2 + i % 20, ttft_ms=1 + i % 30, llm_ms=3 + i % 150),
        usage=common_pb2.TokenUsage(prompt_tokens=300, completion_tokens=60), source_ids=["12", "14"],
    )
    t.occurred_at.FromDatetime(when or datetime.now(timezone.utc))
    return t


def serialized(keys: list[str], n: int) -> list[tuple[bytes, bytes]]:
    """n turns spread round-robin over keys, as (Kafka key, value)."""
    now = datetime.now(timezone.utc)
    return [(keys[i % len(keys)].encode(), turn(keys[i % len(keys)], i, now).SerializeToString()) for i in range(n)]


async def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        for i in range(0, len(values), 5000):
            await asyncio.gather(*[await producer.send(topic, v, key=k) for k, v in values[i:i + 5000]])
    finally:
        await producer.stop()


async def _steady(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]], rate: float) -> int:
    """Sends `values` at `rate` per second, what is due every tick as one batch per partition (the
    partition the default partitioner gives the key). One send() per event cost this process about
    a third of a core at 30k events/s, taken from the worker and PostgreSQL it loads; a batch built
    by the producer's record builder is a few microseconds per event."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                max_batch_size=1 << 20)
    await producer.start()
    tick = 0.05
    try:
        partitions = sorted(await producer.partitions_for(topic))
        partition_of: dict[bytes, int] = {}
        started = time.perf_counter()
        sent = 0
        while sent < len(values):
            due = min(len(values), int((time.perf_counter() - started) * rate))
            batches: dict[int, BatchBuilder] = {}
            futures = []
            for k, v in values[sent:due]:
                p = partition_of.get(k)
                if p is None:
                    p = partition_of[k] = DefaultPartitioner()(k, partitions, partitions)
                batch = batches.get(p)
                if batch is None:
                    batch = batches[p] = producer.create_batch()
                if batch.append(key=k, value=v, timestamp=None) is None:  # full: send it, start another
                    futures.append(await producer.send_batch(batch, topic, partition=p))
                    batch = batches[p] = producer.create_batch()
                    batch.append(key=k, value=v, timestamp=None)
            for p, batch in batches.items():
                futures.append(await producer.send_batch(batch, topic, partition=p))
            sent = due
            if futures:
                await asyncio.gather(*futures)
            await asyncio.sleep(tick)
        return sent
    finally:
        await producer.stop()


def _generate(bootstrap: str, topic: str, keys: list[str], rate: float, seconds: float, ready, done) -> None:
    values = serialized(keys, int(rate * seconds))
    ready.set()
    done.put(asyncio.run(_steady(bootstrap, topic, values, rate)))


class SteadyLoad:
    """A process that sends `rate` turns/s over `keys` for `seconds` (events prepared before it starts)."""

    def __init__(self, bootstrap: str, topic: str, keys: list[str], rate: float, seconds: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._ready, self._done = ctx.Event(), ctx.Queue()
        self.process = ctx.Process(target=_generate, args=(bootstrap, topic, keys, rate, seconds, self._ready,
                                                            self._done), daemon=True)

    async def start(self) -> None:
        self.process.start()
        while not self._ready.is_set():
            await asyncio.sleep(0.1)

    async def wait(self) -> int:
        while self.process.is_alive() and self._done.empty():
            await asyncio.sleep(0.1)
        sent = self._done.get(timeout=5)
        self.process.join(timeout=5)
        return sent
