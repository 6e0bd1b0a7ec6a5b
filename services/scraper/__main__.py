"""Runs the web scraping API: `python -m services.scraper` (the crawl worker is `services.scraper.worker`)."""

from __future__ import annotations

import asyncio
import logging

from services.common import db
from services.common.grpc_server import ServiceSpec, Transport, bind_address, serve
from services.common.kafka import EventProducer, LazyProducer
from services.common.pb.parley.v1 import scraper_pb2, scraper_pb2_grpc
from services.common.redis_client import create_redis
from services.common.runner import run_service
from services.scraper.settings import ScraperSettings
from services.scraper.fetching import new_fetcher
from services.scraper.isolation import Extractor
from services.common.product_keys import KeyValidator
from services.scraper.page_fetch import PageCache
from services.scraper.server import ScraperDeps, ScraperServicer


async def main(settings: ScraperSettings) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    client = create_redis(settings.redis_url)
    deps = ScraperDeps(
        producer=LazyProducer(EventProducer(settings.kafka_bootstrap, client_id="parley-scraper")),
        redis=client,
        fetcher=new_fetcher(settings),
        pages=PageCache(client),
        extractor=Extractor.from_settings(settings),
    )
    draining = asyncio.Event()
    servicer = ScraperServicer(settings, deps, draining)

    async def on_start() -> None:
        if deps.pool is None:
            deps.pool = await db.create_pool(settings.postgres_dsn, max_size=10)
        if deps.keys is None:
            deps.keys = KeyValidator(
                deps.redis, lambda: deps.pool, ttl_seconds=settings.key_cache_ttl_seconds,
                local_seconds=settings.key_local_cache_seconds, default_rate=settings.rate_limit_per_second,
                default_burst=settings.rate_limit_burst,
            )

    async def on_stop() -> None:
        await deps.producer.stop()
        await deps.fetcher.aclose()
        await deps.extractor.close()
        await deps.redis.aclose()
        if deps.pool is not None:
            await deps.pool.close()

    async def check_postgres() -> None:
        await db.ping(deps.pool)

    await serve(
        ServiceSpec(
            name="scraper",
            service_names=[scraper_pb2.DESCRIPTOR.services_by_name["ScraperService"].full_name],
            register=lambda server: scraper_pb2_grpc.add_ScraperServiceServicer_to_server(servicer, server),
            bind=bind_address(settings.grpc_bind_host, settings.scraper_addr),
            metrics_port=settings.scraper_metrics_port,
            on_start=on_start,
            on_stop=on_stop,
            # Jobs live in PostgreSQL: the one hard dependency. Without Kafka only StartCrawl is refused
            # (UNAVAILABLE; the producer starts on the next publish or probe), without Redis Fetch is not
            # cached and keys are checked in PostgreSQL.
            checks={"postgres": check_postgres},
            soft_checks={"kafka": deps.producer.ping, "redis": deps.redis.ping},
            grace_seconds=settings.shutdown_grace_seconds,
            max_message_bytes=settings.grpc_max_message_bytes,
            transport=Transport.from_settings(settings),
            draining=draining,
        )
    )


if __name__ == "__main__":
    run_service("scraper", main, ScraperSettings)
