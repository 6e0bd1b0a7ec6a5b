"""A dead letter's reason is a header: bounded, whatever error text a caller quotes in it."""

from __future__ import annotations

import uuid

from services.common.kafka import DEAD_LETTER_MAX_REASON, DeadLetters, ensure_topics
from tests.analytics.test_dead_letter_size import _letters


async def test_a_long_reason_is_cut_to_the_bound(stack, settings):
    dead = f"{settings.topic('deadletter')}.reason-{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings.kafka_bootstrap, [dead], 1)
    reason = "PostgreSQL refused the page: " + "value too long " * 10_000
    letters = DeadLetters(settings.kafka_bootstrap, dead, client_id="test-dead-letters")
    try:
        assert await letters.send(b"page", reason, "parley.knowledge.pages.v1", 0, 1)
    finally:
        await letters.close()
    (letter,) = await _letters(settings.kafka_bootstrap, dead, 1)
    kept = dict(letter.headers)["reason"].decode()
    assert len(kept) == DEAD_LETTER_MAX_REASON and kept.startswith("PostgreSQL refused the page: value too long")


async def test_letters_sent_at_once_share_one_producer(stack, settings, monkeypatch):
    """Several partitions' writers dead-letter at the same moment: one producer is started, not one
    each (the others ran on, never stopped)."""
    import asyncio  # noqa: PLC0415

    import aiokafka  # noqa: PLC0415

    dead = f"{settings.topic('deadletter')}.once-{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings.kafka_bootstrap, [dead], 1)
    letters = DeadLetters(settings.kafka_bootstrap, dead, client_id="test-dead-letters")
    started = 0
    start = aiokafka.AIOKafkaProducer.start

    async def counting(self):
        nonlocal started
        started += 1
        await start(self)

    monkeypatch.setattr(aiokafka.AIOKafkaProducer, "start", counting)
    try:
        sent = await asyncio.gather(*(letters.send(b"bad %d" % i, "not protobuf", "t", i, 1) for i in range(4)))
    finally:
        await letters.close()
    assert sent == [True] * 4 and started == 1
    assert len(await _letters(settings.kafka_bootstrap, dead, 4)) == 4
