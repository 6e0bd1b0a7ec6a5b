"""The Faust app: chat turns and feedback into PostgreSQL exactly once in effect, timers and health."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import faust
from aiohttp import web
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.analytics.stream.apply import BatchApplier
from services.analytics.stream.consumer import EventConsumer, Route
from services.analytics.stream.decode import FEEDBACK_TYPE, TURN_TYPE, DeadLetter, decode_feedback, decode_turn
from services.analytics.stream.minutely import MinutelySummaries
from services.analytics.stream.progress import DEAD_LETTERS, Progress
from services.analytics.stream.retention import Retention, RetentionRunner
from services.analytics.stream.rows import TurnBatch
from services.analytics.stream.sink import MetricsSink
from services.analytics.stream.startup import KafkaReachable
from services.common.kafka import DeadLetters
from services.analytics.settings import AnalyticsSettings

logger = logging.getLogger(__name__)

def faust_broker(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


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


class StreamDeadLetters(Service):
    """parley.deadletter.v1 for the worker: a dead letter counts as handled once the broker has it.
    The producer starts on first use, so the worker's start does not wait on it."""

    def __init__(self, bootstrap: str, topic: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self._letters = DeadLetters(bootstrap, topic, client_id="parley-worker-deadletters")

    async def on_shutdown(self) -> None:
        await self._letters.close()

    async def send(self, letter: DeadLetter) -> None:
        logger.warning("dead letter from %s[%d]@%d: %s", letter.topic, letter.partition, letter.offset, letter.reason)
        if await self._letters.send(letter.value or b"", letter.reason, letter.topic, letter.partition, letter.offset,
                                    key=letter.key):
            DEAD_LETTERS.labels(letter.topic).inc()     # else Kafka refused it for good: counted lost there


def create_app(settings: AnalyticsSettings) -> tuple[faust.App, list[Service]]:
    app = faust.App(
        settings.worker_app_id,
        broker=faust_broker(settings.kafka_bootstrap),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        # Faust keeps a data directory even with in-memory tables: under the temp dir, not the
        # working directory (a read-only root in a container, the checkout locally).
        datadir=str(Path(tempfile.gettempdir()) / f"parley-faust-{settings.worker_app_id}"),
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        producer_acks=-1,
        broker_session_timeout=settings.worker_session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, settings.worker_session_timeout_seconds / 3),
    )
    sink = MetricsSink(settings.postgres_dsn, settings.worker_app_id,
                       pending_horizon_seconds=settings.feedback_pending_horizon_seconds)
    progress = Progress(stall_seconds=settings.worker_stall_seconds)
    http = WorkerHttp(settings.worker_metrics_port, progress)
    dead_letters = StreamDeadLetters(settings.kafka_bootstrap, settings.topic("deadletter"))
    minutely_topic = app.topic(settings.topic("metrics_minutely"), value_type=bytes, key_type=bytes,
                               partitions=settings.topic_partitions)
    summaries = MinutelySummaries(lambda *args: sink.pool.fetchrow(*args),
                                  lambda key, value: minutely_topic.send(key=key, value=value))

    def applier(write) -> BatchApplier:
        return BatchApplier(write, dead_letters.send, max_wait=settings.stream_retry_max_seconds,
                            on_failure=progress.failing, on_recovery=progress.recovered)

    # The turns and feedback are consumed outside Faust's per-event stream path (see consumer.py),
    # in their own Kafka group: Faust's own consumer group runs Faust's partition assignor.
    events = EventConsumer(
        bootstrap=settings.kafka_bootstrap,
        group_id=f"{settings.worker_app_id}-events",
        routes={
            settings.topic("chat_turns"): Route(decode_turn, applier(sink.write_turns), TurnBatch, TURN_TYPE),
            settings.topic("feedback"): Route(decode_feedback, applier(sink.write_feedback), event_type=FEEDBACK_TYPE),
        },
        progress=progress,
        stored_offsets=sink.stored_offsets,
        lower_offset=sink.lower_offset,
        send_dead_letter=dead_letters.send,
        on_minutes=summaries.mark,
        batch_size=settings.stream_batch_size,
        lagging_batches=settings.stream_lagging_batches,
        buffer_events=settings.stream_buffer_events,
        fetch_max_bytes=settings.stream_fetch_max_bytes,
        partition_fetch_bytes=settings.stream_partition_fetch_bytes,
        session_timeout_seconds=settings.worker_session_timeout_seconds,
        max_ahead_seconds=settings.stream_max_ahead_seconds,
    )
    retention = RetentionRunner(
        Retention(None, turns_days=settings.retention_turns_days, metrics_days=settings.retention_metrics_days,
                  batch_rows=settings.retention_batch_rows),
        settings.retention_interval_seconds, lambda: sink.pool)
    sink.add_dependency(dead_letters)
    sink.add_dependency(events)  # started after the pool, stopped before it
    sink.add_dependency(retention)

    @app.timer(interval=settings.worker_lag_interval_seconds)
    async def observe_lag() -> None:
        await events.observe_lag()

    @app.timer(interval=settings.feedback_attribution_interval_seconds)
    async def attribute_pending_feedback() -> None:
        """Feedback applied before the turn it rates (another topic, another writer) was counted
        under UNKNOWN: once the turn is stored, its counts move to the turn's strategy and model (if
        it is within the horizon: past it, the feedback stays under UNKNOWN and is looked at no more)."""
        try:
            summaries.mark(await sink.attribute_pending_feedback())
        except Exception as exc:  # noqa: BLE001 - PostgreSQL away: the feedback stays pending, tried again
            logger.warning("pending feedback not attributed yet: %s", exc)

    @app.timer(interval=settings.minutely_publish_interval_seconds)
    async def publish_minutely() -> None:
        """A JSON summary per key and minute once the minute has closed; again if late events change it."""
        await summaries.publish()

    # /healthz first, so it answers while the start waits for a broker; then the wait; then the rest
    # (the app itself starts after these: faust.Worker starts its services before the app).
    return app, [http, KafkaReachable(settings.kafka_bootstrap, progress), sink]
