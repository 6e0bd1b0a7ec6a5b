"""Runs the search strategy service: `python -m services.search`."""

from __future__ import annotations

from services.common import db
from services.common.grpc_server import ServiceSpec, bind_address, serve
from services.common.kafka import EventProducer
from services.common.pb.parley.v1 import search_pb2, search_pb2_grpc
from services.common.runner import run_service
from services.common.settings import Settings
from services.search.server import SearchDeps, SearchServicer


async def main(settings: Settings) -> None:
    deps = SearchDeps(producer=EventProducer(settings.kafka_bootstrap, client_id="parley-search"))
    servicer = SearchServicer(settings, deps)

    async def on_start() -> None:
        if deps.pool is None:
            deps.pool = await db.create_pool(settings.postgres_dsn)
        await deps.producer.start()

    async def on_stop() -> None:
        await deps.producer.stop()
        if deps.pool is not None:
            await deps.pool.close()

    async def check_postgres() -> None:
        await deps.pool.fetchval("SELECT 1")

    await serve(
        ServiceSpec(
            name="search",
            service_names=[search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name],
            register=lambda server: search_pb2_grpc.add_SearchServiceServicer_to_server(servicer, server),
            bind=bind_address(settings.grpc_bind_host, settings.search_addr),
            metrics_port=settings.search_metrics_port,
            on_start=on_start,
            on_stop=on_stop,
            checks={"postgres": check_postgres, "kafka": deps.producer.ping},
            grace_seconds=settings.shutdown_grace_seconds,
            max_message_bytes=settings.grpc_max_message_bytes,
        )
    )


if __name__ == "__main__":
    run_service("search", main)
