"""PostgreSQL refusing writes for a while (read-only, as a standby the DSN reaches after a failover, or
default_transaction_read_only): the admin RPCs answer UNAVAILABLE with a retry hint, and the crawl worker
and the indexer keep what they hold and write it once PostgreSQL takes writes again. It reconfigures
the shared server (run it under the exclusive stack lock) and sets it back in a finally."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaConsumer

from deploy.local.sample_site.server import SampleSite
from services.common.grpc_server import channel
from services.common.kafka import EventProducer, new_event_id, now_timestamp
from services.common.pb.parley.v1 import events_pb2, scraper_pb2, scraper_pb2_grpc, search_pb2
from services.scraper import jobs
from tests.conftest import make_key, rpc_error
from tests.search.test_indexer import page

pytestmark = pytest.mark.integration

# A session of its own writes while the server's default is read-only (a session setting wins over it).
WRITABLE = {"default_transaction_read_only": "off"}
REFUSED = "read-only transaction"       # PostgreSQL's message for SQLSTATE 25006


async def _until(check: Callable[[], Awaitable[object]], failure: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.2)


async def _reconfigure(dsn: str, statement: str, want: str) -> None:
    conn = await asyncpg.connect(dsn, server_settings=WRITABLE)
    try:
        await conn.execute(statement)
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()

    async def reloaded() -> bool:
        # A new session has the reloaded default once the server has signalled its sessions to reload.
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("SHOW default_transaction_read_only") == want
        finally:
            await conn.close()

    await _until(reloaded, f"default_transaction_read_only never became {want}", timeout=30)


@contextlib.asynccontextmanager
async def read_only(dsn: str) -> AsyncIterator[None]:
    """The whole server refuses writes (every session without a setting of its own) until the block ends."""
    try:
        await _reconfigure(dsn, "ALTER SYSTEM SET default_transaction_read_only = on", "on")
        yield
    finally:
        await _reconfigure(dsn, "ALTER SYSTEM RESET default_transaction_read_only", "off")


def _logged_since(path: Path, start: int, text: str) -> Callable:
    async def check() -> bool:
        with path.open("rb") as f:
            f.seek(start)
            return text.encode() in f.read()
    return check


async def _dead_letters_of(settings, source_topic: str, partition: int, offset: int) -> list[dict[str, str]]:
    """The dead letters on this run's topic that came from `source_topic` at `partition`@`offset`."""
    consumer = AIOKafkaConsumer(settings.topic("deadletter"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found = []
    try:
        ends = await consumer.end_offsets(list(consumer.assignment()))     # every partition, read to its end
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    headers = {k: v.decode() for k, v in r.headers}
                    if (headers.get("source-topic"), headers.get("source-partition"),
                            headers.get("source-offset")) == (source_topic, str(partition), str(offset)):
                        found.append(headers)
    finally:
        await consumer.stop()
    return found


@pytest.mark.timeout(420)
async def test_writes_refused_are_unavailable_and_waited_out(services, search, admin, pg, settings):
    """While PostgreSQL is read-only: AddFaq and StartCrawl answer UNAVAILABLE with a retry hint (they were
    INTERNAL); a crawl accepted before it is retried by the crawl worker (it was dead-lettered, its offset
    committed and the job left queued forever) and done once PostgreSQL takes writes again; a page handed
    to the indexer is written then (the indexer exited). Nothing is dead-lettered."""
    key = await make_key(search, admin, "read-only", faq=[], docs=[])
    site = SampleSite(slow_seconds=0.1)
    await site.start()
    logs = {name: services.log_file(name) for name in ("crawler", "indexer")}
    marks = {name: path.stat().st_size for name, path in logs.items()}
    indexer_pid = services.pid("indexer")
    producer = EventProducer(settings.kafka_bootstrap, client_id="test-read-only")
    await producer.start()
    writable = await asyncpg.create_pool(settings.postgres_dsn, min_size=1, max_size=1, server_settings=WRITABLE)
    direct = page(key.id, "https://shop.example/read-only.html", "Handed over while PostgreSQL refused writes.")
    try:
        async with read_only(settings.postgres_dsn), channel(settings.scraper_addr) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as exc_info:
                await search.AddFaq(search_pb2.AddFaqRequest(product_key_id=key.id, question="Open on Sunday?",
                                                             answer="No."), metadata=admin, timeout=10)
            err = rpc_error(exc_info)
            assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
            trailers = dict(err.trailing_metadata() or ())
            assert (trailers.get("retry-after"), trailers.get("retry-after-ms")) == ("1", "1000"), trailers
            with pytest.raises(grpc.aio.AioRpcError) as exc_info:
                await scraper_pb2_grpc.ScraperServiceStub(ch).StartCrawl(scraper_pb2.StartCrawlRequest(
                    product_key_id=key.id, seed_urls=[site.base_url + "/help/plans.html"], max_pages=1),
                    metadata=admin, timeout=10)
            err = rpc_error(exc_info)
            assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
            assert dict(err.trailing_metadata() or ()).get("retry-after") == "1", err.trailing_metadata()

            # A crawl accepted just before PostgreSQL went read-only: its job written, its request queued.
            spec = jobs.validate(key.id, [site.base_url + "/help/plans.html"], "", 1, 1, [], [])
            await jobs.create_job(writable, spec)
            crawl = await producer.publish(settings.topic("crawl_requests"), key.id, events_pb2.CrawlRequested(
                event_id=new_event_id(), occurred_at=now_timestamp(), job_id=spec.job_id, product_key_id=key.id,
                seed_urls=spec.seed_urls, max_pages=spec.max_pages, max_depth=spec.max_depth), wait=True)
            handed = await producer.publish(settings.topic("knowledge_pages"), key.id, direct, wait=True)
            for name, path in logs.items():
                await _until(_logged_since(path, marks[name], REFUSED),
                             f"the {name} never met the refusal; see {path}")

        async def finished() -> bool:
            return await jobs.job_state(pg, spec.job_id) in jobs.TERMINAL

        async def indexed() -> bool:
            return await pg.fetchval("SELECT count(*) > 0 FROM knowledge_chunks WHERE product_key_id = $1 AND "
                                     "document = $2", key.id, direct.document)

        await _until(finished, f"crawl job {spec.job_id} never ended once PostgreSQL took writes again; "
                               f"see {logs['crawler']}")
        job = await jobs.get_job(pg, spec.job_id)
        assert (job.state, job.progress.pages_fetched) == ("done", 1), job
        await _until(indexed, f"the page handed over was never indexed; see {logs['indexer']}")
        crawled = await pg.fetchval("SELECT count(DISTINCT document) FROM knowledge_chunks WHERE product_key_id = $1"
                                    " AND document <> $2", key.id, direct.document)
        assert crawled == 1, "the crawled page is not in the key's knowledge"
        assert services.pid("indexer") == indexer_pid, f"the indexer exited; see {logs['indexer']}"
        assert await _dead_letters_of(settings, settings.topic("crawl_requests"), crawl.partition, crawl.offset) == []
        assert await _dead_letters_of(settings, settings.topic("knowledge_pages"), handed.partition,
                                      handed.offset) == []
    finally:
        await writable.close()
        await producer.stop()
        await site.stop()


@pytest.mark.timeout(300)
async def test_reembedding_waits_until_postgres_takes_writes(search, admin, pg, settings, caplog):
    """The indexer's re-embedding of stale chunks (at its start) met PostgreSQL refusing writes: it gave up
    until the next start of the process. It retries until the chunks are embedded, and the key's
    version moves so that the search replicas load the new vectors."""
    from services.common import db
    from services.common.embedding import Embedder
    from services.search import indexer
    from services.search.indexing import Indexing

    key = await make_key(search, admin, "reembed-read-only", faq=[("Is it waterproof?", "Yes, to IPX7.")],
                         docs=[("Care", "Rinse the frame with fresh water. Dry the chain and oil it lightly.")])
    # As written by another model: stale for the current one.
    await pg.execute("UPDATE knowledge_chunks SET embedding_model = 'an-older-model' WHERE product_key_id = $1", key.id)
    version = await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key.id)
    pool = await db.create_pool(settings.postgres_dsn, max_size=2)
    producer = EventProducer(settings.kafka_bootstrap, client_id="test-reembed")
    await producer.start()
    caplog.set_level(logging.WARNING, logger=indexer.__name__)

    async def met_the_refusal() -> bool:
        return reembed.done() or any(REFUSED in r.getMessage() or (r.exc_text or "").find(REFUSED) >= 0
                                     for r in caplog.records)

    try:
        async with read_only(settings.postgres_dsn):
            reembed = asyncio.ensure_future(indexer._reembed(Indexing(pool), producer, settings))
            await _until(met_the_refusal, "re-embedding never tried to write")
        await asyncio.wait_for(reembed, 120)
        rows = await pg.fetch("SELECT embedding_model FROM knowledge_chunks WHERE product_key_id = $1", key.id)
        assert [r["embedding_model"] for r in rows] == [Embedder.load().model_id] * 2, "still stale"
        assert await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key.id) > version
    finally:
        await producer.stop()
        await pool.close()
