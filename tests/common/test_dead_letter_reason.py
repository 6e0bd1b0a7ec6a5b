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
