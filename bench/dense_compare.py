"""Before/after of the dense retrieval speed work, side by side in one run (same moment, same background
load), call by call alternating. Before is the code as it was before this work: batches of texts
grouped by characters and each split across the session's threads (`LegacyEmbedder`), every lexeme of
the message probed in the key's full-text index for `known` (`PROBED_SEARCH_QUERY`), and the retrieval
(query embedding and statement) started only once the key is validated; for ingest, before is the
indexing path that encodes each sentence of a chunk apart from its passage (the
default) and after the sentence vectors read in the passage (PARLEY_EMBEDDING_SENTENCES=in-passage).
After is otherwise the current code (fp32 encoder). A third column runs
the current code with the int8 encoder (PARLEY_EMBEDDING_PRECISION=int8, not the default: see README).
Each figure is given as wall clock and as CPU time of this process: on a busy machine the wall clock
mostly measures waiting for a core."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from rich.table import Table

from bench.harness import console
from bench.load import quantile
import numpy as np

from services.common.embedding import DIMENSIONS, INTRA_OP_THREADS, MODEL_ID, Embedder, model_dir, model_id
from services.common.knowledge_store import NewChunk
from services.search import keys, retrieval, synthetic

VARIANTS = ("before", "after", "int8")

# The statement before the known lexemes were first looked up in the full-text pool: every lexeme probed
# in the key's GIN entry.
PROBED_SEARCH_QUERY = retrieval.SEARCH_QUERY.replace(
    "WHERE EXISTS (SELECT 1 FROM pool WHERE pool.tsv @@ quote_literal(x)::tsquery)\n           OR EXISTS", "WHERE EXISTS")
assert PROBED_SEARCH_QUERY != retrieval.SEARCH_QUERY

class LegacyEmbedder(Embedder):
    """The fp32 encoder's batch path as it was before this work: texts sorted by characters, tokenised
    per batch (padded to the batch's longest), each batch on one session of INTRA_OP_THREADS threads."""

    def embed(self, texts, batch_size: int = 16) -> np.ndarray:
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            picked = order[start:start + batch_size]
            encodings = self._tokenizer.encode_batch([texts[i] for i in picked])
            out[picked] = self._embed_pieces([e.ids[:sum(e.attention_mask)] for e in encodings],
                                             self.session(INTRA_OP_THREADS))
        return out


def help_site_pages(limit: int) -> list[tuple[str, list[str]]]:
    """The first pages of the evaluation's help sites as the crawler chunks them (passages and
    sentences of real lengths, unlike the benchmark's uniform ones), up to `limit` chunks."""
    import re

    from bench.eval_sites import discover
    from services.scraper.extract import chunk_page, extract_html

    sites = [s for s in discover() if s.root is not None]
    files = [[s.root / u for u in re.findall(r"<loc>\s*https?://SITE/([^<\s]*)\s*</loc>",
                                             (s.root / "sitemap.xml").read_text())] for s in sites]
    pages, total = [], 0
    for group in zip(*files):           # the sites in turn
        for file in group:
            if not file.is_file():
                continue
            page = extract_html(file.read_text(), f"http://site.test/{file.name}")
            chunks = [c for c in dict.fromkeys(chunk_page(page)) if c.strip()]
            if page.noindex or not chunks or page.title in {t for t, _ in pages}:
                continue        # the title names the document in `ingest`
            pages.append((page.title, chunks))
            total += len(chunks)
            if total >= limit:
                return pages
    return pages


def same_vectors(before: Embedder, after: Embedder, texts: list[str]) -> dict:
    """The batch path's vectors before and after on the same texts: they must not move."""
    a, b = before.embed(texts), after.embed(texts)
    cosine = (a * b).sum(axis=1)
    return {"texts": len(texts), "min_cosine": float(cosine.min()), "max_abs_diff": float(np.abs(a - b).max())}


class LegacyStatements:
    """A pool that runs the search statement of before this work in place of the current one."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def fetch(self, query: str, *args, **kwargs):
        if query == retrieval.SEARCH_QUERY:
            query = PROBED_SEARCH_QUERY
        return await self._pool.fetch(query, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._pool, name)


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


def embeddings(encoders: dict[str, Embedder], questions: list[str], passages: list[str], rounds: int = 3) -> dict:
    """Query embedding (distinct questions, the encoders alternating) and a call of 64 texts (batches of
    16), alternately."""
    samples: dict[str, list[tuple[float, float]]] = {}
    for q in questions[:5]:
        for e in encoders.values():
            e.embed_one(q)
    for q in questions[5:]:
        for name, e in encoders.items():
            if name == "after":      # the query path is the same before and after
                continue
            with _timed(samples, f"query_{name}"):
                e.embed_one(q)
    for _ in range(rounds):
        for name, e in encoders.items():
            with _timed(samples, f"batch_{name}"):
                e.embed(passages, 16)
    return {k: summary(v) for k, v in samples.items()}


def word_pieces(embedder: Embedder, pages: list[tuple[str, list[str]]]) -> dict:
    """Word pieces encoded per chunk: the passage and its sentences apart (before), the passage once and
    only the sentences it could not give (after)."""
    from services.search.indexing import ChunkText

    texts = [ChunkText.of(NewChunk(c), "page", title) for title, chunks in pages for c in chunks]
    count = lambda xs: sum(len(e.ids) for e in embedder._pieces.encode_batch(xs)) if xs else 0  # noqa: E731
    passages = count([t.passage for t in texts])
    sentences = count([s for t in texts for s in t.sentences])
    apart = count([s for t in texts for s, r in zip(t.sentences, t.spans) if r is None])
    return {"chunks": len(texts), "before": (passages + sentences) / len(texts), "after": (passages + apart) / len(texts)}


async def ingest(pool: asyncpg.Pool, indexings: dict, pages: list[tuple[str, list[str]]], batch_chunks: int) -> dict:
    """The same pages written through the indexing path, each variant into a fresh key of its own, batched
    as the indexer batches them (up to `batch_chunks` chunks a model call, each page in its own
    transaction); the variants alternate batch by batch."""
    from services.search.indexing import Document

    groups: list[list[tuple[str, list[str]]]] = [[]]
    for page in pages:
        if sum(len(p[1]) for p in groups[-1]) + len(page[1]) > batch_chunks:
            groups.append([])
        groups[-1].append(page)
    runs = {}
    for name, indexing in indexings.items():
        key, _ = await keys.create_key(pool, name=f"Bench ingest {name}", key_id=f"bench-cmp-{uuid.uuid4().hex[:8]}")
        runs[name] = (key.id, indexing, [0.0, 0.0])
    for group in filter(None, groups):
        for name, (key_id, indexing, spent) in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            docs = [Document(key_id, "page", title, [NewChunk(c) for c in chunks]) for title, chunks in group]
            vectors, _ = await indexing.embeddings_of(docs)
            for (title, _chunks), doc, v in zip(group, docs, vectors):
                await indexing.write(key_id, "page", title, title, title, doc.chunks, replace={title}, vectors=v)
            spent[0] += time.perf_counter() - t0
            spent[1] += time.process_time() - c0
    # Dropped afterwards: chunks of a model other than the default (int8) would be re-embedded by the
    # indexer at its next start, in the middle of the next run's ingest measurement.
    await pool.execute("DELETE FROM product_keys WHERE id = ANY($1::text[])", [r[0] for r in runs.values()])
    out = {}
    chunks = sum(len(p[1]) for p in pages)
    for name, (_key, _indexing, (wall, cpu)) in runs.items():
        out[name] = {"chunks": chunks, "seconds": wall, "cpu_seconds": cpu, "chunks_per_second": chunks / wall,
                     "chunks_per_cpu_second": chunks / cpu}
        console.print(f"    ingest {name}: {chunks} chunks, {chunks / wall:.1f}/s wall, {chunks / cpu:.1f} per CPU s")
    return out


async def statements(pool: asyncpg.Pool, questions: list[str], settings, count: int = 100) -> dict:
    """The search statement inside PostgreSQL (EXPLAIN ANALYZE execution time), before and after
    alternating, on the 100-key set and on the 50k-chunk key."""
    samples: dict[str, list[float]] = {}
    args = (list(retrieval.FILLER_LEXEMES), settings.search_candidates, 2 * settings.max_passages,
            retrieval.MAX_QUERY_LEXEMES, retrieval.RRF_K)
    for i, q in enumerate(questions[:count]):
        for where, key in (("keys", synthetic.key_id(i % 100)), ("big", synthetic.KEY_PREFIX + "big")):
            for name, sql in (("before", PROBED_SEARCH_QUERY), ("after", retrieval.SEARCH_QUERY)):
                rows = await pool.fetch("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, key, "english", q, *args,
                                        retrieval.LEXICAL_POOL)
                samples.setdefault(f"{where}_{name}", []).append(json.loads(rows[0][0])[0]["Execution Time"])
    out = {}
    for k, v in samples.items():
        v.sort()
        out[k] = {"n": len(v), "p50_ms": statistics.median(v), "p99_ms": quantile(v, 0.99)}
    return out


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


def _cells(d: dict, keys=("wall_p50_ms", "wall_p99_ms", "cpu_p50_ms"), fmt="{:.1f}") -> list[str]:
    return [fmt.format(d[k]) for k in keys]


def table(result: dict) -> Table:
    t = Table("measure", *(f"{v} {c}" for v in VARIANTS for c in ("wall p50", "p99", "CPU p50")),
              title=f"dense retrieval before/after, side by side (ms; load average {os.getloadavg()[0]:.1f} "
                    f"on {os.cpu_count()} CPUs; query threads 1, batch threads {INTRA_OP_THREADS})")
    e = result["embedding"]
    t.add_row("query embedding", *_cells(e["query_before"]), *_cells(e["query_before"]), *_cells(e["query_int8"]))
    t.add_row("64 passages, batches of 16", *(c for v in VARIANTS for c in _cells(e[f"batch_{v}"])))
    for label, key in (("Plan, 100-key set", "plan"), ("Plan, 50k-chunk key", "plan_big")):
        t.add_row(label, *(c for v in VARIANTS for c in _cells(result["plans"][f"{key}_{v}"])))
    s = result["statements"]
    for label, key in (("statement in PostgreSQL, 100-key set", "keys"), ("statement in PostgreSQL, 50k key", "big")):
        t.add_row(label, *_cells(s[f"{key}_before"], ("p50_ms", "p99_ms")), "", *_cells(s[f"{key}_after"], ("p50_ms", "p99_ms")),
                  "", "", "", "")
    for label, key in (("ingest chunks/s, benchmark pages (wall; per CPU s; before: sentences encoded apart, the default; after: read in the passage, an option)", "ingest"),
                       ("ingest chunks/s, help-site pages (wall; per CPU s; before: sentences encoded apart, the default; after: read in the passage, an option)",
                        "ingest_sites")):
        i = result[key]
        t.add_row(label, *(c for v in VARIANTS for c in (f"{i[v]['chunks_per_second']:.1f}", "",
                                                         f"{i[v]['chunks_per_cpu_second']:.1f}")))
    return t


async def run_all(pool, settings, client, questions: list[str], pages, plan_calls: int = 150) -> dict:
    from services.search.dense import DenseRetrieval
    from services.search.indexer import BATCH_CHUNKS
    from services.search.planner import Planner
    from services.search.vector_index import VectorIndex

    console.print("  before/after, side by side: loading the fp32 (before and after) and int8 encoders ...")
    legacy = await asyncio.to_thread(LegacyEmbedder, model_dir(), "fp32")
    fp32 = await asyncio.to_thread(Embedder, model_dir(), "fp32")
    int8 = await asyncio.to_thread(Embedder, model_dir(), "int8")
    encoders = {"before": legacy, "after": fp32, "int8": int8}
    passages = [c for _, chunks in pages for c in chunks][:64]
    sites = help_site_pages(len([c for _, chunks in pages for c in chunks]))
    site_texts = [t for title, chunks in sites for c in chunks
                  for t in (NewChunk(c).embedding_text(title), *NewChunk(c).sentence_texts("page", title))]
    result = {"embedding": await asyncio.to_thread(embeddings, encoders, questions[:205], passages)}
    result["same_vectors"] = await asyncio.to_thread(same_vectors, legacy, fp32, site_texts)
    console.print("    before/after vectors of {texts} help-site passages and sentences: min cosine {min_cosine:.7f}, "
                  "max abs difference {max_abs_diff:.2g}".format(**result["same_vectors"]))
    # Ingest: before is the indexing path with each sentence encoded apart (fp32, the default); after
    # pools the sentence vectors from the passage's encoding (PARLEY_EMBEDDING_SENTENCES=in-passage);
    # int8 is the default path with the int8 encoder.
    from services.search.indexing import Indexing

    in_passage = copy.copy(fp32)     # the same sessions, sentence vectors read in their passage
    in_passage.sentences, in_passage.model_id = "in-passage", model_id(fp32.precision, fp32.weights_sha256, "in-passage")
    indexings = {"before": Indexing(pool, load_embedder=lambda: fp32), "after": Indexing(pool, load_embedder=lambda: in_passage),
                 "int8": Indexing(pool, load_embedder=lambda: int8)}
    result["word_pieces"] = {"pages": word_pieces(fp32, pages), "sites": word_pieces(fp32, sites)}
    console.print("    word pieces encoded per chunk, before → after: benchmark pages {:.0f} → {:.0f}, help-site pages "
                  "{:.0f} → {:.0f}".format(*(result["word_pieces"][k][v] for k in ("pages", "sites")
                                             for v in ("before", "after"))))
    result["ingest"] = await ingest(pool, indexings, pages, BATCH_CHUNKS)
    result["ingest_sites"] = await ingest(pool, indexings, sites, BATCH_CHUNKS)
    console.print("  the search statement inside PostgreSQL, before/after alternating ...")
    result["statements"] = await statements(pool, questions[205:], settings)
    planners = {}
    for name, embedder, statements_pool in (("before", fp32, LegacyStatements(pool)), ("after", fp32, pool),
                                            ("int8", int8, pool)):
        retrieval_ = DenseRetrieval(statements_pool, embedder, 1 << 30)
        # the synthetic keys' random vectors are stored under the default model's id, whatever the encoder
        retrieval_.index = VectorIndex(statements_pool, MODEL_ID, 1 << 30)
        planners[name] = Planner(settings, statements_pool, client, dense=retrieval_, early=name != "before")
    calls = {}
    for name, planner in planners.items():
        # distinct messages per variant: the query-embedding cache never answers
        calls[f"plan_{name}"] = (lambda p, n: lambda i: p.plan(synthetic.secret(i % 100),
                                                                f"{questions[(2 * i) % len(questions)]} {n}"))(planner, name)
        calls[f"plan_big_{name}"] = (lambda p, n: lambda i: p.plan(synthetic.big_secret(),
                                                                    f"{questions[(2 * i + 1) % len(questions)]} {n}"))(planner, name)
    for i in range(100):        # load every key's vectors in every planner
        for name in VARIANTS:
            await planners[name].plan(synthetic.secret(i), "warm up " + questions[i])
    console.print(f"  Plan in this process, concurrency 1, {plan_calls} calls each, variants alternating ...")
    result["plans"] = await plans(calls, plan_calls)
    result["load_average"] = os.getloadavg()[0]
    console.print(table(result))
    return result
