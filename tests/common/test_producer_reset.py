"""A producer reset while the broker does not acknowledge the producer's batches (NotEnoughReplicas,
which an idempotent producer retries for ever): the old producer's stop cannot flush them and times
out; the producer is then closed, not left running beside the new one with its copy of the batches."""

from __future__ import annotations

import asyncio

from services.common.kafka import EventProducer


def _senders() -> int:
    return sum(1 for task in asyncio.all_tasks()
               if not task.done() and "_sender_routine" in repr(task.get_coro()))


async def test_a_reset_closes_a_producer_whose_stop_cannot_flush(stack):
    before = _senders()
    producer = EventProducer(stack.kafka_bootstrap, client_id="test-producer-reset")
    for _ in range(3):
        await producer.start()
        never = asyncio.Event()

        async def unflushable(never=never):
            await never.wait()     # as when the broker keeps the batches unacknowledged

        producer._producer._message_accumulator.close = unflushable
        await producer.reset(timeout=0.5)
    await producer.start()
    try:
        await asyncio.sleep(0.2)
        assert _senders() - before == 1, "one sender: the current producer's"
    finally:
        await producer.stop()
