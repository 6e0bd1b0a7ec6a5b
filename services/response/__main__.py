"""Runs the response generation service: `python -m services.response`."""

from __future__ import annotations

from services.common.grpc_server import ServiceSpec, bind_address, channel, check_serving, serve
from services.common.kafka import EventProducer
from services.common.pb.parley.v1 import response_pb2, response_pb2_grpc, search_pb2_grpc
from services.common.runner import run_service
from services.common.settings import Settings
from services.response.answer import ChatEngine
from services.response.llm import ExtractiveAnswerer
from services.response.server import ResponseServicer


async def main(settings: Settings) -> None:
    producer = EventProducer(settings.kafka_bootstrap, client_id="parley-response")
    search_channel = channel(settings.search_addr, settings.grpc_max_message_bytes)
    engine = ChatEngine(
        settings,
        search_pb2_grpc.SearchServiceStub(search_channel),
        ExtractiveAnswerer(settings.extractive_max_sentences),
        producer,
    )

    async def on_stop() -> None:
        await producer.stop()
        await search_channel.close()

    async def check_search() -> None:
        await check_serving(search_channel, "search")

    await serve(
        ServiceSpec(
            name="response",
            service_names=[response_pb2.DESCRIPTOR.services_by_name["ResponseService"].full_name],
            register=lambda server: response_pb2_grpc.add_ResponseServiceServicer_to_server(
                ResponseServicer(engine), server
            ),
            bind=bind_address(settings.grpc_bind_host, settings.response_addr),
            metrics_port=settings.response_metrics_port,
            on_start=producer.start,
            on_stop=on_stop,
            checks={"kafka": producer.ping, "search": check_search},
            grace_seconds=settings.shutdown_grace_seconds,
            max_message_bytes=settings.grpc_max_message_bytes,
        )
    )


if __name__ == "__main__":
    run_service("response", main)
