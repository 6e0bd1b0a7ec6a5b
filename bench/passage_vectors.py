"""Cheaper ways to get a chunk's vectors than encoding its passage and then each of its sentences apart,
compared on the dev split of the help-site evaluation and on the demo set.

    .venv/bin/python -m bench.passage_vectors [--variants encoded,mean,ctx,...] [--out results.json]

Needs the keys that `python -m bench.eval_dev --demo --sites ledgerloop,trailhead` wrote. Two families:
- the passage vector derived from the stored sentence vectors (VARIANTS: their mean, weighted by word
  pieces or not, with the title's vector or not), the sentence vectors untouched;
- the sentence vectors pooled from the passage's own encoding over each sentence's word pieces
  (CONTEXTUAL), the passage vector untouched; with a share of the passage's or the title's vector, or
  short sentences still encoded apart.
For each variant the keys' vectors are replaced, `bench.eval_dev` runs in a fresh process (a fresh vector
index) and its dev table is collected (and the demo set's hit@1/hit@3 for the contextual family); the
stored vectors are put back at the end. Test-split questions are never asked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
import numpy as np

from services.common.embedding import DIMENSIONS, Embedder
from services.common.knowledge_store import VECTOR_BYTES, NewChunk
from services.common.sentences import page_title, section_heading
from services.settings import Settings

SITES = ("ledgerloop", "trailhead")      # the sites with dev questions
VARIANTS = ("encoded", "mean", "pieces", "mean_title", "pieces_title", "sqrt_pieces")
# The other way round: the passage encoded once, as today, and each sentence's vector pooled from the
# passage's token vectors over the sentence's span ("late chunking"): the passage vector is unchanged.
CONTEXTUAL = ("ctx", "ctx_head", "ctx_minus_0.25", "ctx_minus_0.5", "ctx_plus_head_0.3", "ctx_plus_head_0.6",
              "ctx_short_apart_12", "ctx_short_apart_16")


def _pattern(text: str) -> re.Pattern:
    return re.compile(r"\s+".join(re.escape(w) for w in text.split()))


def spans(unit: str, text: str, start: int) -> list[tuple[int, int]] | None:
    """Character ranges of `text` that a quotable unit was made of (a sentence of a line, a whole
    line, or "label: value" joined from two lines), searched from `start`."""
    found = _pattern(unit).search(text, start)
    if found:
        return [found.span()]
    for at in [m.start() for m in re.finditer(": ", unit)]:
        left, right = unit[:at], unit[at + 2:]
        a = _pattern(left).search(text) if left.strip() else None
        b = _pattern(right).search(text, a.end() if a else start) if right.strip() else None
        if a and b:
            return [a.span(), b.span()]
    return None


def contextual(embedder: Embedder, r: asyncpg.Record) -> tuple[np.ndarray, dict[str, list[np.ndarray | None]]]:
    """The chunk's passage encoded once: (its pooled vector, {variant: each unit's vector pooled over
    the unit's tokens, None where a unit is not found or was truncated away})."""
    from services.common.sentences import units

    chunk = NewChunk(r["content"], r["question"])
    text = chunk.embedding_text(r["title"])
    encoding = embedder._pieces.encode(text)
    ids = np.asarray([encoding.ids], dtype=np.int64)
    hidden = embedder._encode(ids, np.ones_like(ids, dtype=np.int32), embedder.session(1))[0]
    offsets = np.asarray(encoding.offsets)
    special = np.asarray(encoding.special_tokens_mask, dtype=bool)
    heading = section_heading(r["content"])
    head_end = len(r["title"]) + 1 + (len(heading) + 1 if heading else 0)   # the title and heading lines
    head = special | (offsets[:, 1] <= head_end)
    out: dict[str, list[np.ndarray | None]] = {v: [] for v in CONTEXTUAL}
    at = len(r["title"]) + 1
    for u in units(r["content"], heading)[:24]:
        found = spans(u.text, text, at)
        picked = np.zeros(len(offsets), dtype=bool)
        for a, b in found or []:
            picked |= (offsets[:, 0] >= a) & (offsets[:, 1] <= b) & ~special
        if not found or not picked.any():
            for v in CONTEXTUAL:
                out[v].append(None)
            continue
        at = found[0][0]
        ctx = _unit(hidden[picked].mean(axis=0))
        out["ctx"].append(ctx)
        out["ctx_head"].append(_unit(hidden[picked | head].mean(axis=0)))
        for share in (0.25, 0.5):     # less of what every sentence of the passage shares
            out[f"ctx_minus_{share}"].append(_unit(ctx - share * _unit(hidden.mean(axis=0))))
        for most in (12, 16):         # a short sentence (at most this many word pieces) encoded apart
            out[f"ctx_short_apart_{most}"].append(ctx if picked.sum() > most else "apart")
        where = _unit(hidden[head & ~special].mean(axis=0))     # the title and heading lines' pieces
        for share in (0.3, 0.6):      # some of where the sentence stands, as the prefix gave it
            out[f"ctx_plus_head_{share}"].append(_unit(ctx + share * where))
    return _unit(hidden.mean(axis=0)), out


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def derive(variant: str, sentences: np.ndarray, pieces: list[int], title: np.ndarray | None) -> np.ndarray:
    """A passage vector from its sentence vectors (n, 384) and their word-piece counts."""
    if variant.startswith("pieces"):
        weights = np.asarray(pieces, dtype=np.float32)
    elif variant == "sqrt_pieces":
        weights = np.sqrt(np.asarray(pieces, dtype=np.float32))
    else:
        weights = np.ones(len(sentences), dtype=np.float32)
    total = weights @ sentences
    if variant.endswith("_title") and title is not None:
        total = total + (weights.mean() if variant.startswith("pieces") else 1.0) * title
    return _unit(total)


async def rows(pool: asyncpg.Pool, demo: bool = False) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, kind, title, question, content, embedding, sentence_embeddings FROM knowledge_chunks"
        " WHERE product_key_id = ANY($1::text[]) ORDER BY id", ["evaldev-demo"] if demo else [f"evaldev-{s}" for s in SITES])


async def demo_ranks(pool: asyncpg.Pool) -> dict:
    """The demo set over the demo key that `bench.eval_dev --demo` wrote (not written again here)."""
    import redis.asyncio as redis

    from services.launcher import REPO
    from services.search import keys as key_store
    from services.search.dense import DenseRetrieval
    from services.search.evaluation import Hit, Outcome, evaluate, load_cases
    from services.search.planner import Planner

    settings = Settings()
    secret = "pk_evaldev-demo-vectors"
    await pool.execute("UPDATE product_keys SET key_hash = $1 WHERE id = 'evaldev-demo'", key_store.hash_secret(secret))
    client = redis.from_url(settings.redis_url)
    try:
        dense = await DenseRetrieval.load(pool, settings.vector_index_max_bytes, settings.dense_candidates)
        planner = Planner(settings, pool, client, dense=dense)
        outcomes = []
        for case in load_cases(REPO / "tests" / "search" / "eval_demo.json"):
            d = (await planner.plan(secret, case.question, max_passages=3)).decision
            outcomes.append(Outcome(case, d.strategy, [Hit(c.kind, c.title or c.question, c.content if c.kind != "faq"
                                                           else f"{c.question}\n{c.content}", c.url) for c in d.chunks]))
    finally:
        await client.aclose()
    report = evaluate(outcomes)
    return {"hit_at_1": report.hit_at_1, "hit_at_3": report.hit_at_3, "mrr": report.mrr,
            "strategy_accuracy": report.strategy_accuracy}


def prepare(embedder: Embedder, chunks: list[asyncpg.Record]) -> tuple[list[dict], dict]:
    """Each chunk's stored vectors, its sentences' word-piece counts and the vector of its "where" (page
    title > section heading); and the word pieces a chunk costs encoded each way."""
    out, cost = [], {"passage": 0, "sentences": 0, "where": 0, "chunks": 0, "without_sentences": 0}
    wheres: dict[str, np.ndarray] = {}
    for r in chunks:
        chunk = NewChunk(r["content"], r["question"])
        texts = chunk.sentence_texts(r["kind"], r["title"])
        sentences = np.frombuffer(bytes(r["sentence_embeddings"] or b""), dtype="<f4").reshape(-1, DIMENSIONS)
        assert len(sentences) == len(texts), (r["id"], len(sentences), len(texts))
        pieces = [len(e.ids) for e in embedder._pieces.encode_batch(texts)] if texts else []
        passage_pieces = len(embedder._pieces.encode(chunk.embedding_text(r["title"])).ids)
        where = " > ".join(p for p in (page_title(r["title"]), section_heading(r["content"])) if p)
        if where and where not in wheres:
            wheres[where] = embedder.embed([where])[0]
            cost["where"] += len(embedder._pieces.encode(where).ids)
        cost["passage"] += passage_pieces
        cost["sentences"] += sum(pieces)
        cost["chunks"] += 1
        cost["without_sentences"] += not texts
        out.append({"id": r["id"], "encoded": np.frombuffer(bytes(r["embedding"]), dtype="<f4"),
                    "sentences": sentences, "pieces": pieces, "where": wheres.get(where),
                    "passage_pieces": passage_pieces})
    return out, cost


async def apply_sentences(pool: asyncpg.Pool, embedder: Embedder, chunks: list[asyncpg.Record],
                          variant: str, keys: list[str] = [f"evaldev-{s}" for s in SITES]) -> dict:
    """Every chunk's sentence vectors replaced by the variant's contextual ones (a unit not found in
    the passage, or truncated away, keeps its own encoding)."""
    ids, vectors, cosines, missing, passage_moved, pieces_apart = [], [], [], 0, [], []
    for r in chunks:
        stored = np.frombuffer(bytes(r["sentence_embeddings"] or b""), dtype="<f4").reshape(-1, DIMENSIONS)
        if not len(stored):
            continue
        passage, by_variant = contextual(embedder, r)
        texts = NewChunk(r["content"], r["question"]).sentence_texts(r["kind"], r["title"])
        apart = [i for i, v in enumerate(by_variant[variant]) if isinstance(v, str)]
        if apart:
            for i, v in zip(apart, embedder.embed([texts[i] for i in apart])):
                by_variant[variant][i] = v
            pieces_apart.append(sum(len(e.ids) for e in embedder._pieces.encode_batch([texts[i] for i in apart])))
        passage_moved.append(float(passage @ np.frombuffer(bytes(r["embedding"]), dtype="<f4")))
        rows = []
        for own, ctx in zip(stored, by_variant[variant]):
            if ctx is None:
                missing += 1
                rows.append(own)
            else:
                cosines.append(float(own @ ctx))
                rows.append(ctx)
        ids.append(r["id"])
        vectors.append(np.asarray(rows, dtype="<f4").tobytes())
    await pool.execute("UPDATE knowledge_chunks ch SET sentence_embeddings = u.e"
                       " FROM unnest($1::bigint[], $2::bytea[]) AS u(id, e) WHERE ch.id = u.id", ids, vectors)
    await pool.execute("UPDATE product_keys SET knowledge_version = knowledge_version + 1 WHERE id = ANY($1::text[])",
                       keys)
    return {"units_not_found": missing, "pieces_apart": sum(pieces_apart), "cosine_to_own_median": float(np.median(cosines)),
            "passage_recomputed_min_cosine": float(min(passage_moved))}


async def restore_sentences(pool: asyncpg.Pool, chunks: list[asyncpg.Record]) -> None:
    await pool.execute("UPDATE knowledge_chunks ch SET sentence_embeddings = u.e"
                       " FROM unnest($1::bigint[], $2::bytea[]) AS u(id, e) WHERE ch.id = u.id",
                       [r["id"] for r in chunks], [bytes(r["sentence_embeddings"] or b"") for r in chunks])


async def apply(pool: asyncpg.Pool, prepared: list[dict], variant: str) -> None:
    ids, vectors = [], []
    for c in prepared:
        if variant == "encoded" or not len(c["sentences"]):
            v = c["encoded"]        # no sentence to derive it from: the passage is encoded
        else:
            v = derive(variant, c["sentences"], c["pieces"], c["where"])
        ids.append(c["id"])
        vectors.append(v.astype("<f4").tobytes())
    assert all(len(v) == VECTOR_BYTES for v in vectors)
    await pool.execute("UPDATE knowledge_chunks ch SET embedding = u.e FROM unnest($1::bigint[], $2::bytea[]) AS u(id, e)"
                       " WHERE ch.id = u.id", ids, vectors)
    await pool.execute("UPDATE product_keys SET knowledge_version = knowledge_version + 1 WHERE id = ANY($1::text[])",
                       [f"evaldev-{s}" for s in SITES])


def dev_table(out: str) -> dict[str, list[float]]:
    table = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in (*SITES, "total") and len(parts) == 9 and re.match(r"\d", parts[1]):
            table[parts[0]] = [float(x) for x in parts[1:]]
    return table


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = Settings()
    pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=1, max_size=2)
    embedder = Embedder.load()
    results: dict = {}
    chunks = await rows(pool)
    demo_chunks = await rows(pool, demo=True)
    prepared, cost = prepare(embedder, chunks)
    try:
        results["word_pieces"] = cost
        print("word pieces:", cost, flush=True)
        for variant in args.variants.split(","):
            if variant in CONTEXTUAL:
                moved = await apply_sentences(pool, embedder, chunks, variant)
                print(variant, moved, flush=True)
                done = subprocess.run([sys.executable, "-m", "bench.eval_dev", "--sites", ",".join(SITES)],
                                      capture_output=True, text=True, check=True)
                results[variant] = {"dev": dev_table(done.stdout), **moved}
                if demo_chunks:
                    await apply_sentences(pool, embedder, demo_chunks, variant, ["evaldev-demo"])
                    results[variant]["demo"] = await demo_ranks(pool)
                    await restore_sentences(pool, demo_chunks)
                print(variant, json.dumps(results[variant]), flush=True)
                await restore_sentences(pool, chunks)
                continue
            await apply(pool, prepared, variant)
            moved = [float(np.dot(c["encoded"], derive(variant, c["sentences"], c["pieces"], c["where"])))
                     for c in prepared if len(c["sentences"])] if variant != "encoded" else [1.0]
            done = subprocess.run([sys.executable, "-m", "bench.eval_dev", "--sites", ",".join(SITES)],
                                  capture_output=True, text=True, check=True)
            results[variant] = {"dev": dev_table(done.stdout), "cosine_to_encoded_median": float(np.median(moved)),
                                "cosine_to_encoded_min": float(np.min(moved))}
            print(variant, json.dumps(results[variant]), flush=True)
    finally:
        await apply(pool, prepared, "encoded")
        await restore_sentences(pool, chunks)
        await pool.close()
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
