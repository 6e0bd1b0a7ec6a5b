"""The stream worker against real Kafka and PostgreSQL: dead letters, replays, crashes, summaries."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import grpc
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.common.kafka import new_event_id
from services.common.pb.parley.v1 import analytics_pb2, common_pb2, events_pb2
from tests.analytics.test_sink import make_turn


async def small_topic(settings, name: str, max_message_bytes: int) -> str:
    """A one-partition topic whose broker refuses a message over `max_message_bytes`."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs={"max.message.bytes": str(max_message_bytes)})])
    finally:
        await admin.close()
    return name


async def producer(settings) -> AIOKafkaProducer:
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
                         linger_ms=5)
    await p.start()
    return p


def now_turn(key_id: str, ms: float = 10.0, *, when: datetime | None = None, message: str = "q") -> events_pb2.ChatTurn:
    turn = make_turn(key_id, ms)
    turn.message = message
    turn.occurred_at.FromDatetime(when or datetime.now(timezone.utc))
    return turn


async def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


async def count_turns(pg, key_id: str) -> tuple[int, int]:
    row = await pg.fetchrow(
        "SELECT (SELECT count(*) FROM conversations WHERE product_key_id = $1) AS rows,"
        " (SELECT coalesce(sum(turns), 0) FROM metrics_minute WHERE product_key_id = $1) AS turns",
        key_id,
    )
    return row["rows"], row["turns"]


async def test_poison_message_goes_to_dead_letters_and_the_stream_goes_on(services, settings, pg):
    key_id = f"poison-{uuid.uuid4().hex[:8]}"
    p = await producer(settings)
    consumer = AIOKafkaConsumer(settings.topic("deadletter"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        await p.send_and_wait(settings.topic("chat_turns"), b"\xff\xfenot protobuf", key=key_id.encode())
        turn = now_turn(key_id)
        await p.send_and_wait(settings.topic("chat_turns"), turn.SerializeToString(), key=key_id.encode())
        letters = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(m.key == key_id.encode() for m in letters):
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                letters.extend(msgs)
        letter = next(m for m in letters if m.key == key_id.encode())
        headers = dict(letter.headers)
        assert letter.value == b"\xff\xfenot protobuf"
        assert headers["source-topic"].decode() == settings.topic("chat_turns")
        assert headers["reason"]
        assert await wait_for(lambda: _is(count_turns(pg, key_id), (1, 1)))
    finally:
        await consumer.stop()
        await p.stop()


async def _is(awaitable, expected):
    return (await awaitable) == expected


async def test_the_same_event_delivered_twice_counts_once(services, settings, pg):
    key_id = f"dup-{uuid.uuid4().hex[:8]}"
    turns = [now_turn(key_id, ms) for ms in (5.0, 6.0, 7.0)]
    p = await producer(settings)
    try:
        for _ in range(2):  # the whole sequence replayed
            for t in turns:
                await p.send_and_wait(settings.topic("chat_turns"), t.SerializeToString(), key=key_id.encode())
    finally:
        await p.stop()
    assert await wait_for(lambda: _is(count_turns(pg, key_id), (3, 3)))
    await asyncio.sleep(1.0)
    assert await count_turns(pg, key_id) == (3, 3)


async def test_sigkill_of_the_worker_mid_stream_counts_every_event_once(services, settings, pg):
    key_id = f"kill-{uuid.uuid4().hex[:8]}"
    n = 3000
    p = await producer(settings)
    try:
        for i in range(n):
            await p.send(settings.topic("chat_turns"), now_turn(key_id, 1.0 + i % 50).SerializeToString(),
                         key=key_id.encode())
        await p.flush()
    finally:
        await p.stop()
    # Kill as soon as part of the stream is in: the rest is in flight or not read yet.
    assert await wait_for(lambda: _positive(count_turns(pg, key_id)), timeout=30, interval=0.02)
    services.kill("worker")
    partial = await count_turns(pg, key_id)
    services.start(["worker"])
    assert await wait_for(lambda: _is(count_turns(pg, key_id), (n, n)), timeout=60), await count_turns(pg, key_id)
    await asyncio.sleep(1.0)
    assert await count_turns(pg, key_id) == (n, n)
    assert partial[0] < n or partial == (n, n)


async def _positive(awaitable) -> bool:
    rows, _ = await awaitable
    return rows > 0


async def test_feedback_counts_and_knowledge_gaps(services, settings, pg, analytics, admin):
    key_id = f"fb-{uuid.uuid4().hex[:8]}"
    unanswered = now_turn(key_id, message="Do you ship to Mars?")
    unanswered.strategy = 7  # STRATEGY_NO_ANSWER
    answered = now_turn(key_id, message="When are you open?")
    answered2 = now_turn(key_id, message="when are  you OPEN?")
    feedback = events_pb2.Feedback(event_id=new_event_id(), product_key_id=key_id, request_id=answered.request_id,
                                   rating=-1, comment="wrong hours")
    feedback.occurred_at.GetCurrentTime()
    p = await producer(settings)
    try:
        for t in (unanswered, answered, answered2):
            await p.send_and_wait(settings.topic("chat_turns"), t.SerializeToString(), key=key_id.encode())
        assert await wait_for(lambda: _is(count_turns(pg, key_id), (3, 3)))
        for _ in range(2):  # a replayed feedback counts once
            await p.send_and_wait(settings.topic("feedback"), feedback.SerializeToString(), key=key_id.encode())
    finally:
        await p.stop()

    async def feedback_down():
        return await pg.fetchval("SELECT sum(feedback_down) FROM metrics_minute WHERE product_key_id = $1", key_id)

    assert await wait_for(feedback_down) == 1
    top = await analytics.TopQuestions(analytics_pb2.TopQuestionsRequest(product_key_id=key_id), metadata=admin,
                                       timeout=10)
    assert [(q.question, q.count) for q in top.questions][0] == ("When are you open?", 2)
    gaps = await analytics.KnowledgeGaps(analytics_pb2.TopQuestionsRequest(product_key_id=key_id), metadata=admin,
                                         timeout=10)
    assert {q.question: (q.no_answers, q.feedback_down) for q in gaps.questions} == {
        "Do you ship to Mars?": (1, 0), "When are you open?": (0, 1),
    }
    metrics = await analytics.GetMetrics(analytics_pb2.GetMetricsRequest(product_key_id=key_id), metadata=admin, timeout=10)
    assert (metrics.total.turns, metrics.total.no_answers, metrics.total.feedback_down) == (3, 1, 1)


async def test_a_failed_turn_whose_plan_said_no_answer_is_an_error_not_a_no_answer_nor_a_gap(
        services, settings, pg, analytics, admin):
    """KnowledgeGaps are the questions answered NO_ANSWER or rated down: a turn cancelled, or past its
    deadline, after its plan said NO_ANSWER was not answered at all. It counts as an error, not in
    no_answers, and its question is no gap."""
    key_id = f"failedgap-{uuid.uuid4().hex[:8]}"
    unanswered = now_turn(key_id, message="Do you ship to Mars?")
    unanswered.strategy = common_pb2.STRATEGY_NO_ANSWER
    failed = []
    for code in ("CANCELLED", "DEADLINE_EXCEEDED"):
        turn = now_turn(key_id, message="Do you sell gift cards?")
        turn.strategy, turn.error_code, turn.answer = common_pb2.STRATEGY_NO_ANSWER, code, ""
        failed.append(turn)
    p = await producer(settings)
    try:
        for t in (unanswered, *failed):
            await p.send_and_wait(settings.topic("chat_turns"), t.SerializeToString(), key=key_id.encode())
    finally:
        await p.stop()
    assert await wait_for(lambda: _is(count_turns(pg, key_id), (3, 3)))
    gaps = await analytics.KnowledgeGaps(analytics_pb2.TopQuestionsRequest(product_key_id=key_id), metadata=admin,
                                         timeout=10)
    assert {q.question: (q.count, q.no_answers, q.feedback_down) for q in gaps.questions} == {
        "Do you ship to Mars?": (1, 1, 0)}
    top = await analytics.TopQuestions(analytics_pb2.TopQuestionsRequest(product_key_id=key_id), metadata=admin,
                                       timeout=10)
    assert {q.question: (q.count, q.no_answers) for q in top.questions} == {
        "Do you ship to Mars?": (1, 1), "Do you sell gift cards?": (2, 0)}
    metrics = await analytics.GetMetrics(analytics_pb2.GetMetricsRequest(product_key_id=key_id), metadata=admin, timeout=10)
    assert (metrics.total.turns, metrics.total.errors, metrics.total.no_answers) == (3, 2, 1)


async def test_feedback_applied_before_its_turn_moves_to_the_turns_strategy_once_the_turn_is_stored(
    services, settings, pg, analytics, admin
):
    """Feedback and turns are different topics: feedback the worker applies first is counted under
    UNKNOWN, then moved to the turn's strategy and model once the turn is stored, exactly once. The
    UNKNOWN row it leaves with nothing in it is gone: no all-zero UNKNOWN point in GetMetrics by
    strategy, no "UNKNOWN/unknown": 0 in the minute's summary."""
    key_id = f"fbfirst-{uuid.uuid4().hex[:8]}"
    # A closed minute, so that its summary is published (and published again as its counts move).
    past = (datetime.now(timezone.utc) - timedelta(minutes=3)).replace(second=20, microsecond=0)
    turn = now_turn(key_id, message="Where is my parcel?", when=past)
    turn.strategy, turn.model = common_pb2.STRATEGY_KNOWLEDGE, "llama-3.1-8b-instant"
    up = events_pb2.Feedback(event_id=new_event_id(), product_key_id=key_id, request_id=turn.request_id, rating=1)
    up.occurred_at.FromDatetime(past + timedelta(seconds=10))

    async def counts() -> dict[tuple[str, str], tuple[int, int]]:
        rows = await pg.fetch("SELECT strategy, model, sum(feedback_up) AS up, sum(feedback_down) AS down "
                              "FROM metrics_minute WHERE product_key_id = $1 GROUP BY 1, 2", key_id)
        return {(r["strategy"], r["model"]): (r["up"], r["down"]) for r in rows}

    p = await producer(settings)
    consumer = AIOKafkaConsumer(settings.topic("metrics_minutely"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        for _ in range(2):  # a replayed feedback counts once
            await p.send_and_wait(settings.topic("feedback"), up.SerializeToString(), key=key_id.encode())
        assert await wait_for(lambda: _is(counts(), {("UNKNOWN", "unknown"): (1, 0)}))
        await p.send_and_wait(settings.topic("chat_turns"), turn.SerializeToString(), key=key_id.encode())
        assert await wait_for(lambda: _is(count_turns(pg, key_id), (1, 1)))
        moved = {("KNOWLEDGE", "llama-3.1-8b-instant"): (1, 0)}
        assert await wait_for(lambda: _is(counts(), moved)), await counts()
        summaries: list[dict] = []

        async def settled() -> bool:
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                summaries.extend(json.loads(m.value) for m in msgs if m.key == key_id.encode())
            last = summaries[-1] if summaries else {}
            return (last.get("turns"), last.get("feedback_up"), last.get("turns_by_strategy_model")) == (
                1, 1, {"KNOWLEDGE/llama-3.1-8b-instant": 1})

        assert await wait_for(settled, timeout=40), summaries[-1:]
    finally:
        await consumer.stop()
        await p.stop()
    await asyncio.sleep(2 * settings.feedback_attribution_interval_seconds)  # more rounds move nothing again
    assert await counts() == moved
    assert await pg.fetchval("SELECT pending FROM feedback_events WHERE event_id = $1", up.event_id) is False
    by_strategy = await analytics.GetMetrics(
        analytics_pb2.GetMetricsRequest(product_key_id=key_id, group_by=analytics_pb2.GROUP_BY_STRATEGY), metadata=admin, timeout=10)
    assert [(pt.group, pt.turns, pt.feedback_up) for pt in by_strategy.points] == [("KNOWLEDGE", 1, 1)]


async def test_minutely_summary_is_published_for_a_closed_minute(services, settings):
    key_id = f"min-{uuid.uuid4().hex[:8]}"
    past = (datetime.now(timezone.utc) - timedelta(minutes=3)).replace(second=10, microsecond=0)
    consumer = AIOKafkaConsumer(settings.topic("metrics_minutely"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    p = await producer(settings)
    try:
        for ms in (10.0, 20.0):
            await p.send_and_wait(settings.topic("chat_turns"), now_turn(key_id, ms, when=past).SerializeToString(),
                                  key=key_id.encode())
        summary = None
        deadline = time.monotonic() + 40
        while summary is None and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    if m.key == key_id.encode():
                        summary = json.loads(m.value)
        assert summary is not None, "no minutely summary"
        assert summary["turns"] == 2 and summary["minute"] == past.replace(second=0).isoformat()
        assert 0 < summary["total_ms"]["p50"] <= summary["total_ms"]["p99"]
    finally:
        await p.stop()
        await consumer.stop()


async def test_worker_liveness_and_lag_metric(services, test_env):
    port = test_env["PARLEY_WORKER_METRICS_PORT"]
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    assert health.status_code == 200 and health.json()["healthy"] is True
    assert "parley_worker_events_applied_total" in metrics


async def test_stream_metrics_includes_the_current_minute(services, settings, pg, analytics, admin):
    key_id = f"live-{uuid.uuid4().hex[:8]}"
    p = await producer(settings)
    try:
        await p.send_and_wait(settings.topic("chat_turns"), now_turn(key_id).SerializeToString(), key=key_id.encode())
    finally:
        await p.stop()
    assert await wait_for(lambda: _is(count_turns(pg, key_id), (1, 1)))
    stream = analytics.StreamMetrics(analytics_pb2.StreamMetricsRequest(product_key_id=key_id, interval_seconds=1),
                                     metadata=admin)
    first = await stream.read()
    stream.cancel()
    assert first.total.turns == 1
    current = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    assert first.points[-1].bucket_start.ToDatetime(tzinfo=timezone.utc) >= current - timedelta(minutes=1)



async def test_stream_metrics_ends_unavailable_with_a_retry_hint_when_the_service_drains(
        services, admin, key_a, test_env, tmp_path):
    """A dashboard's StreamMetrics never ends by itself: on SIGTERM the analytics service ends it with
    UNAVAILABLE and a retry-after (reconnect to another instance) at once, instead of holding the
    shutdown for the whole grace period and having gRPC cancel the stream."""
    from services.common.pb.parley.v1 import analytics_pb2_grpc
    from tests.conftest import stream_ended_by_sigterm

    error, ended = await stream_ended_by_sigterm(
        test_env, tmp_path, "analytics", lambda ch: analytics_pb2_grpc.AnalyticsServiceStub(ch).StreamMetrics(
            analytics_pb2.StreamMetricsRequest(product_key_id=key_a.id, interval_seconds=60), metadata=admin))
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert "shutting down" in error.details()
    assert dict(error.trailing_metadata() or ()).get("retry-after"), error.trailing_metadata()
    assert ended < 10, f"the stream held the shutdown {ended:.1f} s"


async def test_stage_latencies_are_taken_from_the_turns_where_the_stage_ran(services, settings, pg, analytics, admin):
    """Two cache hits (search, time to first token and LLM never ran: 0) and one miss: the stages'
    percentiles are the miss's, not the hits' zeros (p50 0.25 ms); the total counts every turn."""
    key_id = f"stages-{uuid.uuid4().hex[:8]}"
    miss = now_turn(key_id)
    miss.cache_status = common_pb2.CACHE_STATUS_MISS
    miss.timings.CopyFrom(common_pb2.Timings(total_ms=1300.0, search_ms=40.0, ttft_ms=800.0, llm_ms=1200.0))
    hits = [now_turn(key_id) for _ in range(2)]
    for hit in hits:
        hit.cache_status = common_pb2.CACHE_STATUS_HIT
        hit.timings.CopyFrom(common_pb2.Timings(total_ms=5.0))
    p = await producer(settings)
    try:
        for t in (miss, *hits):
            await p.send_and_wait(settings.topic("chat_turns"), t.SerializeToString(), key=key_id.encode())
    finally:
        await p.stop()
    assert await wait_for(lambda: _is(count_turns(pg, key_id), (3, 3)))
    total = (await analytics.GetMetrics(analytics_pb2.GetMetricsRequest(product_key_id=key_id), metadata=admin,
                                        timeout=10)).total
    assert (total.turns, total.cache_hits) == (3, 2)
    assert 800 <= total.ttft_ms.p50 < 1000 and 1200 <= total.llm_ms.p50 < 1500 and 40 <= total.search_ms.p50 < 50, total
    assert total.total_ms.p50 < 10 and total.total_ms.p99 >= 1300, total.total_ms
