"""Runs the web scraping service: `python -m services.scraper`."""

from __future__ import annotations

from services.common.grpc_server import ServiceSpec, bind_address, serve
from services.common.pb.parley.v1 import scraper_pb2, scraper_pb2_grpc
from services.common.redis_client import create_redis
from services.common.runner import run_service
from services.common.settings import Settings
from services.scraper.server import ScraperServicer


async def main(settings: Settings) -> None:
    redis = create_redis(settings.redis_url)

    async def on_stop() -> None:
        await redis.aclose()

    await serve(
        ServiceSpec(
            name="scraper",
            service_names=[scraper_pb2.DESCRIPTOR.services_by_name["ScraperService"].full_name],
            register=lambda server: scraper_pb2_grpc.add_ScraperServiceServicer_to_server(ScraperServicer(), server),
            bind=bind_address(settings.grpc_bind_host, settings.scraper_addr),
            metrics_port=settings.scraper_metrics_port,
            on_start=redis.ping,
            on_stop=on_stop,
            checks={"redis": redis.ping},
            grace_seconds=settings.shutdown_grace_seconds,
            max_message_bytes=settings.grpc_max_message_bytes,
        )
    )


if __name__ == "__main__":
    run_service("scraper", main)
