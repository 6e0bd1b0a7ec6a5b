"""The scraper API as a process: PostgreSQL is its one hard dependency. With nothing listening at its
Kafka and Redis addresses it starts, says SERVING (the two as NOT_SERVING `dependency/<name>` entries),
answers GetCrawl and Fetch, refuses StartCrawl with UNAVAILABLE, and queues crawls once Kafka is there;
its producer's start is safe under concurrency and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness import free_port
from services.common.grpc_server import channel
from services.common.kafka import EventProducer, LazyProducer
from services.common.pb.parley.v1 import scraper_pb2, scraper_pb2_grpc
from services.launcher import Launcher
from services.scraper import jobs
from services.search.keys import create_key
from tests.conftest import RUN_ID, rpc_error

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING


class KafkaDoor:
    """A port where nothing listens until `open()`; then it forwards to the real Kafka (whose metadata
    sends clients on to the broker's own address)."""

    def __init__(self, bootstrap: str) -> None:
        self.port = free_port()
        self._target = bootstrap.split(",")[0].rsplit(":", 1)
        self._server: asyncio.base_events.Server | None = None
        self._pipes: set[asyncio.Task] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def _forward(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection(self._target[0], int(self._target[1]))

        async def pipe(src, dst) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for task in (asyncio.ensure_future(pipe(reader, up_writer)), asyncio.ensure_future(pipe(up_reader, writer))):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)


async def _health(stub, service: str = "") -> int | None:
    try:
        return (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)).status
    except grpc.aio.AioRpcError:
        return None


async def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


@pytest.mark.timeout(120)
async def test_the_scraper_serves_without_kafka_and_redis(stack, pg, test_env, settings, sample_site, tmp_path):
    door = KafkaDoor(settings.kafka_bootstrap)
    addr = f"127.0.0.1:{free_port()}"
    env = {**test_env, "PARLEY_SCRAPER_ADDR": addr, "PARLEY_SCRAPER_METRICS_PORT": str(free_port()),
           "PARLEY_KAFKA_BOOTSTRAP": f"127.0.0.1:{door.port}",
           "PARLEY_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    key, secret = await create_key(pg, name="process", key_id=f"t-{RUN_ID}-process", website=sample_site.base_url + "/")
    queued = jobs.validate(key.id, [sample_site.base_url + "/"], "", 0, 0, [], [])
    await jobs.create_job(pg, queued)
    admin = (("x-parley-admin-token", settings.admin_token),)
    launcher = Launcher(tmp_path, env=env)
    launcher.start(["scraper"])
    try:
        async with channel(addr) as ch:
            health, scraper = health_pb2_grpc.HealthStub(ch), scraper_pb2_grpc.ScraperServiceStub(ch)

            async def serving() -> bool:
                assert launcher.pid("scraper"), f"the scraper exited; see {launcher.log_file('scraper')}"
                return await _health(health) == SERVING

            await _until(serving, 60, f"the scraper never said SERVING; see {launcher.log_file('scraper')}")
            for name in ("kafka", "redis"):
                await _until(lambda n=name: _soft_down(health, n), 10, f"dependency/{name} not reported down")

            status = await scraper.GetCrawl(scraper_pb2.GetCrawlRequest(job_id=queued.job_id), metadata=admin,
                                            timeout=5)
            assert status.state == "queued"
            page = await scraper.Fetch(scraper_pb2.FetchRequest(url=sample_site.base_url + "/help/encryption.html",
                                                                product_key=secret), timeout=10)
            assert page.status == 200 and page.text and not page.cached       # keys checked in PostgreSQL
            # Request-time validation does not need Kafka either.
            for request, words in ((dict(include=["((a{100}){100}){100}"]), "repeats"),
                                   (dict(seed_urls=["http://" + "a" * 70 + ".example/"]), "the limit is 63"),
                                   (dict(seed_urls=["http://unresolvable.invalid/"]), "cannot resolve")):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await scraper.StartCrawl(scraper_pb2.StartCrawlRequest(
                        product_key_id=key.id, **{"seed_urls": [sample_site.base_url + "/"], **request}),
                        metadata=admin, timeout=10)
                assert rpc_error(info).code() == grpc.StatusCode.INVALID_ARGUMENT, rpc_error(info).details()
                assert words in rpc_error(info).details()
            start = scraper_pb2.StartCrawlRequest(product_key_id=key.id, seed_urls=[sample_site.base_url + "/"])
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await scraper.StartCrawl(start, metadata=admin, timeout=20)
            assert rpc_error(info).code() == grpc.StatusCode.UNAVAILABLE
            assert "Kafka" in rpc_error(info).details()
            assert await _health(health) == SERVING

            # Kafka comes: the next StartCrawl starts the producer and queues the crawl, and the probe
            # (which starts it too) reports Kafka up.
            await door.open()
            reply = await scraper.StartCrawl(start, metadata=admin, timeout=30)
            assert (await scraper.GetCrawl(scraper_pb2.GetCrawlRequest(job_id=reply.job_id), metadata=admin,
                                           timeout=5)).state in ("queued", "running", "done")
            await _until(lambda: _soft_up(health, "kafka"), 20, "dependency/kafka not reported up")
    finally:
        launcher.stop(["scraper"])
        await door.close()


async def _soft_down(health, name: str) -> bool:
    return await _health(health, f"dependency/{name}") == health_pb2.HealthCheckResponse.NOT_SERVING


async def _soft_up(health, name: str) -> bool:
    return await _health(health, f"dependency/{name}") == SERVING


async def test_the_producer_starts_once_under_concurrent_and_cancelled_callers(stack, settings):
    door = KafkaDoor(settings.kafka_bootstrap)
    producer = LazyProducer(EventProducer(f"127.0.0.1:{door.port}", client_id="test-lazy-producer"))
    try:
        outcomes = await asyncio.gather(*(producer.start() for _ in range(5)), return_exceptions=True)
        assert all(isinstance(o, Exception) for o in outcomes)            # nothing listens yet
        await door.open()
        # A caller that gives up (the probe's timeout) leaves the start running for the next caller.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(producer.start(), 0.001)
        starts = [asyncio.ensure_future(producer.start()) for _ in range(10)]
        await asyncio.wait_for(asyncio.gather(*starts), 30)
        await producer.ping()
        inner = producer.producer._producer
        await producer.start()
        assert producer.producer._producer is inner                       # started once, kept
    finally:
        await producer.stop()
        await door.close()
