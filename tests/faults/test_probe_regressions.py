"""Faults found by probing the services while a dependency was killed: each test kills the stack's
server it is about (the fault suite runs last, see tests/faults/conftest.py) and starts it again."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import grpc
import pytest

from deploy.local import stack
from services.common.grpc_server import channel
from services.common.kafka import EventProducer
from services.common.pb.parley.v1 import scraper_pb2, scraper_pb2_grpc
from tests.conftest import rpc_error

pytestmark = pytest.mark.integration

UP_TIMEOUT = 300.0


def _kill(name: str) -> None:
    pid = stack.managed_pid(stack.StackConfig.from_env(), name)
    if pid is None:
        raise RuntimeError(f"{name} of this checkout's stack is not running")
    os.kill(pid, signal.SIGKILL)


async def _pages_in_hand(settings, pg, key_id: str, pages: list, timeout: float, failure: str) -> None:
    """The pages onto the topic the indexer reads, then until it has written the first of them."""
    producer = EventProducer(settings.kafka_bootstrap, client_id="test-pages")
    await producer.start()
    try:
        await asyncio.gather(*[producer.publish(settings.topic("knowledge_pages"), key_id, p, wait=True)
                               for p in pages])
    finally:
        await producer.stop()
    deadline = time.monotonic() + timeout
    while not await pg.fetchval("SELECT count(*) FROM knowledge_chunks WHERE product_key_id = $1", key_id):
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.05)


def _crawl(key_id: str, marker: str) -> scraper_pb2.StartCrawlRequest:
    # Nothing listens on port 9: should the crawl run, it fails at once.
    return scraper_pb2.StartCrawlRequest(product_key_id=key_id, seed_urls=[f"http://127.0.0.1:9/{marker}"], max_pages=1)


@pytest.mark.timeout(420)
async def test_start_crawl_without_kafka_is_unavailable_before_the_deadline(services, settings, admin, pg, key_a):
    """The broker killed: StartCrawl answered UNAVAILABLE with a retry hint before the caller's
    deadline (it waited on the producer's 15 s request timeout and ended DEADLINE_EXCEEDED, its job
    left queued), the job failed; once the broker is back, crawls are queued again."""
    async with channel(settings.scraper_addr) as ch:
        scraper = scraper_pb2_grpc.ScraperServiceStub(ch)
        await scraper.StartCrawl(_crawl(key_a.id, "before"), metadata=admin, timeout=10)  # the producer is started
        marker = f"probe-{uuid.uuid4().hex[:8]}"
        _kill("kafka")
        try:
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as exc_info:
                await scraper.StartCrawl(_crawl(key_a.id, marker), metadata=admin, timeout=4)
            took = time.monotonic() - started
            err = rpc_error(exc_info)
            assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details(), took)
            assert dict(err.trailing_metadata() or ()).get("retry-after") == "1", err.trailing_metadata()
            assert took < 4.0
            rows = await pg.fetch("SELECT state, error FROM crawl_jobs WHERE product_key_id = $1 AND request::text LIKE $2",
                                  key_a.id, f"%{marker}%")
            assert [(r["state"], r["error"]) for r in rows] == [("failed", "not queued: Kafka unavailable")]
        finally:
            await asyncio.to_thread(stack.up, False, UP_TIMEOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = await scraper.StartCrawl(_crawl(key_a.id, "after"), metadata=admin, timeout=10)
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, (exc.code(), exc.details())
                assert time.monotonic() < deadline, "StartCrawl still refused 60 s after the broker came back"
                await asyncio.sleep(1.0)
        assert reply.job_id


@pytest.mark.timeout(420)
async def test_the_indexer_waits_out_the_broker_and_loses_no_page(services, search, admin, pg, settings):
    """The broker killed while the indexer works through pages: it cannot announce the pages it
    writes (parley.knowledge.updated.v1) for as long as the broker is away, longer than the producer's
    15 s request timeout; it waits instead of exiting, and once the broker is back every page is
    indexed once and announced."""
    from tests.conftest import make_key
    from tests.search.test_indexer import chunks_by_document, hand_over, page

    key = await make_key(search, admin, "indexer-broker", faq=[], docs=[])
    indexer_pid = services.pid("indexer")
    pages = [page(key.id, f"https://shop.example/broker/p{i}.html", f"Page {i} explains topic number {i}.",
                  f"A second paragraph of page {i}.") for i in range(200)]
    await _pages_in_hand(settings, pg, key.id, pages, 30, "the indexer took no page in 30 s")
    _kill("kafka")                                             # pages in hand, more waiting on the topic
    written = await pg.fetchval("SELECT count(DISTINCT document) FROM knowledge_chunks WHERE product_key_id = $1",
                                key.id)
    assert written < len(pages), "every page was indexed before the broker was killed: nothing was tested"
    try:
        await asyncio.sleep(20.0)
        assert services.pid("indexer") == indexer_pid, "the indexer exited while the broker was away"
    finally:
        await asyncio.to_thread(stack.up, False, UP_TIMEOUT)
    await hand_over(settings)
    stored = await chunks_by_document(pg, key.id)
    assert sorted(stored) == sorted(p.document for p in pages)
    assert all(len(chunks) == 2 for chunks in stored.values())
    assert services.pid("indexer") == indexer_pid, "the indexer exited"


@pytest.mark.timeout(420)
async def test_every_process_stops_within_its_grace_while_the_broker_is_down(services, search, admin, pg, test_env,
                                                                              tmp_path):
    """SIGTERM with the broker gone and work in hand: the search service with a knowledge change whose
    event waits for Kafka, the indexer with pages in hand (its announcements wait for the broker), the
    stream worker with offsets applied and not committed to Kafka yet. Their last commits and flushes
    wait for a broker that is not there: each process still exits, within its grace period and the
    bounded stops; what it did not finish is replayed at its next start."""
    from bench.harness import free_port
    from bench.stream_load import produce, serialized
    from services.common.pb.parley.v1 import search_pb2, search_pb2_grpc
    from services.common.topics import create_all_topics
    from services.launcher import Launcher
    from bench.scenario_stream import environment
    from tests.conftest import RUN_ID, make_key, until_serving
    from tests.search.test_indexer import page

    grace = 5
    env = {**test_env, "PARLEY_TOPIC_NAMESPACE": f".stop-{RUN_ID}", "PARLEY_WORKER_APP_ID": f"parley-stop-{RUN_ID}",
           "PARLEY_SHUTDOWN_GRACE_SECONDS": str(grace), "PARLEY_SEARCH_ADDR": f"127.0.0.1:{free_port()}",
           **{f"PARLEY_{n}_METRICS_PORT": str(free_port()) for n in ("SEARCH", "INDEXER", "WORKER")}}
    with environment(env) as own:       # these processes' settings: own topics, group and ports
        pass
    await create_all_topics(own)
    key = await make_key(search, admin, "stop-broker-down", faq=[], docs=[])
    turns_key = f"stop-{uuid.uuid4().hex[:8]}"
    launcher = Launcher(tmp_path, env=env)
    launcher.start(["search", "indexer", "worker"])
    killed = False
    try:
        async with channel(own.search_addr) as ch:
            await until_serving(launcher, "search", ch)
        pages = [page(key.id, f"https://shop.example/stop/p{i}.html", f"Page {i} about topic {i}.",
                      f"More on topic {i}.") for i in range(150)]
        await _pages_in_hand(own, pg, key.id, pages, 120, f"the indexer took no page; see {launcher.log_file('indexer')}")
        deadline = time.monotonic() + 120
        # Turns up to the kill, so that the worker has offsets applied and not yet committed to Kafka.
        for i in range(20):
            await produce(own.kafka_bootstrap, own.topic("chat_turns"), serialized([turns_key], 200))
            if i == 0:
                while not await pg.fetchval("SELECT count(*) FROM conversations WHERE product_key_id = $1", turns_key):
                    assert time.monotonic() < deadline, f"the worker stored nothing; see {launcher.log_file('worker')}"
                    await asyncio.sleep(0.1)
        _kill("kafka")
        killed = True
        async with channel(own.search_addr) as ch:
            await search_pb2_grpc.SearchServiceStub(ch).AddFaq(
                search_pb2.AddFaqRequest(product_key_id=key.id, question="Do you ship abroad?", answer="Yes."),
                metadata=admin, timeout=10)
        pids = {name: launcher.pid(name) for name in ("search", "indexer", "worker")}
        assert all(pids.values()), pids
        for pid in pids.values():
            os.kill(pid, signal.SIGTERM)
        started = time.monotonic()
        # The grace, the deferred events' 10 s, the bounded stops (5 s each), and room for a busy machine.
        bound = grace + 10 + 3 * 5 + 20
        left = set(pids)
        while left and time.monotonic() - started < bound:
            left = {n for n in left if launcher.pid(n)}
            await asyncio.sleep(0.2)
        assert not left, f"still running {bound} s after SIGTERM with the broker down: {sorted(left)}"
    finally:
        launcher.stop(["search", "indexer", "worker"], timeout=5)
        if killed:
            await asyncio.to_thread(stack.up, False, UP_TIMEOUT)

