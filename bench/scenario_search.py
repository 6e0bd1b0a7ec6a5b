"""Scenario "search": SearchService.Plan over 100k chunks and 100 keys plus one key of 50k chunks (dense
candidates included: query embedding + exact vector search) at concurrency 1 and 32, and side by side in
the same run, key validation + retrieval as two sequential PostgreSQL queries (no cache) against the key
from the Redis cache + one retrieval query (what Plan does). First, ingest: pages handed to the indexer
over Kafka, embedded and stored, with progress."""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time

from rich.table import Table

from bench.harness import console, started_services
from bench.load import LoadResult, quantile, run_load
from services.common import db
from services.common.admin import admin_metadata
from services.common.grpc_server import channel
from services.common.pb.parley.v1 import search_pb2, search_pb2_grpc
from services.common.redis_client import create_redis
from bench import dense_compare
from bench.dense import _pages, process_cpu_seconds, ingest, query_path
from services.search import keys, retrieval, synthetic
from services.search.key_cache import KeyCache

NAME = "search"
KEYS, CHUNKS_PER_KEY = 100, 1000
LEVELS = [1, 32]
COMPARE_PAGES = 12          # pages (10 chunks each) written by each side of the before/after ingest


async def interleaved(calls: dict, concurrency: int, seconds: float, warmup: float = 0.5) -> list[LoadResult]:
    """Every worker alternates between the calls, so both see the same moment and the same background load
    (a side-by-side that stays fair on a busy machine)."""
    names = list(calls)
    latencies: dict[str, list[float]] = {n: [] for n in names}
    errors = dict.fromkeys(names, 0)
    start = time.perf_counter()
    counting_from, stop_at = start + warmup, start + warmup + seconds

    async def worker(w: int) -> None:
        i = 0
        while True:
            name = names[(w + i) % len(names)]
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            try:
                await calls[name](w * 1_000_000 + i)
                ok = True
            except Exception:  # noqa: BLE001 - counted, the run goes on
                ok = False
            if t0 >= counting_from:
                if ok:
                    latencies[name].append((time.perf_counter() - t0) * 1000)
                else:
                    errors[name] += 1
            i += 1

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    out = []
    for name in names:
        ms = sorted(latencies[name])
        out.append(LoadResult(name=name, concurrency=concurrency, seconds=seconds, calls=len(ms), errors=errors[name],
                              throughput=len(ms) / seconds, p50_ms=statistics.median(ms) if ms else 0.0,
                              p95_ms=quantile(ms, 0.95), p99_ms=quantile(ms, 0.99)))
    return out


async def statement_profile(pool, questions: list[str], settings) -> dict:
    """Execution time and buffers of the search statement as PostgreSQL reports them: the part of Plan
    that client-side scheduling on a busy machine does not inflate."""
    times, buffers = [], []
    for i, q in enumerate(questions):
        rows = await pool.fetch(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + retrieval.SEARCH_QUERY, synthetic.key_id(i % KEYS), "english",
            q, list(retrieval.FILLER_LEXEMES), settings.search_candidates, 2 * settings.max_passages,
            retrieval.MAX_QUERY_LEXEMES, retrieval.RRF_K, retrieval.LEXICAL_POOL,
        )
        plan = json.loads(rows[0][0])[0]
        times.append(plan["Execution Time"])
        buffers.append(plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"])
    times.sort()
    return {"statements": len(times), "exec_p50_ms": statistics.median(times), "exec_p99_ms": quantile(times, 0.99),
            "buffers_p50": statistics.median(buffers), "buffers_max": max(buffers)}


async def run(seconds: float, concurrencies: list[int]) -> dict:
    words = synthetic.vocabulary()
    rng = random.Random(11)
    questions = [synthetic.sample_question(rng, words) for _ in range(2000)]
    async with started_services() as (settings, _key_id, _secret):
        pool = await db.create_pool(settings.postgres_dsn, min_size=4, max_size=40)
        client = create_redis(settings.redis_url)
        try:
            console.print("  synthetic corpus (created once, then reused) ...")
            cache = KeyCache(client, settings.key_cache_ttl_seconds)
            total = await synthetic.ensure_corpus(pool, keys=KEYS, chunks_per_key=CHUNKS_PER_KEY, key_cache=cache)
            console.print(f"  {total} chunks over {KEYS} keys")
            big = await synthetic.ensure_big_key(pool, key_cache=cache)
            console.print(f"  plus {big}: 50000 chunks (random unit vectors as embeddings)")
            ingested = await ingest(settings, pool)
            query_side = await query_path(pool, big, questions)
            compared = await dense_compare.run_all(pool, settings, client, questions,
                                                   [(p.title, list(p.chunks)) for p in _pages("compare")[:COMPARE_PAGES]])

            async def two_queries_uncached(i: int):
                n = i % KEYS
                record = await keys.validate_key(pool, keys.hash_secret(synthetic.secret(n)))
                return await retrieval.search(pool, record.id, record.ts_config, questions[i % len(questions)],
                                              limit=settings.max_passages, candidates=settings.search_candidates)

            async def cached_key_one_query(i: int):
                n = i % KEYS
                key_hash = keys.hash_secret(synthetic.secret(n))
                record = await cache.get(key_hash)
                if not isinstance(record, keys.KeyRecord):
                    record = await keys.validate_key(pool, key_hash)
                    await cache.put(key_hash, record)
                return await retrieval.search(pool, record.id, record.ts_config, questions[i % len(questions)],
                                              limit=settings.max_passages, candidates=settings.search_candidates)

            async def key_uncached(i: int):
                return await keys.validate_key(pool, keys.hash_secret(synthetic.secret(i % KEYS)))

            async def key_cached(i: int):
                return await cache.get(keys.hash_secret(synthetic.secret(i % KEYS)))

            console.print("  the search statement inside PostgreSQL (EXPLAIN ANALYZE, 200 questions) ...")
            server_side = await statement_profile(pool, questions[:200], settings)

            results: list[LoadResult] = []
            cpu_per_plan: dict[tuple[str, int], float] = {}
            async with channel(settings.search_addr) as ch:
                stub = search_pb2_grpc.SearchServiceStub(ch)
                # Plan as the response service calls it: with the platform's token, not charged to the key.
                platform = admin_metadata(settings.admin_token)

                async def plan(i: int):
                    return await stub.Plan(search_pb2.PlanRequest(
                        product_key=synthetic.secret(i % KEYS), message=questions[i % len(questions)]), timeout=10,
                        metadata=platform)

                async def plan_big(i: int):  # the 50k-chunk key: the largest vector search
                    # " please" (a filler word for the lexical arm): not the 100-key run's messages, so
                    # the query embedding is computed, not taken from the cache
                    return await stub.Plan(search_pb2.PlanRequest(
                        product_key=synthetic.big_secret(), message=questions[i % len(questions)] + " please"),
                        timeout=10, metadata=platform)

                async def plan_greeting(i: int):  # the cached key and the rate limit only: no PostgreSQL
                    return await stub.Plan(search_pb2.PlanRequest(product_key=synthetic.secret(i % KEYS),
                                                                  message="hello"), timeout=10, metadata=platform)

                for i in range(KEYS):  # warm the key cache, the buffers and the vector index
                    await plan(i)
                    await cached_key_one_query(i)
                await plan_big(0)
                for c in LEVELS:
                    console.print(f"  Plan over gRPC, concurrency {c:3} for {seconds:.0f}s ...")
                    cpu0 = process_cpu_seconds("services.search", settings.topic_namespace)
                    results.append(await run_load("plan", plan, c, seconds))
                    cpu1 = process_cpu_seconds("services.search", settings.topic_namespace)
                    console.print(f"  Plan on the 50k-chunk key, concurrency {c:3} for {seconds:.0f}s ...")
                    results.append(await run_load("plan_big", plan_big, c, seconds))
                    cpu2 = process_cpu_seconds("services.search", settings.topic_namespace)
                    for name, spent in (("plan", cpu1 - cpu0), ("plan_big", cpu2 - cpu1)):
                        calls = results[-1 if name == "plan_big" else -2].calls
                        cpu_per_plan[(name, c)] = 1000 * spent / max(calls, 1)
                        console.print(f"    {name}: search process CPU {cpu_per_plan[(name, c)]:.2f} ms per Plan "
                                      f"(load average {os.getloadavg()[0]:.1f})")
                    console.print(f"  Plan of a greeting (no retrieval), concurrency {c:3} for {seconds:.0f}s ...")
                    results.append(await run_load("plan_greeting", plan_greeting, c, seconds))
                    console.print(f"  uncached 2 queries vs cached key + 1 query, interleaved, concurrency {c:3} "
                                  f"for {2 * seconds:.0f}s ...")
                    results.extend(await interleaved({"two_queries_uncached": two_queries_uncached,
                                                      "cached_key_one_query": cached_key_one_query,
                                                      "key_uncached": key_uncached, "key_cached": key_cached},
                                                     c, 2 * seconds))
        finally:
            await client.aclose()
            await pool.close()

    def pick(name: str, c: int) -> LoadResult:
        return next(r for r in results if r.name == name and r.concurrency == c)

    table = Table("concurrency", "message", "req/s", "p50", "p95", "p99", "errors",
                  title=f"SearchService.Plan over gRPC, {total} chunks / {KEYS} keys (latency in ms)")
    for c in LEVELS:
        for name, label in (("plan", "question (retrieval)"), ("plan_big", "question, 50k-chunk key"),
                            ("plan_greeting", "greeting (cache only)")):
            r = pick(name, c)
            table.add_row(str(c), label, f"{r.throughput:.0f}", f"{r.p50_ms:.2f}", f"{r.p95_ms:.2f}",
                          f"{r.p99_ms:.2f}", str(r.errors))
    console.print(table)
    console.print(f"  search statement inside PostgreSQL: p50 {server_side['exec_p50_ms']:.2f} ms, "
                  f"p99 {server_side['exec_p99_ms']:.2f} ms, {server_side['buffers_p50']:.0f} buffers (median)")
    side = Table("concurrency", "compared", "uncached p50", "p99", "cached p50", "p99", "p50 ratio", "p99 ratio",
                 title="uncached (PostgreSQL) vs cached (Redis) key validation, interleaved in the same run "
                       "(ms; ratio = uncached / cached)")
    rows = []
    for c in LEVELS:
        row = {"concurrency": c, "plan": pick("plan", c).as_dict(), "plan_big": pick("plan_big", c).as_dict(),
               "search_cpu_ms_per_plan": cpu_per_plan.get(("plan", c)),
               "search_cpu_ms_per_plan_big": cpu_per_plan.get(("plan_big", c)),
               "plan_greeting": pick("plan_greeting", c).as_dict()}
        for label, (ua, cb) in {
            "key + knowledge: 2 sequential queries vs cached key + 1 query": ("two_queries_uncached", "cached_key_one_query"),
            "key validation alone: 1 query vs cache": ("key_uncached", "key_cached"),
        }.items():
            a, b = pick(ua, c), pick(cb, c)
            p50_ratio = a.p50_ms / b.p50_ms if b.p50_ms else 0.0
            p99_ratio = a.p99_ms / b.p99_ms if b.p99_ms else 0.0
            row[ua], row[cb] = a.as_dict(), b.as_dict()
            row[f"{ua}_over_{cb}_p50"] = p50_ratio
            row[f"{ua}_over_{cb}_p99"] = p99_ratio
            side.add_row(str(c), label, f"{a.p50_ms:.2f}", f"{a.p99_ms:.2f}", f"{b.p50_ms:.2f}", f"{b.p99_ms:.2f}",
                         f"{p50_ratio:.2f}x", f"{p99_ratio:.2f}x")
        rows.append(row)
    console.print(side)
    return {"scenario": NAME, "ingest": ingested, "query_path": query_side, "before_after": compared, "statement": server_side, "chunks": total, "keys": KEYS, "seconds_per_level": seconds, "levels": rows}
