"""Scenario "stream": the Faust worker's sustained rate from Kafka into PostgreSQL against a raw
aiokafka consumer on the same topic (the ceiling), freshness from occurred_at to visible in
GetMetrics, and the batch statement against one INSERT per row - all in one run."""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table

from bench.harness import bench_env, console
from bench.load import quantile
from services.analytics.stream.sink import WRITE_TURNS, turn_columns
from services.common import db
from services.common.grpc_server import channel
from services.common.kafka import new_event_id
from services.common.pb.parley.v1 import analytics_pb2, analytics_pb2_grpc, common_pb2, events_pb2
from services.common.settings import Settings
from services.common.topics import create_all_topics
from services.launcher import Launcher

NAME = "stream"
EVENTS = 100_000


def turn(key_id: str, i: int, when: datetime | None = None) -> events_pb2.ChatTurn:
    t = events_pb2.ChatTurn(
        event_id=new_event_id(), product_key_id=key_id, session_id=f"s{i % 500}", request_id=uuid.uuid4().hex,
        message=f"question number {i % 300}", answer="an answer of ordinary length, with a citation [12]",
        strategy=common_pb2.STRATEGY_KNOWLEDGE if i % 7 else common_pb2.STRATEGY_NO_ANSWER,
        model="extractive", cache_status=common_pb2.CACHE_STATUS_HIT if i % 3 == 0 else common_pb2.CACHE_STATUS_MISS,
        timings=common_pb2.Timings(total_ms=5 + i % 200, search_ms=2 + i % 20, ttft_ms=1 + i % 30, llm_ms=3 + i % 150),
        usage=common_pb2.TokenUsage(prompt_tokens=300, completion_tokens=60), source_ids=["12", "14"],
    )
    t.occurred_at.FromDatetime(when or datetime.now(timezone.utc))
    return t


async def produce(settings: Settings, values: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        for i in range(0, len(values), 5000):
            await asyncio.gather(*[await producer.send(settings.topic("chat_turns"), v, key=k)
                                   for k, v in values[i:i + 5000]])
    finally:
        await producer.stop()


async def raw_consume_rate(settings: Settings, n: int) -> float:
    """Messages per second of a bare aiokafka consumer reading the topic from the start (no decode, no writes)."""
    consumer = AIOKafkaConsumer(settings.topic("chat_turns"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=f"raw-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest",
                                enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        seen, first = 0, None
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if first is None and batch:
                first = time.perf_counter()
            seen += sum(len(m) for m in batch.values())
        return n / (time.perf_counter() - first)
    finally:
        await consumer.stop()


async def wait_grpc(addr: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with channel(addr) as ch:
        while True:
            try:
                reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except Exception:  # noqa: BLE001 - starting
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{addr} not serving")
            await asyncio.sleep(0.2)


async def worker_rate(settings: Settings, pool: asyncpg.Pool, key_id: str, n: int) -> float:
    """Events per second the worker applies, from its first applied batch to the last event."""
    first = None
    while True:
        done = await pool.fetchval("SELECT count(*) FROM conversations WHERE product_key_id = $1", key_id)
        now = time.perf_counter()
        if done and first is None:
            first, first_done = now, done
        if done >= n:
            return (n - first_done) / (now - first) if now > first else float("inf")
        await asyncio.sleep(0.05)


async def freshness(settings: Settings, probes: int = 20) -> list[float]:
    """Seconds from a turn's occurred_at to its being counted by GetMetrics, one fresh key per probe."""
    results = []
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        async with channel(settings.analytics_addr) as ch:
            stub = analytics_pb2_grpc.AnalyticsServiceStub(ch)
            for i in range(probes):
                key_id = f"fresh-{uuid.uuid4().hex[:8]}"
                t = turn(key_id, i)
                sent = time.time()
                t.occurred_at.FromNanoseconds(int(sent * 1e9))
                await producer.send(settings.topic("chat_turns"), t.SerializeToString(), key=key_id.encode())
                while True:
                    reply = await stub.GetMetrics(analytics_pb2.GetMetricsRequest(product_key_id=key_id),
                                                  metadata=(("x-parley-admin-token", settings.admin_token),), timeout=5)
                    if reply.total.turns == 1:
                        results.append(time.time() - sent)
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)
    finally:
        await producer.stop()
    return results


CONVERSATIONS_ONLY = WRITE_TURNS[: WRITE_TURNS.index("    RETURNING event_id")].replace(
    "), inserted AS (\n", ")\n", 1)


async def insert_comparison(pool: asyncpg.Pool, rows: int = 20_000, naive_rows: int = 2_000) -> dict:
    """Rows per second: the worker's batch statement (conversations + metrics in one statement), the same
    multi-row insert into conversations alone, and one INSERT per row into conversations."""
    key_id = f"ins-{uuid.uuid4().hex[:8]}"
    batch = [turn(key_id, i) for i in range(rows)]
    async with pool.acquire() as conn:
        t0 = time.perf_counter()
        for i in range(0, rows, 1000):
            async with conn.transaction():
                await conn.execute(WRITE_TURNS, *turn_columns(batch[i:i + 1000]))
        batched = rows / (time.perf_counter() - t0)
        multi = [turn(key_id, i) for i in range(rows)]
        t0 = time.perf_counter()
        for i in range(0, rows, 1000):
            await conn.execute(CONVERSATIONS_ONLY, *turn_columns(multi[i:i + 1000]))
        multi_row = rows / (time.perf_counter() - t0)
        naive = [turn(key_id, i) for i in range(naive_rows)]
        t0 = time.perf_counter()
        for t in naive:
            await conn.execute(
                "INSERT INTO conversations (event_id, product_key_id, session_id, request_id, occurred_at, message,"
                " answer, strategy, model, cache_status, error_code, total_ms, ttft_ms, search_ms, llm_ms, tokens_in,"
                " tokens_out, cost_usd, source_ids) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,"
                "$17,$18,$19)",
                t.event_id, t.product_key_id, t.session_id, t.request_id, t.occurred_at.ToDatetime(tzinfo=timezone.utc),
                t.message, t.answer, "KNOWLEDGE", t.model, "MISS", "", t.timings.total_ms, t.timings.ttft_ms,
                t.timings.search_ms, t.timings.llm_ms, 300, 60, 0.0, list(t.source_ids),
            )
        per_row = naive_rows / (time.perf_counter() - t0)
    return {"batch_rows_per_s": batched, "multi_row_rows_per_s": multi_row, "per_row_rows_per_s": per_row,
            "ratio": batched / per_row, "multi_row_ratio": multi_row / per_row}


async def run(seconds: float, concurrencies: list[int]) -> dict:
    env = {**bench_env(), "PARLEY_STREAM_BATCH_SIZE": "5000", "PARLEY_STREAM_BATCH_WITHIN_SECONDS": "0.2"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    settings = Settings()
    await db.migrate(settings.postgres_dsn)
    await create_all_topics(settings)
    pool = await db.create_pool(settings.postgres_dsn, min_size=1, max_size=4)
    launcher = Launcher(Path(tempfile.mkdtemp(prefix="parley-bench-stream-")), env=env)
    try:
        key_id = f"rate-{uuid.uuid4().hex[:8]}"
        console.print(f"producing {EVENTS} chat turns ...")
        values = [(key_id.encode(), turn(key_id, i).SerializeToString()) for i in range(EVENTS)]
        await produce(settings, values)
        console.print("raw aiokafka consumer (ceiling) ...")
        ceiling = await raw_consume_rate(settings, EVENTS)
        console.print("starting the worker and the analytics API; measuring the worker ...")
        launcher.start(["worker", "analytics"])
        rate = await worker_rate(settings, pool, key_id, EVENTS)
        await wait_grpc(settings.analytics_addr)
        counted = int(await pool.fetchval("SELECT sum(turns) FROM metrics_minute WHERE product_key_id = $1", key_id))
        console.print("freshness probes ...")
        fresh = sorted(await freshness(settings))
        console.print("batch statement vs one INSERT per row ...")
        inserts = await insert_comparison(pool)
    finally:
        launcher.stop()
        await pool.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    table = Table("measure", "value", title="Stream processor: Kafka -> PostgreSQL")
    table.add_row("events", f"{EVENTS} (counted {counted})")
    table.add_row("worker events/s", f"{rate:,.0f}")
    table.add_row("raw aiokafka consumer msgs/s", f"{ceiling:,.0f}")
    table.add_row("worker / raw", f"{rate / ceiling:.3f}")
    table.add_row("freshness p50 / p99 s", f"{statistics.median(fresh):.3f} / {quantile(fresh, 0.99):.3f}")
    table.add_row("batch statement rows/s (conversations + metrics)", f"{inserts['batch_rows_per_s']:,.0f}")
    table.add_row("multi-row insert, conversations alone rows/s", f"{inserts['multi_row_rows_per_s']:,.0f}")
    table.add_row("one INSERT per row rows/s", f"{inserts['per_row_rows_per_s']:,.0f}")
    table.add_row("batch statement / per row", f"{inserts['ratio']:.1f}x")
    table.add_row("multi-row / per row (conversations alone)", f"{inserts['multi_row_ratio']:.1f}x")
    console.print(table)
    return {
        "scenario": NAME, "events": EVENTS, "counted": counted, "worker_events_per_s": rate,
        "raw_consumer_per_s": ceiling, "worker_over_raw": rate / ceiling,
        "freshness_s": {"p50": statistics.median(fresh), "p99": quantile(fresh, 0.99), "samples": fresh},
        "inserts": inserts,
    }
