"""What Chat and SubmitFeedback say when the event outbox cannot take their events."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.common.errors import RETRY_AFTER_TRAILER, Unavailable
from services.common.kafka import EventProducer
from services.common.outbox import Outbox
from services.common.pb.parley.v1 import events_pb2, response_pb2
from services.response.answer import build_engine, build_store

UNREACHABLE = "127.0.0.1:9"  # nothing listens: the outbox keeps what it has


async def test_feedback_the_outbox_refuses_is_unavailable_and_the_chat_is_still_answered(
        stack, settings, search_client, redis_client, shop_key, tmp_path: Path):
    """A turn's answer is worth more than its event: Chat answers (the lost event is counted). Feedback
    is nothing but its event: acknowledging one that was dropped would tell the client it was recorded,
    so it is UNAVAILABLE with a retry hint, and a retry (same event id) is recorded once there is room."""
    outbox = Outbox(tmp_path / "response.sqlite", EventProducer(UNREACHABLE), name="test-refusing", max_events=1)
    outbox.open()
    engine = build_engine(settings, search_client, build_store(settings, redis_client), outbox)
    try:
        assert await outbox.publish("t", "k", events_pb2.ChatTurn(event_id="filler"))   # the outbox is full
        labels = {"outbox": "test-refusing", "topic": settings.topic("feedback")}
        before = REGISTRY.get_sample_value("parley_outbox_dropped_total", labels) or 0.0
        reply = await engine.chat(response_pb2.ChatRequest(
            product_key=shop_key.secret, message="How long does shipping take?", session_id="s-outbox-full"), timeout=10)
        assert reply.answer and reply.request_id
        with pytest.raises(Unavailable) as refused:
            await engine.feedback(shop_key.secret, reply.request_id, 1, "clear")
        assert "not recorded" in refused.value.message and refused.value.trailers[RETRY_AFTER_TRAILER]
        assert REGISTRY.get_sample_value("parley_outbox_dropped_total", labels) == before + 1
        assert outbox.dropped == 2          # the turn's event and the feedback's
    finally:
        await engine.drain()
        outbox.close()
