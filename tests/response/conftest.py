"""Response engine fixtures: the real groq client against a local Groq-compatible server, the real
search service, Redis and Kafka; the engine served in-process by a gRPC server with the shared interceptor."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from google.protobuf.message import DecodeError

from bench.fake_llm import FakeLLM
from services.common.grpc_server import ServerInterceptor, channel
from services.common.kafka import EventProducer
from services.common.pb.parley.v1 import events_pb2, response_pb2, response_pb2_grpc, search_pb2, search_pb2_grpc
from services.common.redis_client import create_redis
from services.settings import Settings
from services.response.admission import Admission
from services.response.answer import ChatEngine, build_engine, build_store
from services.response.search_client import SearchClient
from services.response.server import ResponseServicer
from services.response.web import WebPages
from tests.conftest import RUN_ID, TestKey

SMALL = "llama-3.1-8b-instant"
LARGE = "llama-3.3-70b-versatile"


def ask(key, message, **kw) -> response_pb2.ChatRequest:
    return response_pb2.ChatRequest(product_key=key.secret, message=message, **kw)


@pytest.fixture(scope="session")
async def fake_llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as llm:
        yield llm


@pytest.fixture
async def llm(fake_llm) -> FakeLLM:
    """The shared local LLM server, reset to well-behaved for each test."""
    return fake_llm.well_behaved()


@pytest.fixture(scope="session")
async def redis_client(stack):
    client = create_redis(stack.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def producer(stack) -> AsyncIterator[EventProducer]:
    p = EventProducer(stack.kafka_bootstrap, client_id="parley-response-tests")
    await p.start()
    yield p
    await p.stop()


@dataclass
class EventLog:
    """Every ChatTurn and Feedback of this run's topics, by request id."""

    turns: dict[str, list[events_pb2.ChatTurn]] = field(default_factory=dict)
    feedback: dict[str, list[events_pb2.Feedback]] = field(default_factory=dict)

    async def turn(self, request_id: str, timeout: float = 10.0) -> events_pb2.ChatTurn:
        return (await self._wait(self.turns, request_id, timeout))[0]

    async def feedback_for(self, request_id: str, timeout: float = 10.0) -> events_pb2.Feedback:
        return (await self._wait(self.feedback, request_id, timeout))[0]

    @staticmethod
    async def _wait(where: dict, request_id: str, timeout: float) -> list:
        for _ in range(int(timeout / 0.05)):
            if request_id in where:
                return where[request_id]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no event for request {request_id} within {timeout}s")


@pytest.fixture(scope="session")
async def events(stack: Settings) -> AsyncIterator[EventLog]:
    log = EventLog()
    topics = {stack.topic("chat_turns"): (events_pb2.ChatTurn, log.turns),
              stack.topic("feedback"): (events_pb2.Feedback, log.feedback)}
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=stack.kafka_bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()

    async def run() -> None:
        async for message in consumer:
            kind, where = topics[message.topic]
            try:
                event = kind.FromString(message.value)
            except DecodeError:
                continue  # other tests put undecodable messages on purpose (dead-letter tests)
            where.setdefault(event.request_id, []).append(event)

    task = asyncio.get_running_loop().create_task(run())
    yield log
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # At the end of the session, after the fault suite restarted the broker, a fetch of this idle
    # consumer may have timed out; aiokafka then re-raises its own fetch task's cancellation from
    # stop(). The consumer is closed either way: that is not a failure of any test.
    with contextlib.suppress(asyncio.CancelledError, KafkaError):
        await consumer.stop()


@pytest.fixture(scope="session")
async def search_client(services, settings) -> AsyncIterator[SearchClient]:
    async with channel(settings.search_addr) as ch:
        yield SearchClient(search_pb2_grpc.SearchServiceStub(ch), settings.admin_token)


@pytest.fixture
async def shop(shop_key, redis_client):
    """The shop's key with its answer cache emptied, so each test starts from a miss."""
    names = [k async for k in redis_client.scan_iter(match=f"parley:ans:{shop_key.id}:*", count=1000)]
    if names:
        await redis_client.delete(*names)
    return shop_key


@pytest.fixture(scope="session")
async def shop_key(search, admin) -> TestKey:
    """A key with a document about plans and one about shipping (no FAQ: the LLM answers), and a
    rate limit high enough for fifty questions at once."""
    reply = await search.CreateProductKey(
        search_pb2.CreateProductKeyRequest(
            name=f"Test llm-{RUN_ID}", id=f"t-{RUN_ID}-llm",
            settings=search_pb2.KeySettings(rate_limit_per_second=1000, rate_limit_burst=1000),
        ),
        metadata=admin, timeout=10,
    )
    key = TestKey(reply.key.id, reply.product_key)
    for title, text in (
        ("Plans", "The Plus plan costs 49 euros per year and includes priority support. The Free plan has no support."),
        ("Shipping", "Parcels ship within two working days. International shipping takes a week."),
    ):
        await search.AddDocument(search_pb2.AddDocumentRequest(product_key_id=key.id, title=title, text=text),
                                 metadata=admin, timeout=10)
    return key


class _OpenGate:
    ready = True
    draining = False


@dataclass
class Served:
    engine: ChatEngine
    stub: response_pb2_grpc.ResponseServiceStub
    settings: Settings


EngineFactory = Callable[..., "contextlib.AbstractAsyncContextManager[Served]"]


@pytest.fixture
async def served(stack, test_env, search_client, redis_client, producer, llm) -> AsyncIterator[EngineFactory]:
    """`async with served(**setting overrides) as s:` an engine with Groq pointed at the local LLM
    server, behind an in-process gRPC server (the shared interceptor maps its errors)."""

    @contextlib.asynccontextmanager
    async def start(web: WebPages | None = None, **overrides) -> AsyncIterator[Served]:
        env = {**test_env, "GROQ_API_KEY": "gsk_test", "PARLEY_GROQ_BASE_URL": llm.base_url}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            settings = Settings(**overrides)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        store = build_store(settings, redis_client)
        engine = build_engine(settings, search_client, store, producer, web)
        engine.admission = Admission(settings, redis_client, lambda: engine.in_flight)  # as services/response/__main__.py does
        server = grpc.aio.server(interceptors=[ServerInterceptor("response-test", _OpenGate())])
        response_pb2_grpc.add_ResponseServiceServicer_to_server(ResponseServicer(engine), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with channel(f"127.0.0.1:{port}") as ch:
                yield Served(engine, response_pb2_grpc.ResponseServiceStub(ch), settings)
        finally:
            await server.stop(1)
            await engine.drain()
            await engine.admission.close()
            await store.close()     # the shared client's connections go back to its pool
            if engine.llm is not None:
                await engine.llm.client.close()

    return start
