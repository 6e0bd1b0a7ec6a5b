"""The Faust app: chat turns and feedback into PostgreSQL exactly once in effect, timers and health."""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import faust
from aiohttp import web
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.analytics import histogram
from services.analytics.stream.apply import BatchApplier
from services.analytics.stream.consumer import EventConsumer, Route
from services.analytics.stream.decode import DeadLetter, decode_feedback, decode_turn
from services.analytics.stream.progress import DEAD_LETTERS, Progress
from services.analytics.stream.rows import TurnBatch
from services.analytics.stream.sink import MetricsSink
from services.analytics.stream.startup import KafkaReachable
from services.common.kafka import DeadLetters
from services.analytics.settings import AnalyticsSettings

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
    sink = MetricsSink(settings.postgres_dsn, settings.worker_app_id)
    progress = Progress(stall_seconds=settings.worker_stall_seconds)
    http = WorkerHttp(settings.worker_metrics_port, progress)
    dead_letters = StreamDeadLetters(settings.kafka_bootstrap, settings.topic("deadletter"))
    dirty_minutes: set[tuple[str, datetime]] = set()
    minutely_topic = app.topic(settings.topic("metrics_minutely"), value_type=bytes, key_type=bytes,
                               partitions=settings.topic_partitions)

    def applier(write) -> BatchApplier:
        return BatchApplier(write, dead_letters.send, max_wait=settings.stream_retry_max_seconds,
                            on_failure=progress.failing, on_recovery=progress.recovered)

    # The turns and feedback are consumed outside Faust's per-event stream path (see consumer.py),
    # in their own Kafka group: Faust's own consumer group runs Faust's partition assignor.
    events = EventConsumer(
        bootstrap=settings.kafka_bootstrap,
        group_id=f"{settings.worker_app_id}-events",
        routes={
            settings.topic("chat_turns"): Route(decode_turn, applier(sink.write_turns), TurnBatch),
            settings.topic("feedback"): Route(decode_feedback, applier(sink.write_feedback)),
        },
        progress=progress,
        stored_offsets=sink.stored_offsets,
        lower_offset=sink.lower_offset,
        send_dead_letter=dead_letters.send,
        on_minutes=dirty_minutes.update,
        batch_size=settings.stream_batch_size,
        lagging_batches=settings.stream_lagging_batches,
        buffer_events=settings.stream_buffer_events,
        fetch_max_bytes=settings.stream_fetch_max_bytes,
        partition_fetch_bytes=settings.stream_partition_fetch_bytes,
        session_timeout_seconds=settings.worker_session_timeout_seconds,
    )
    sink.add_dependency(dead_letters)
    sink.add_dependency(events)  # started after the pool, stopped before it

    @app.timer(interval=settings.worker_lag_interval_seconds)
    async def observe_lag() -> None:
        await events.observe_lag()

    @app.timer(interval=settings.feedback_attribution_interval_seconds)
    async def attribute_pending_feedback() -> None:
        """Feedback applied before the turn it rates (another topic, another writer) was counted
        under UNKNOWN: once the turn is stored, its counts move to the turn's strategy and model."""
        try:
            dirty_minutes.update(await sink.attribute_pending_feedback())
        except Exception as exc:  # noqa: BLE001 - PostgreSQL away: the feedback stays pending, tried again
            logger.warning("pending feedback not attributed yet: %s", exc)

    @app.timer(interval=settings.minutely_publish_interval_seconds)
    async def publish_minutely() -> None:
        """A JSON summary per key and minute once the minute has closed; again if late events change it."""
        closed_before = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        ready = sorted(m for m in dirty_minutes if m[1] < closed_before)
        for key_id, minute in ready:
            try:
                row = await sink.pool.fetchrow(MINUTE_SUMMARY, key_id, minute)
                await minutely_topic.send(key=key_id.encode(), value=minute_summary_json(key_id, minute, row))
            except Exception as exc:  # noqa: BLE001 - PostgreSQL or Kafka away: the minute stays dirty
                logger.warning("minutely summary of %s %s not published yet: %s", key_id, minute, exc)
                return
            dirty_minutes.discard((key_id, minute))

    # /healthz first, so it answers while the start waits for a broker; then the wait; then the rest
    # (the app itself starts after these: faust.Worker starts its services before the app).
    return app, [http, KafkaReachable(settings.kafka_bootstrap, progress), sink]
