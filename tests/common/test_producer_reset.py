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


async def test_a_producer_out_of_step_with_the_broker_is_replaced_and_the_next_event_goes_through(stack):
    """A batch that failed before it reached the broker (its partition without a leader past the request
    timeout) still used a sequence number: every later batch to the partition is then refused with
    OutOfOrderSequenceNumber, which aiokafka never recovers from. The producer is replaced."""
    import uuid

    import pytest
    from aiokafka.errors import OutOfOrderSequenceNumber
    from aiokafka.structs import TopicPartition

    from services.common.pb.parley.v1 import events_pb2

    topic = f"test-out-of-step-{uuid.uuid4().hex[:8]}"
    producer = EventProducer(stack.kafka_bootstrap, client_id="test-out-of-step")
    await producer.start()
    try:
        event = events_pb2.KnowledgeUpdated(product_key_id="k")
        first = await producer.publish(topic, "k", event, wait=True)
        # The sequence moves on without the broker having seen it, as in that failure.
        producer._producer._txn_manager.increment_sequence_number(TopicPartition(topic, first.partition), 3)
        with pytest.raises(OutOfOrderSequenceNumber):
            await producer.publish(topic, "k", event, wait=True)
        after = await producer.publish(topic, "k", event, wait=True)
        assert after.offset == first.offset + 1
    finally:
        await producer.stop()
