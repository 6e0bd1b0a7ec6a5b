"""Parts of the search scenario for dense retrieval: ingest through the indexer, and the query path
(query embedding, exact vector search over the largest key) timed on its own."""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
import uuid
from pathlib import Path

import asyncpg

from bench.harness import console
from bench.load import quantile
from services.common.embedding import Embedder
from services.common.kafka import EventProducer
from services.common.pb.parley.v1 import events_pb2
from services.settings import Settings
from services.search import keys, synthetic
from services.search.vector_index import VectorIndex

INGEST_PAGES, CHUNKS_PER_PAGE, WORDS_PER_CHUNK = 40, 10, 110


def _pages(key_id: str) -> list[events_pb2.KnowledgePage]:
    """Help pages of real support words (so that word pieces per word are like real text's)."""
    rng = random.Random(5)
    words = synthetic.vocabulary()[:len(synthetic._COMMON)]
    pages = []
    for p in range(INGEST_PAGES):
        chunks = [" ".join(rng.choice(words) for _ in range(WORDS_PER_CHUNK)) + "." for _ in range(CHUNKS_PER_PAGE)]
        pages.append(events_pb2.KnowledgePage(product_key_id=key_id, document=f"https://bench.example/p{p}.html",
                                              url=f"https://bench.example/p{p}.html", title=f"Page {p}",
                                              chunks=chunks))
    return pages


def process_cpu_seconds(module: str, namespace: str) -> float | None:
    """CPU time (user + system, all threads) of this run's `python -m module` process: a measure of the
    work that other load on the machine does not inflate, unlike wall-clock time."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if module.encode() not in cmdline or namespace.encode() not in (entry / "environ").read_bytes():
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


async def ingest(settings: Settings, pool: asyncpg.Pool) -> dict:
    """Hands INGEST_PAGES pages to the indexer over Kafka and shows how many chunks are stored (with
    their embeddings) as it goes; returns the rate."""
    key, _ = await keys.create_key(pool, name="Bench ingest", key_id=f"bench-ingest-{uuid.uuid4().hex[:8]}")
    pages = _pages(key.id)
    total = sum(len(p.chunks) for p in pages)
    producer = EventProducer(settings.kafka_bootstrap, client_id="bench-ingest")
    await producer.start()
    cpu_before = process_cpu_seconds("services.search.indexer", settings.topic_namespace)
    started = time.perf_counter()
    try:
        for page in pages:
            await producer.publish(settings.topic("knowledge_pages"), key.id, page, wait=True)
    finally:
        await producer.stop()
    console.print(f"  ingest: {INGEST_PAGES} pages, {total} chunks of {WORDS_PER_CHUNK} words handed to the indexer")
    stored = 0
    while stored < total:
        await asyncio.sleep(2.0)
        stored = await pool.fetchval("SELECT count(*) FROM knowledge_chunks WHERE product_key_id = $1"
                                     " AND embedding IS NOT NULL", key.id)
        elapsed = time.perf_counter() - started
        console.print(f"    {stored:4}/{total} chunks embedded and stored, {stored / elapsed:5.1f} chunks/s")
        if elapsed > 900:
            break
    elapsed = time.perf_counter() - started
    cpu_after = process_cpu_seconds("services.search.indexer", settings.topic_namespace)
    cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else float("nan")
    out = {"pages": INGEST_PAGES, "chunks": total, "stored": stored, "seconds": elapsed,
           "chunks_per_second": stored / elapsed, "indexer_cpu_seconds": cpu,
           "chunks_per_cpu_second": stored / cpu if cpu else float("nan"), "load_average": os.getloadavg()[0]}
    console.print(f"  ingest: {out['chunks_per_second']:.1f} chunks/s wall clock; the indexer used {cpu:.1f} CPU s "
                  f"= {out['chunks_per_cpu_second']:.1f} chunks per CPU second (load average {out['load_average']:.1f} "
                  f"on {os.cpu_count()} CPUs)")
    return out


async def query_path(pool: asyncpg.Pool, big_key: str, questions: list[str]) -> dict:
    """In this process: query embedding (distinct questions, no cache) and exact top-20 over the 50k
    key's matrix, each timed alone (ms)."""
    embedder = await asyncio.to_thread(Embedder.load)
    for q in questions[:5]:
        embedder.embed_one(q)
    embed_ms, search_ms = [], []
    index = VectorIndex(pool, embedder.model_id, 1 << 30)
    entry = await index.vectors(big_key)
    embed_cpu_ms = []
    for q in questions[5:205]:
        t0, c0 = time.perf_counter(), time.process_time()
        vector = embedder.embed_one(q)
        embed_ms.append((time.perf_counter() - t0) * 1000)
        embed_cpu_ms.append((time.process_time() - c0) * 1000)
        t0 = time.perf_counter()
        entry.top(vector, 20)
        search_ms.append((time.perf_counter() - t0) * 1000)
    embed_ms.sort()
    search_ms.sort()
    embed_cpu_ms.sort()
    out = {"key_chunks": int(len(entry.ids)), "index_mb": entry.nbytes / 1e6,
           "embed_p50_ms": statistics.median(embed_ms), "embed_p99_ms": quantile(embed_ms, 0.99),
           "search_p50_ms": statistics.median(search_ms), "search_p99_ms": quantile(search_ms, 0.99),
           "embed_cpu_p50_ms": statistics.median(embed_cpu_ms), "embed_cpu_p99_ms": quantile(embed_cpu_ms, 0.99),
           "load_average": os.getloadavg()[0]}
    console.print(f"  query embedding: p50 {out['embed_p50_ms']:.2f} ms, p99 {out['embed_p99_ms']:.2f} ms; "
                  f"exact top-20 over {out['key_chunks']} vectors ({out['index_mb']:.0f} MB): "
                  f"p50 {out['search_p50_ms']:.2f} ms, p99 {out['search_p99_ms']:.2f} ms; CPU time of one query "
                  f"embedding p50 {out['embed_cpu_p50_ms']:.2f} ms (load average {out['load_average']:.1f})")
    return out
