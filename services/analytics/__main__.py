"""Runs the analytics API: `python -m services.analytics` (the stream worker is services.analytics.stream)."""

from __future__ import annotations

import asyncio

from services.analytics.live import StreamSlots
from services.analytics.server import AnalyticsDeps, AnalyticsServicer
from services.common import db
from services.common.grpc_server import ServiceSpec, Transport, bind_address, serve
from services.common.pb.parley.v1 import analytics_pb2, analytics_pb2_grpc
from services.common.product_keys import KeyValidator
from services.common.redis_client import create_redis
from services.common.runner import run_service
from services.analytics.settings import AnalyticsSettings


async def main(settings: AnalyticsSettings) -> None:
    deps = AnalyticsDeps()
    # Product keys: the shared Redis key cache (a soft dependency: PostgreSQL answers without it).
    redis = create_redis(settings.redis_url)

    async def on_start() -> None:
        if deps.pool is None:
            deps.pool = await db.create_pool(settings.postgres_dsn, statement_seconds=settings.analytics_statement_seconds)
        if deps.keys is None:
            deps.keys = KeyValidator(
                redis, lambda: deps.pool, ttl_seconds=settings.key_cache_ttl_seconds,
                local_seconds=settings.key_local_cache_seconds, default_rate=settings.rate_limit_per_second,
                default_burst=settings.rate_limit_burst,
            )

    async def on_stop() -> None:
        await redis.aclose()
        if deps.pool is not None:
            await deps.pool.close()

    async def check_postgres() -> None:
        await db.ping(deps.pool)

    draining = asyncio.Event()
    await serve(
        ServiceSpec(
            name="analytics",
            service_names=[analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].full_name],
            register=lambda server: analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(
                AnalyticsServicer(deps, settings.admin_token, draining,
                                  streams=StreamSlots(settings.metrics_streams_per_key,
                                                      settings.metrics_streams_per_process),
                                  queries=StreamSlots(settings.analytics_queries_per_key,
                                                      settings.analytics_queries_per_process,
                                                      what="analytics queries in flight"),
                                  pool_wait_seconds=settings.analytics_pool_acquire_seconds), server
            ),
            bind=bind_address(settings.grpc_bind_host, settings.analytics_addr),
            metrics_port=settings.analytics_metrics_port,
            on_start=on_start,
            on_stop=on_stop,
            checks={"postgres": check_postgres},
            grace_seconds=settings.shutdown_grace_seconds,
            max_message_bytes=settings.grpc_max_message_bytes,
            transport=Transport.from_settings(settings),
            draining=draining,
        )
    )


if __name__ == "__main__":
    run_service("analytics", main, AnalyticsSettings)
