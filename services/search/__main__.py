"""Runs the search strategy service: `python -m services.search`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

from services.common import db
from services.common.grpc_server import ServiceSpec, Transport, bind_address, channel, check_serving, serve
from services.common.kafka import EventProducer, LazyProducer
from services.common.pb.parley.v1 import search_pb2, search_pb2_grpc
from services.common.redis_client import create_redis
from services.common.runner import run_service
from services.search.settings import SearchSettings
from services.common.knowledge_events import KnowledgeFollower
from services.search.dense import DenseRetrieval
from services.search.spelling import word_frequencies
from services.search.indexing import Indexing
from services.search.keys import key_hash_of
from services.search.planner import Planner
from services.search.server import SearchDeps, SearchServicer

logger = logging.getLogger(__name__)
SCRAPER_CHECK_SECONDS = 5.0


async def main(settings: SearchSettings) -> None:
    # Kafka and Redis are soft: Plan is answered from PostgreSQL (keys and rate limits fall back
    # without Redis); the producer of knowledge events starts on its first use.
    deps = SearchDeps(producer=LazyProducer(EventProducer(settings.kafka_bootstrap, client_id="parley-search")))
    servicer = SearchServicer(settings, deps)
    follower: KnowledgeFollower | None = None
    watcher: asyncio.Task | None = None

    async def watch_scraper() -> None:
        """STRATEGY_WEB is offered only while the scraper service answers (it is not a dependency)."""
        async with channel(settings.scraper_addr) as ch:
            while True:
                try:
                    await check_serving(ch, "scraper")
                    available = True
                except Exception:  # noqa: BLE001 - not serving, not reachable, or not deployed
                    available = False
                if available != deps.web_available:
                    logger.info("scraper service %s: web strategy %s", settings.scraper_addr,
                                "offered" if available else "not offered")
                deps.web_available = available
                await asyncio.sleep(SCRAPER_CHECK_SECONDS)

    async def on_start() -> None:
        nonlocal follower, watcher
        if deps.pool is None:
            # Its statements set no session state (no SET, LISTEN, advisory lock or cursor; transactions
            # are managed): not reset on release, so each of Plan's two statements costs one round trip,
            # not two (README "Plan at concurrency 1").
            deps.pool = await db.create_pool(settings.postgres_dsn, reset_session=False)
        if deps.redis is None:
            deps.redis = create_redis(settings.redis_url)
        if deps.indexing is None:
            deps.indexing = Indexing(deps.pool)
        if deps.planner is None:
            dense = None
            if settings.dense_retrieval:    # the model is loaded here, before the service answers
                dense = await DenseRetrieval.load(deps.pool, settings.vector_index_max_bytes,
                                                  settings.dense_candidates)
            deps.planner = Planner(settings, deps.pool, deps.redis, web_available=lambda: deps.web_available,
                                   dense=dense)
            if settings.spelling_correction:     # the English word list (~0.4 s), before the service answers
                await asyncio.to_thread(word_frequencies)
        if follower is None:
            cache, pool = deps.planner.cache, deps.pool

            dense = deps.planner.dense

            async def forget_key(event) -> None:
                """The indexer's changes (admin RPCs here also invalidate directly, before answering)."""
                if dense is not None:
                    dense.index.forget(event.product_key_id, event.knowledge_version)
                key_hash = await key_hash_of(pool, event.product_key_id)
                if key_hash is not None:
                    await cache.invalidate(key_hash, event.knowledge_version)

            candidate = KnowledgeFollower(settings.kafka_bootstrap, settings.topic("knowledge_updated"), forget_key,
                                          service="search")
            await candidate.start()
            follower = candidate
        if watcher is None:
            watcher = asyncio.get_running_loop().create_task(watch_scraper())
        # What is alive now (modules, the model, the tokenizer, the gRPC server) lives as long as the
        # process: frozen, it is out of the cyclic collector's sight, so that a full collection in the
        # middle of a Plan walks only what calls allocated since: ~250 objects after 1000 Plans, 0.1 ms,
        # instead of 27-37 ms over the ~65k objects of a started process (measured in process here).
        gc.collect()
        gc.freeze()

    async def on_stop() -> None:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if follower is not None:
            await follower.stop()
        await deps.producer.stop()
        if deps.redis is not None:
            await deps.redis.aclose()
        if deps.pool is not None:
            await deps.pool.close()

    async def check_postgres() -> None:
        await db.ping(deps.pool)

    async def check_redis() -> None:
        await deps.redis.ping()

    async def check_follower() -> None:
        if follower is None:
            raise RuntimeError("knowledge follower not started")
        await follower.ping()

    await serve(
        ServiceSpec(
            name="search",
            service_names=[search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name],
            register=lambda server: search_pb2_grpc.add_SearchServiceServicer_to_server(servicer, server),
            bind=bind_address(settings.grpc_bind_host, settings.search_addr),
            metrics_port=settings.search_metrics_port,
            on_start=on_start,
            on_stop=on_stop,
            checks={"postgres": check_postgres},
            # Soft: without Redis keys and limits fall back, without Kafka only admin events wait and the
            # follower hears of no change the indexer makes (a health detail, as in response).
            soft_checks={"redis": check_redis, "kafka": deps.producer.ping, "knowledge-follower": check_follower},
            grace_seconds=settings.shutdown_grace_seconds,
            max_message_bytes=settings.grpc_max_message_bytes,
            transport=Transport.from_settings(settings),
        )
    )


if __name__ == "__main__":
    run_service("search", main, SearchSettings)
