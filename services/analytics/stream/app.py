"""The Faust app: topics and the agent that batches chat turns into PostgreSQL."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import faust

from services.analytics.stream.decode import DeadLetter, InvalidEvent, decode_turn
from services.analytics.stream.sink import MetricsSink, Position
from services.common.settings import Settings

logger = logging.getLogger(__name__)


async def write_with_retry(sink: MetricsSink, turns, positions) -> None:
    """PostgreSQL going away must not drop a batch: retry with backoff until it is written.
    (The batch's offsets are committed to Kafka only after this returns.)"""
    delay = 0.2
    while True:
        try:
            await sink.write_turns(turns, positions)
            logger.debug("wrote %d chat turns", len(turns))
            return
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
            logger.warning("writing %d turns failed (%s); retrying in %.1fs", len(turns), exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def faust_broker(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


def create_app(settings: Settings) -> tuple[faust.App, MetricsSink]:
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
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4096, settings.stream_batch_size * 2),
    )
    sink = MetricsSink(settings.postgres_dsn, settings.worker_app_id)
    turns_topic = app.topic(settings.topic("chat_turns"), value_type=bytes, key_type=bytes,
                            partitions=settings.topic_partitions)
    deadletter_topic = app.topic(settings.topic("deadletter"), value_type=bytes, key_type=bytes,
                                 partitions=settings.topic_partitions)

    async def send_dead_letter(letter: DeadLetter) -> None:
        logger.warning("dead letter from %s[%d]@%d: %s", letter.topic, letter.partition, letter.offset, letter.reason)
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

    @app.agent(turns_topic, name="chat-turns")
    async def chat_turns(stream):
        async for events in stream.take_events(settings.stream_batch_size, within=settings.stream_batch_within_seconds):
            turns, positions = [], []
            for event in events:
                msg = event.message
                positions.append(Position(msg.topic, msg.partition, msg.offset))
                try:
                    turns.append(decode_turn(event.value))
                except InvalidEvent as exc:
                    await send_dead_letter(DeadLetter(msg.topic, msg.partition, msg.offset, event.key, event.value, str(exc)))
            await write_with_retry(sink, turns, positions)

    return app, sink
