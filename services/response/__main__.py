"""Runs the response generation service: `python -m services.response`."""

from __future__ import annotations

import logging
from pathlib import Path

from services.common.grpc_server import ServiceSpec, Transport, bind_address, channel, check_serving, port_of, serve
from services.common.kafka import EventProducer
from services.common.knowledge_events import KnowledgeFollower
from services.common.outbox import Outbox
from services.common.pb.parley.v1 import (response_pb2, response_pb2_grpc, scraper_pb2, scraper_pb2_grpc, search_pb2,
                                         search_pb2_grpc)
from services.common.redis_client import create_redis
from services.common.runner import run_service
from services.response.settings import ResponseSettings
from services.response.admission import Admission
from services.response.answer import build_engine, build_store
from services.response.search_client import SearchClient
from services.response.server import ResponseServicer
from services.response.web import WebPages

logger = logging.getLogger(__name__)


async def main(settings: ResponseSettings) -> None:
    producer = EventProducer(settings.kafka_bootstrap, client_id="parley-response")
    # Answers never wait on Kafka: events go to a local outbox, delivered in the background.
    outbox = Outbox(Path(settings.outbox_dir) / f"response-{port_of(settings.response_addr)}.sqlite", producer,
                    name="response", max_events=settings.outbox_max_events, max_bytes=settings.outbox_max_bytes,
                    max_memory_events=settings.outbox_max_memory_events, batch=settings.outbox_batch,
                    synchronous=settings.outbox_synchronous)
    search_channel = channel(settings.search_addr, settings.grpc_max_message_bytes,
                             retry=[(search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name, "Plan")])
    redis = create_redis(settings.redis_url)
    store = build_store(settings, redis)
    # The scraper is optional: without it the web strategy answers NO_ANSWER (not a readiness check).
    scraper_channel = channel(settings.scraper_addr, settings.grpc_max_message_bytes,
                              retry=[(scraper_pb2.DESCRIPTOR.services_by_name["ScraperService"].full_name, "Fetch")])
    web = WebPages(scraper_pb2_grpc.ScraperServiceStub(scraper_channel), settings.max_passages)
    engine = build_engine(settings, SearchClient(search_pb2_grpc.SearchServiceStub(search_channel), settings.admin_token), store, outbox,
                          web)
    engine.admission = Admission(settings, redis, lambda: engine.in_flight)

    async def forget_key(event) -> None:
        dropped = await store.forget_key(event.product_key_id, event.knowledge_version)
        logger.info("knowledge of %s is now version %s (%s); dropped %d pointer(s)",
                    event.product_key_id, event.knowledge_version, event.reason, dropped)

    follower = KnowledgeFollower(settings.kafka_bootstrap, settings.topic("knowledge_updated"), forget_key,
                                 service="response")
    if engine.llm is not None:
        logger.info("answering with Groq (%s / %s)", settings.llm_small_model, settings.llm_large_model)
    else:
        logger.info("no GROQ_API_KEY: answering with the extractive answerer")

    async def on_start() -> None:
        # Nothing here waits on Kafka or Redis: both are soft dependencies of the chat path.
        outbox.start()
        await follower.start()

    async def on_stop() -> None:
        await follower.stop()           # it drops pointers through the store: stopped before the store
        await engine.drain()            # then the turns' last writes and events, before the outbox stops
        await engine.admission.close()
        await store.close()
        await outbox.stop(drain_seconds=settings.shutdown_grace_seconds / 2)
        await search_channel.close()
        await scraper_channel.close()
        if engine.llm is not None:
            await engine.llm.client.close()
        await redis.aclose()

    async def check_search() -> None:
        await check_serving(search_channel, "search")

    async def check_redis() -> None:
        await redis.ping()

    async def check_answering() -> None:
        # NOT_SERVING only when nothing can be answered: neither a plan (search) nor a cache hit (Redis).
        try:
            await check_search()
        except Exception as search_down:  # noqa: BLE001
            try:
                await check_redis()
            except Exception as redis_down:  # noqa: BLE001
                raise RuntimeError(f"search ({search_down!r}) and Redis ({redis_down!r}) are both down") from None

    await serve(
        ServiceSpec(
            name="response",
            service_names=[response_pb2.DESCRIPTOR.services_by_name["ResponseService"].full_name],
            register=lambda server: response_pb2_grpc.add_ResponseServiceServicer_to_server(
                ResponseServicer(engine), server
            ),
            bind=bind_address(settings.grpc_bind_host, settings.response_addr),
            metrics_port=settings.response_metrics_port,
            on_start=on_start,
            on_stop=on_stop,
            checks={"answering": check_answering},
            soft_checks={"kafka": producer.ping, "outbox": outbox.ping, "knowledge-follower": follower.ping,
                         "redis": check_redis, "redis-writes": store.check_writes, "search": check_search,
                         **({"llm-key": engine.llm.check_key} if engine.llm is not None else {})},
            grace_seconds=settings.shutdown_grace_seconds,
            max_message_bytes=settings.grpc_max_message_bytes,
            transport=Transport.from_settings(settings),
        )
    )


if __name__ == "__main__":
    run_service("response", main, ResponseSettings)
