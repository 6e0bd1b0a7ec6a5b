"""Records of another type on the turns and feedback topics: protobuf decodes nearly any message as any
other, so a KnowledgeUpdated on the turns topic read as a ChatTurn was stored and counted. A record whose
`event-type` header names another type, and a turn without what every turn the response service emits
has, are dead-lettered with a reason that says so."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer

from services.analytics.stream.decode import InvalidEvent, decode_feedback, decode_turn
from services.common.kafka import event_headers, new_event_id, now_timestamp
from services.common.pb.parley.v1 import analytics_pb2, common_pb2, events_pb2
from tests.analytics.test_stream import count_turns, now_turn, producer, wait_for
from tests.analytics.test_turn_numbers import _dead_letters


def _knowledge_updated(key_id: str) -> events_pb2.KnowledgeUpdated:
    return events_pb2.KnowledgeUpdated(event_id=new_event_id(), occurred_at=now_timestamp(), product_key_id=key_id,
                                       knowledge_version=7, reason="faq_added")


def _feedback(key_id: str, request_id: str = "", rating: int = 1) -> events_pb2.Feedback:
    return events_pb2.Feedback(event_id=new_event_id(), occurred_at=now_timestamp(), product_key_id=key_id,
                               request_id=request_id or uuid.uuid4().hex, rating=rating)


def _crawl_requested(key_id: str, job_id: str) -> events_pb2.CrawlRequested:
    return events_pb2.CrawlRequested(event_id=new_event_id(), occurred_at=now_timestamp(), job_id=job_id,
                                     product_key_id=key_id, seed_urls=["https://example.invalid/"], max_pages=5)


def _failed_turn(key_id: str, code: str, strategy: int = common_pb2.STRATEGY_UNSPECIFIED) -> events_pb2.ChatTurn:
    """A turn as the response service reports one that failed: the error's code, the strategy known
    when it failed (none, when it failed before the plan), no answer."""
    turn = now_turn(key_id, message="Do you deliver on Sundays?")
    turn.strategy, turn.error_code, turn.answer, turn.model = strategy, code, "", ""
    turn.ClearField("usage")
    return turn


def test_a_record_whose_event_type_names_another_type_is_refused_with_both_types_named():
    from services.analytics.stream.decode import wrong_event_type

    turn_type, feedback_type = b"parley.v1.ChatTurn", b"parley.v1.Feedback"
    assert wrong_event_type(None, turn_type) == ""                       # no header: the value decides
    assert wrong_event_type(turn_type, turn_type) == ""
    reason = wrong_event_type(b"parley.v1.KnowledgeUpdated", turn_type)
    assert "parley.v1.KnowledgeUpdated" in reason and "parley.v1.ChatTurn" in reason and "event-type" in reason
    reason = wrong_event_type(turn_type, feedback_type)
    assert "parley.v1.ChatTurn" in reason and "parley.v1.Feedback" in reason
    assert len(wrong_event_type(b"\xff" * 5000, turn_type)) < 1000        # a header of any size or bytes


def test_a_decoded_turn_or_feedback_must_have_what_every_one_the_response_service_emits_has():
    key_id = "k"
    decode_turn(now_turn(key_id).SerializeToString())
    decode_turn(_failed_turn(key_id, "UNAVAILABLE").SerializeToString())   # failed before its plan
    decode_turn(_failed_turn(key_id, "CANCELLED", common_pb2.STRATEGY_NO_ANSWER).SerializeToString())
    no_request = now_turn(key_id)
    no_request.request_id = ""
    no_strategy = now_turn(key_id)
    no_strategy.strategy = common_pb2.STRATEGY_UNSPECIFIED
    for turn, expected in ((no_request, "without request_id"), (no_strategy, "strategy UNSPECIFIED")):
        with pytest.raises(InvalidEvent, match=expected):
            decode_turn(turn.SerializeToString())
    # Without headers, other events read as a ChatTurn miss one or the other, and the reason says that
    # the value holds fields a ChatTurn has not (of another type, or numbers it does not have).
    for other in (_knowledge_updated(key_id), _feedback(key_id), _crawl_requested(key_id, "job-1")):
        with pytest.raises(InvalidEvent, match="another event type"):
            decode_turn(other.SerializeToString())
    with pytest.raises(InvalidEvent, match="another event type"):
        decode_feedback(now_turn(key_id).SerializeToString())
    unrated = _feedback(key_id)
    unrated.request_id = ""
    with pytest.raises(InvalidEvent, match="without request_id"):
        decode_feedback(unrated.SerializeToString())


async def test_the_worker_dead_letters_records_of_another_type_and_stores_the_turns(
        services, settings, pg, analytics, admin):
    key_id = f"types-{uuid.uuid4().hex[:8]}"
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    turns_topic, feedback_topic = settings.topic("chat_turns"), settings.topic("feedback")
    knowledge, rated, crawl = _knowledge_updated(key_id), _feedback(key_id), _crawl_requested(key_id, job_id)
    a_turn = now_turn(key_id, message="Is the shop open today?")
    unspecified = now_turn(key_id)
    unspecified.strategy = common_pb2.STRATEGY_UNSPECIFIED
    failed = _failed_turn(key_id, "UNAVAILABLE")
    answered = now_turn(key_id, message="When are you open?")
    # (topic, message, its event-type header sent?, words of its dead letter's reason; None: stored)
    sent = [
        (turns_topic, knowledge, True, ("parley.v1.KnowledgeUpdated", "parley.v1.ChatTurn")),
        (turns_topic, rated, True, ("parley.v1.Feedback", "parley.v1.ChatTurn")),
        (turns_topic, crawl, True, ("parley.v1.CrawlRequested", "parley.v1.ChatTurn")),
        (feedback_topic, a_turn, True, ("parley.v1.ChatTurn", "parley.v1.Feedback")),
        (turns_topic, _crawl_requested(key_id, job_id), False, ("another event type",)),
        (feedback_topic, now_turn(key_id), False, ("another event type",)),
        (turns_topic, unspecified, False, ("strategy UNSPECIFIED",)),
        (turns_topic, failed, True, None),
        (turns_topic, answered, True, None),
    ]
    p = await producer(settings)
    consumer = AIOKafkaConsumer(settings.topic("deadletter"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        for topic, message, headed, _ in sent:
            await p.send_and_wait(topic, message.SerializeToString(), key=key_id.encode(),
                                  headers=event_headers(message) if headed else [])
        refused = [(topic, m.SerializeToString(), words) for topic, m, _, words in sent if words is not None]
        letters = await _dead_letters(consumer, key_id, len(refused))
        assert await wait_for(lambda: _is(count_turns(pg, key_id), (2, 2)))
    finally:
        await consumer.stop()
        await p.stop()
    found = {(dict(m.headers)["source-topic"].decode(), m.value): dict(m.headers)["reason"].decode() for m in letters}
    assert set(found) == {(topic, value) for topic, value, _ in refused}, found
    for topic, value, words in refused:
        assert all(w in found[topic, value] for w in words), (words, found[topic, value])
    stored = await pg.fetch("SELECT request_id, strategy, error_code FROM conversations WHERE product_key_id = $1",
                            key_id)
    assert {(r["request_id"], r["strategy"], r["error_code"]) for r in stored} == {
        (failed.request_id, "UNSPECIFIED", "UNAVAILABLE"), (answered.request_id, "KNOWLEDGE", "")}
    # The crawl request's job id, read as a product key id, made no tenant of its own.
    assert await count_turns(pg, job_id) == (0, 0)
    assert await pg.fetchval("SELECT count(*) FROM feedback_events WHERE product_key_id = $1", key_id) == 0
    total = (await analytics.GetMetrics(analytics_pb2.GetMetricsRequest(product_key_id=key_id), metadata=admin,
                                        timeout=10)).total
    assert (total.turns, total.errors, total.feedback_up, total.feedback_down) == (2, 1, 0, 0)


async def _is(awaitable, expected) -> bool:
    return (await awaitable) == expected
