"""The Faust app: agents that batch chat turns and feedback into PostgreSQL, exactly once in effect."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

import asyncpg
import faust
from aiohttp import web
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.analytics import histogram
from services.analytics.stream.decode import DeadLetter, InvalidEvent, decode_feedback, decode_turn
from services.analytics.stream.progress import (
    BATCH_SECONDS,
    DEAD_LETTERS,
    EVENTS_APPLIED,
    EVENTS_SKIPPED,
    Progress,
)
from services.analytics.stream.sink import Applied, MetricsSink, Position
from services.common.settings import Settings

logger = logging.getLogger(__name__)

MINUTE_SUMMARY = """
SELECT sum(turns)::bigint AS turns, sum(cache_hits)::bigint AS cache_hits, sum(errors)::bigint AS errors,
       sum(no_answers)::bigint AS no_answers, sum(feedback_up)::bigint AS feedback_up,
       sum(feedback_down)::bigint AS feedback_down, sum(tokens_in)::bigint AS tokens_in,
       sum(tokens_out)::bigint AS tokens_out, parley_hist_sum(total_hist) AS total_hist,
       jsonb_object_agg(strategy || '/' || model, turns) AS by_strategy_model
FROM metrics_minute WHERE product_key_id = $1 AND minute = $2
"""


def faust_broker(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


async def write_with_retry(write: Callable, records) -> Applied:
    """PostgreSQL going away must not drop a batch: retry with backoff until it is written.
    (The batch's offsets are committed to Kafka only after this returns.)"""
    delay = 0.2
    while True:
        try:
            return await write(records)
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
            logger.warning("writing a batch of %d failed (%s); retrying in %.1fs", len(records), exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def minute_summary_json(key_id: str, minute: datetime, row) -> bytes:
    hist = list(row["total_hist"] or [])
    return json.dumps({
        "product_key_id": key_id,
        "minute": minute.isoformat(),
        **{k: int(row[k] or 0) for k in ("turns", "cache_hits", "errors", "no_answers", "feedback_up",
                                          "feedback_down", "tokens_in", "tokens_out")},
        "total_ms": {f"p{int(q * 100)}": histogram.percentile(hist, q) for q in (0.5, 0.95, 0.99)},
        "turns_by_strategy_model": json.loads(row["by_strategy_model"] or "{}"),
        "published_at": datetime.now(timezone.utc).isoformat(),
    }).encode()


class WorkerHttp(Service):
    """/metrics for Prometheus and /healthz for the liveness probe (consumption progress)."""

    def __init__(self, port: int, progress: Progress, **kwargs) -> None:
        super().__init__(**kwargs)
        self._port = port
        self._progress = progress
        self._runner: web.AppRunner | None = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        ok, detail = self._progress.healthy()
        return web.json_response({"healthy": ok, "detail": detail}, status=200 if ok else 503)

    async def on_start(self) -> None:
        if not self._port:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "0.0.0.0", self._port).start()

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def create_app(settings: Settings) -> tuple[faust.App, list[Service]]:
    app = faust.App(
        settings.worker_app_id,
        broker=faust_broker(settings.kafka_bootstrap),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_every=settings.stream_batch_size,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4096, settings.stream_batch_size * 2),
        # A crashed worker's partitions move to a live one after this long, not Kafka's minutes.
        broker_session_timeout=settings.worker_session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, settings.worker_session_timeout_seconds / 3),
    )
    sink = MetricsSink(settings.postgres_dsn, settings.worker_app_id)
    progress = Progress(stall_seconds=settings.worker_stall_seconds)
    http = WorkerHttp(settings.worker_metrics_port, progress)
    dirty_minutes: set[tuple[str, datetime]] = set()

    def topic(name: str) -> faust.TopicT:
        return app.topic(settings.topic(name), value_type=bytes, key_type=bytes, partitions=settings.topic_partitions)

    turns_topic, feedback_topic = topic("chat_turns"), topic("feedback")
    deadletter_topic, minutely_topic = topic("deadletter"), topic("metrics_minutely")

    async def send_dead_letter(letter: DeadLetter) -> None:
        logger.warning("dead letter from %s[%d]@%d: %s", letter.topic, letter.partition, letter.offset, letter.reason)
        DEAD_LETTERS.labels(letter.topic).inc()
        await deadletter_topic.send(
            key=letter.key,
            value=letter.value or b"",
            headers=[
                ("reason", letter.reason.encode()),
                ("source-topic", letter.topic.encode()),
                ("source-partition", str(letter.partition).encode()),
                ("source-offset", str(letter.offset).encode()),
            ],
        )

    async def consume(stream, decode, write) -> None:
        """Batches of take(N, within=T): decode (undecodable -> dead letter), write once, advance."""
        async for events in stream.take_events(settings.stream_batch_size, within=settings.stream_batch_within_seconds):
            records = []
            for event in events:
                msg = event.message
                pos = Position(msg.topic, msg.partition, msg.offset)
                try:
                    records.append((pos, decode(event.value)))
                except InvalidEvent as exc:
                    await send_dead_letter(DeadLetter(msg.topic, msg.partition, msg.offset, event.key, event.value, str(exc)))
                    records.append((pos, None))
            started = time.perf_counter()
            applied = await write_with_retry(write, records)
            topic_name = records[0][0].topic
            BATCH_SECONDS.labels(topic_name).set(time.perf_counter() - started)
            EVENTS_APPLIED.labels(topic_name).inc(applied.applied)
            EVENTS_SKIPPED.labels(topic_name).inc(applied.skipped)
            dirty_minutes.update(applied.minutes)
            for pos, _ in records:
                progress.advanced(pos.topic, pos.partition, pos.offset + 1)

    @app.agent(turns_topic, name="chat-turns")
    async def chat_turns(stream):
        await consume(stream, decode_turn, sink.write_turns)

    @app.agent(feedback_topic, name="feedback")
    async def feedback(stream):
        await consume(stream, decode_feedback, sink.write_feedback)

    @app.on_partitions_assigned.connect
    async def resume_from_stored_offsets(_app, assigned, **_kwargs) -> None:
        """Resume where the last committed PostgreSQL transaction ended, whatever Kafka says."""
        stored = await sink.stored_offsets()
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is not None:
                await app.consumer.seek(tp, offset)
                progress.advanced(tp.topic, tp.partition, offset)

    @app.timer(interval=settings.worker_lag_interval_seconds)
    async def observe_lag() -> None:
        assigned = app.consumer.assignment()
        for tp in assigned:
            try:
                position = await app.consumer.position(tp)
                progress.observe_lag(tp.topic, tp.partition, app.consumer.highwater(tp), position)
            except Exception as exc:  # noqa: BLE001 - a rebalance in progress; next tick tries again
                logger.debug("lag of %s unavailable: %s", tp, exc)
        for topic_name, partition in list(progress.lag):
            if not any(tp.topic == topic_name and tp.partition == partition for tp in assigned):
                progress.forget(topic_name, partition)

    @app.timer(interval=settings.minutely_publish_interval_seconds)
    async def publish_minutely() -> None:
        """A JSON summary per key and minute once the minute has closed; again if late events change it."""
        closed_before = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        ready = sorted(m for m in dirty_minutes if m[1] < closed_before)
        for key_id, minute in ready:
            row = await sink.pool.fetchrow(MINUTE_SUMMARY, key_id, minute)
            await minutely_topic.send(key=key_id.encode(), value=minute_summary_json(key_id, minute, row))
            dirty_minutes.discard((key_id, minute))

    return app, [sink, http]
