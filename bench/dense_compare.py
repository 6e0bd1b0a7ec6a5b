"""Before/after of the dense retrieval speed work, side by side in one run (same moment, same background
load): the encoder as first shipped (plain ONNX operators, one two-thread session for queries and
batches, one model call per page) against the current one (fused BERT operators, a one-thread query
session, pages batched into one model call). Each figure is given as wall clock and as CPU time of this
process: on a busy machine the wall clock mostly measures waiting for a core."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import numpy as np
from rich.table import Table

from bench.harness import console
from bench.load import quantile
from services.common.embedding import INTRA_OP_THREADS, Embedder, _encoder_graph, _session, model_dir
from services.common.knowledge_store import NewChunk
from services.search import keys

LEGACY_THREADS = 2


class LegacyEmbedder(Embedder):
    """The encoder as first shipped: the plain-operator graph, one two-thread session for everything."""

    def __init__(self) -> None:
        import json

        from safetensors.numpy import load_file

        super().__init__(model_dir())
        config = json.loads((model_dir() / "config.json").read_text())
        graph = _encoder_graph(load_file(str(model_dir() / "model.safetensors")), int(config["num_hidden_layers"]),
                               self._heads, self._eps)
        self._plain = _session(graph, LEGACY_THREADS)

    def embed_one(self, text: str) -> np.ndarray:
        return self._embed_batch([text], self._plain)[0]

    def _encode(self, ids: np.ndarray, mask: np.ndarray, session) -> np.ndarray:
        length = ids.shape[1]
        from services.common.embedding import _layer_norm

        x = self._word[ids] + self._position[:length] + self._token_type
        hidden = _layer_norm(x, *self._ln, self._eps).astype(np.float32)
        bias = ((1.0 - mask.astype(np.float32)) * np.float32(-1e9))[:, None, None, :].astype(np.float32)
        return self._plain.run(None, {"hidden": hidden, "mask": bias})[0]


def _timed(samples: dict[str, list[tuple[float, float]]], name: str):
    class _T:
        def __enter__(self):
            self.t, self.c = time.perf_counter(), time.process_time()

        def __exit__(self, *exc):
            samples.setdefault(name, []).append(((time.perf_counter() - self.t) * 1000,
                                                 (time.process_time() - self.c) * 1000))
    return _T()


def summary(samples: list[tuple[float, float]]) -> dict:
    wall = sorted(s[0] for s in samples)
    cpu = sorted(s[1] for s in samples)
    return {"n": len(wall), "wall_p50_ms": statistics.median(wall), "wall_p99_ms": quantile(wall, 0.99),
            "cpu_p50_ms": statistics.median(cpu), "cpu_p99_ms": quantile(cpu, 0.99)}


def embeddings(old: Embedder, new: Embedder, questions: list[str], passages: list[str], rounds: int = 3) -> dict:
    """Query embedding (distinct questions, interleaved old/new) and a 64-passage batch, alternately."""
    samples: dict[str, list[tuple[float, float]]] = {}
    for q in questions[:5]:
        old.embed_one(q), new.embed_one(q)
    for q in questions[5:]:
        for name, e in (("old", old), ("new", new)):
            with _timed(samples, f"query_{name}"):
                e.embed_one(q)
    for _ in range(rounds):
        for name, e in (("old", old), ("new", new)):
            with _timed(samples, f"batch_{name}"):
                e.embed(passages, 64)
    out = {k: summary(v) for k, v in samples.items()}
    for name in ("old", "new"):
        b = out[f"batch_{name}"]
        b["chunks_per_second"] = len(passages) / (b["wall_p50_ms"] / 1000)
        b["chunks_per_cpu_second"] = len(passages) / (b["cpu_p50_ms"] / 1000)
    return out


async def ingest(pool: asyncpg.Pool, old: Embedder, new: Embedder, pages: list[tuple[str, list[str]]],
                 batch_chunks: int) -> dict:
    """The same pages written through the indexing path into two fresh keys: one model call per page
    with the old encoder, against pages batched up to `batch_chunks` chunks with the new one (each page
    still in its own transaction)."""
    from services.search.indexing import Document, Indexing

    out = {}
    for name, embedder in (("old", old), ("new", new)):
        key, _ = await keys.create_key(pool, name=f"Bench ingest {name}", key_id=f"bench-cmp-{uuid.uuid4().hex[:8]}")
        indexing = Indexing(pool, load_embedder=lambda e=embedder: e)
        t0, c0 = time.perf_counter(), time.process_time()
        groups: list[list[tuple[str, list[str]]]] = [[]]
        for page in pages:
            if name == "old" or sum(len(p[1]) for p in groups[-1]) + len(page[1]) > batch_chunks:
                groups.append([])
            groups[-1].append(page)
        for group in filter(None, groups):
            docs = [Document(key.id, "page", title, [NewChunk(c) for c in chunks]) for title, chunks in group]
            vectors, _ = await indexing.embeddings_of(docs)
            for (title, _chunks), doc, v in zip(group, docs, vectors):
                await indexing.write(key.id, "page", title, title, title, doc.chunks, replace={title}, vectors=v)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        chunks = sum(len(p[1]) for p in pages)
        out[name] = {"chunks": chunks, "seconds": wall, "cpu_seconds": cpu, "chunks_per_second": chunks / wall,
                     "chunks_per_cpu_second": chunks / cpu}
        console.print(f"    ingest {name}: {chunks} chunks, {chunks / wall:.1f}/s wall, {chunks / cpu:.1f} per CPU s")
    return out


def _gathered_top(entry, query: np.ndarray, k: int) -> np.ndarray:
    """The partitioned search as first shipped: the probed lists gathered into a copy, then scored."""
    from services.search.vector_index import PROBE

    nearest = np.argsort(-(entry.centroids @ query))[:PROBE]
    rows = np.concatenate([np.arange(entry.bounds[c], entry.bounds[c + 1]) for c in nearest])
    scores = entry.matrix[rows] @ query
    picked = np.argpartition(-scores, k - 1)[:k]
    return rows[picked[np.argsort(-scores[picked])]]


def vector_search(entry, queries: np.ndarray) -> dict:
    """Top-20 over the 50k-chunk key: gathered copy with numpy's default BLAS threads (before) against
    slices scored in place with BLAS on one thread (after), alternating."""
    from threadpoolctl import threadpool_limits

    samples: dict[str, list[tuple[float, float]]] = {}
    for q in queries:
        with _timed(samples, "search_old"):
            _gathered_top(entry, q, 20)
        with threadpool_limits(limits=1, user_api="blas"):
            with _timed(samples, "search_new"):
                entry.top(q, 20)
    return {k: summary(v) for k, v in samples.items()}


async def plans(calls: dict[str, Callable[[int], Awaitable]], count: int) -> dict:
    """Plan in this process at concurrency 1, the variants alternating call by call."""
    samples: dict[str, list[tuple[float, float]]] = {}
    for name, call in calls.items():
        for i in range(3):
            await call(10_000 + i)
    for i in range(count):
        for name, call in calls.items():
            with _timed(samples, name):
                await call(i)
    return {k: summary(v) for k, v in samples.items()}


def table(result: dict) -> Table:
    t = Table("measure", "before wall p50", "p99", "CPU p50", "after wall p50", "p99", "CPU p50",
              title=f"dense retrieval before/after, side by side (ms; load average {os.getloadavg()[0]:.1f} "
                    f"on {os.cpu_count()} CPUs; after: query threads 1, batch threads {INTRA_OP_THREADS})")
    e = result["embedding"]
    for label, key in (("query embedding", "query"), ("64 passages, one batch", "batch")):
        o, n = e[f"{key}_old"], e[f"{key}_new"]
        t.add_row(label, *(f"{o[k]:.1f}" for k in ("wall_p50_ms", "wall_p99_ms", "cpu_p50_ms")),
                  *(f"{n[k]:.1f}" for k in ("wall_p50_ms", "wall_p99_ms", "cpu_p50_ms")))
    for label, key in (("Plan, 100-key set", "plan"), ("Plan, 50k-chunk key", "plan_big")):
        o, n = result["plans"][f"{key}_old"], result["plans"][f"{key}_new"]
        t.add_row(label, *(f"{o[k]:.1f}" for k in ("wall_p50_ms", "wall_p99_ms", "cpu_p50_ms")),
                  *(f"{n[k]:.1f}" for k in ("wall_p50_ms", "wall_p99_ms", "cpu_p50_ms")))
    o, n = result["vector_search"]["search_old"], result["vector_search"]["search_new"]
    t.add_row("top-20 over the 50k-chunk key", *(f"{o[k]:.2f}" for k in ("wall_p50_ms", "wall_p99_ms", "cpu_p50_ms")),
              *(f"{n[k]:.2f}" for k in ("wall_p50_ms", "wall_p99_ms", "cpu_p50_ms")))
    o, n = result["ingest"]["old"], result["ingest"]["new"]
    t.add_row("ingest chunks/s (wall; per CPU s)", f"{o['chunks_per_second']:.1f}", "",
              f"{o['chunks_per_cpu_second']:.1f}", f"{n['chunks_per_second']:.1f}", "",
              f"{n['chunks_per_cpu_second']:.1f}")
    return t


async def run_all(pool, settings, client, questions: list[str], pages, plan_calls: int = 150) -> dict:
    from services.search.dense import DenseRetrieval
    from services.search.indexer import BATCH_CHUNKS
    from services.search.planner import Planner
    from services.search import synthetic

    console.print("  before/after, side by side: loading both encoders ...")
    new = await asyncio.to_thread(Embedder.load)
    old = await asyncio.to_thread(LegacyEmbedder)
    passages = [c for _, chunks in pages for c in chunks][:64]
    result = {"embedding": await asyncio.to_thread(embeddings, old, new, questions[:205], passages)}
    result["ingest"] = await ingest(pool, old, new, pages, BATCH_CHUNKS)
    from services.search.vector_index import VectorIndex

    entry = await VectorIndex(pool, new.model_id, 1 << 30).vectors(synthetic.KEY_PREFIX + "big")
    result["vector_search"] = await asyncio.to_thread(
        vector_search, entry, np.stack([new.embed_one(q) for q in questions[:200]]))
    planners = {name: Planner(settings, pool, client, dense=DenseRetrieval(pool, e, 1 << 30))
                for name, e in (("old", old), ("new", new))}
    calls = {}
    for name, planner in planners.items():
        # distinct messages per variant: the query-embedding cache never answers
        calls[f"plan_{name}"] = (lambda p, n: lambda i: p.plan(synthetic.secret(i % 100),
                                                                f"{questions[(2 * i) % len(questions)]} {n}"))(planner, name)
        calls[f"plan_big_{name}"] = (lambda p, n: lambda i: p.plan(synthetic.big_secret(),
                                                                    f"{questions[(2 * i + 1) % len(questions)]} {n}"))(planner, name)
    for i in range(100):        # load every key's vectors in both planners
        for name in ("old", "new"):
            await planners[name].plan(synthetic.secret(i), "warm up " + questions[i])
    console.print(f"  Plan in this process, concurrency 1, {plan_calls} calls each, before/after alternating ...")
    result["plans"] = await plans(calls, plan_calls)
    result["load_average"] = os.getloadavg()[0]
    console.print(table(result))
    return result
