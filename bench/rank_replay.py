"""Ranking variants replayed over the help-site evaluation's dev split, offline, without a Plan per variant.

    .venv/bin/python -m bench.eval_dev --demo --sites ledgerloop,trailhead --out dev.json
    .venv/bin/python -m bench.rank_replay dev.json [--only prf,bm25]

Reads each dev key's vectors as the search service loads them (`VectorIndex`), the lexical candidates of
every answerable dev question (`retrieval.search`, as Plan asks for them) and its query vector once, then
ranks the candidates under each variant as `strategy.fuse` and `strategy.diversify` would, keeps the
passages at `PARLEY_PASSAGE_MIN_DENSE`, and answers from the first five with the extractive answerer.
Questions that Plan answers NO_ANSWER (the decision is not the ranking's business) count as misses
under every variant, as they do in `bench.eval_dev`. The base variant reproduces `bench.eval_dev`'s
hit@1, hit@3, MRR and fact in answer. Test-split questions are never read here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import numpy as np

from bench.eval_sites import discover, page_key
from services.common.embedding import Embedder
from services.common.sentences import page_title, section_heading
from services.response.extractive import ExtractiveAnswerer
from services.response.llm import AnswerRequest, PassageText
from services.search import retrieval
from services.search.evaluation import fact_found, page_rank
from services.search.vector_index import SENTENCE_WEIGHT, VectorIndex
from services.settings import Settings

SITES = ("ledgerloop", "trailhead")
_CLAUSE = re.compile(r"[^.?!]+[.?!]*")


@dataclass
class Question:
    id: str
    text: str
    pages: tuple[str, ...]
    facts: tuple[str, ...]
    vector: np.ndarray
    relevance: dict[str, float]       # lexical candidates: chunk id -> share of the message's terms
    lexemes: list[str]
    answered: bool                    # Plan decided KNOWLEDGE (or FAQ): its passages count
    clauses: list[str] = field(default_factory=list)
    clause_vectors: np.ndarray | None = None       # each clause encoded alone
    clause_spans: np.ndarray | None = None         # each clause pooled from the message's one encoding


class Key:
    """One dev key: its vectors as the index holds them, its chunks' pages and lexemes."""

    def __init__(self, ids, matrix, sentences, starts, meta, questions) -> None:
        self.ids, self.matrix, self.sentences, self.starts, self.meta, self.questions = (
            ids, matrix, sentences, starts, meta, questions)
        self.row = {str(int(i)): n for n, i in enumerate(ids)}
        self.df = Counter(t for m in meta.values() for t in set(m[3]))
        self.avg_len = float(np.mean([len(m[3]) for m in meta.values()]))
        self.fields: dict[str, np.ndarray] = {}

    def scores(self, query: np.ndarray, top_sentences: int = 1) -> np.ndarray:
        """Every chunk's dense score (VectorIndex: passage and best sentence cosine, mixed)."""
        passage = self.matrix @ query
        sims = self.sentences.astype(np.float32) @ query
        best = passage.copy()
        for i in range(len(self.ids)):
            a, b = self.starts[i], self.starts[i + 1]
            if b > a:
                best[i] = np.sort(sims[a:b])[::-1][:top_sentences].mean()
        return (1 - SENTENCE_WEIGHT) * passage + SENTENCE_WEIGHT * best

    def idf(self, term: str) -> float:
        n, df = len(self.ids), self.df.get(term, 0)
        return math.log(1 + (n - df + 0.5) / (df + 0.5))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


async def collect(settings: Settings, embedder: Embedder, plan: Path) -> dict[str, Key]:
    pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=1, max_size=2)
    index = VectorIndex(pool, embedder.model_id, 1 << 30)
    planner_strategy = {r["id"]: r["plan_strategy"] for records in json.loads(plan.read_text()).values()
                        for r in records}
    keys = {}
    try:
        for site in discover():
            if site.name not in SITES:
                continue
            key_id = f"evaldev-{site.name}"
            kv = await index.vectors(key_id)
            rows = await pool.fetch("SELECT id, url, title, content, tsvector_to_array(tsv) AS lx "
                                    "FROM knowledge_chunks WHERE product_key_id = $1", key_id)
            meta = {str(r["id"]): (r["url"], r["title"], r["content"], list(r["lx"])) for r in rows}
            questions = []
            for q in site.questions:
                if q.split != "dev" or q.kind != "answerable":
                    continue
                lexical = await retrieval.search(pool, key_id, "english", q.text, limit=10,
                                                 candidates=settings.search_candidates)
                lexemes = await pool.fetchval(
                    "SELECT array(SELECT c FROM unnest(tsvector_to_array(to_tsvector('english', $1))) c "
                    "WHERE c <> ALL($2::text[]))", q.text, list(retrieval.FILLER_LEXEMES))
                spans = [(m.start(), m.end()) for m in _CLAUSE.finditer(q.text) if len(m.group().split()) >= 2]
                clauses = [q.text[a:b].strip() for a, b in spans]
                question = Question(q.id, q.text, q.pages, q.facts, embedder.embed_one(q.text),
                                    {c.id: c.relevance for c in lexical}, list(lexemes),
                                    planner_strategy.get(q.id, "KNOWLEDGE") in ("KNOWLEDGE", "FAQ"), clauses)
                if len(clauses) > 1:
                    question.clause_vectors = embedder.embed(clauses)
                    question.clause_spans = embedder.embed_spans([q.text], [[[s] for s in spans]])[1][0]
                questions.append(question)
            key = Key(kv.ids, kv.matrix, kv.sentences, kv.starts, meta, questions)
            titles = [page_title(meta[str(int(i))][1]) for i in kv.ids]
            headed = [" > ".join(p for p in (t, section_heading(meta[str(int(i))][2])) if p)
                      for t, i in zip(titles, kv.ids)]
            key.fields = {"title": embedder.embed(titles), "heading": embedder.embed(headed)}
            keys[site.name] = key
    finally:
        await pool.close()
    return keys


Extra = Callable[[Key, Question, dict[str, float]], dict[str, float]]


def ranked(key: Key, q: Question, *, lexical_weight: float = 0.1, query: np.ndarray | None = None,
           scores: np.ndarray | None = None, lexical: Callable[[Key, Question, str], float] | None = None,
           extra: Extra | None = None, candidates: int = 20, min_dense: float = 0.24) -> list[str]:
    """Plan's passages for a question: the dense top `candidates` and the lexical candidates (a lexical
    one outside the dense top has no dense score, as in dense.py), fused, diversified, kept from
    `min_dense`. `scores` rank (default: the message's own); the dense score that keeps a passage
    is always the message's own, as in Plan's decision."""
    own = key.scores(q.vector)
    rank_by = own if scores is None else scores
    top = np.argsort(-own, kind="stable")[:candidates]
    if scores is not None:      # the variant's own nearest chunks join the candidates
        top = np.unique(np.concatenate([top, np.argsort(-rank_by, kind="stable")[:candidates]]))
    dense = {str(int(key.ids[i])): float(own[i]) for i in top}
    ids = list(q.relevance) + [c for c in dense if c not in q.relevance]
    lex = {c: (lexical(key, q, c) if lexical else q.relevance.get(c, 0.0)) for c in ids}
    fused = {c: (float(rank_by[key.row[c]]) if c in dense else 0.0) + lexical_weight * lex[c] for c in ids}
    if extra is not None:
        fused = extra(key, q, fused)
    order = sorted(ids, key=lambda c: (-fused[c], -dense.get(c, 0.0)))
    seen: Counter[str] = Counter()
    first, rest = [], []
    for c in order:
        page = key.meta[c][0]
        (rest if seen[page] >= 2 else first).append(c)
        seen[page] += 1
    return [c for c in first + rest if dense.get(c, 0.0) >= min_dense][:5]


# Variants. Each maps (key, question) to Plan's passages.

def prf(k: int, alpha: float, weight: float = 1.0):
    """Pseudo-relevance feedback: q' = unit(q + alpha * mean of the k best passages' vectors); the
    ranking score (1 - weight) * score(q) + weight * score(q')."""
    def run(key: Key, q: Question) -> list[str]:
        own = key.scores(q.vector)
        best = np.argsort(-own)[:k]
        again = key.scores(_unit(q.vector + alpha * key.matrix[best].mean(axis=0)))
        return ranked(key, q, scores=(1 - weight) * own + weight * again)
    return run


def clauses(mode: str, weight: float, spans: bool, only_questions: bool):
    """Several clauses: the message's score per chunk with the best clause's, by max or a weighted mean.
    `only_questions`: only messages with two clauses or more that end in "?"."""
    def run(key: Key, q: Question) -> list[str]:
        vectors = q.clause_spans if spans else q.clause_vectors
        several = vectors is not None and (not only_questions or sum(c.endswith("?") for c in q.clauses) > 1)
        if not several:
            return ranked(key, q)
        own = key.scores(q.vector)
        best = np.max([key.scores(_unit(v)) for v in vectors if not np.isnan(v[0])], axis=0)
        return ranked(key, q, scores=np.maximum(own, best) if mode == "max" else (1 - weight) * own + weight * best)
    return run


def bm25(key: Key, q: Question, c: str, k1: float = 1.2, b: float = 0.75) -> float:
    """BM25 of the message's lexemes in the chunk, IDF within the key (tsvector lexemes: tf 1)."""
    have = set(key.meta[c][3])
    norm = (k1 + 1) / (1 + k1 * (1 - b + b * len(key.meta[c][3]) / key.avg_len))
    return sum(key.idf(t) * norm for t in set(q.lexemes) if t in have)


def idf_share(key: Key, q: Question, c: str) -> float:
    """The share of the message's lexemes the chunk holds, each weighted by its IDF within the key."""
    terms = set(q.lexemes)
    total = sum(key.idf(t) for t in terms)
    have = set(key.meta[c][3])
    return sum(key.idf(t) for t in terms if t in have) / total if total else 0.0


def share(key: Key, q: Question, c: str) -> float:
    """The share of the message's lexemes, for every candidate (Plan has it for lexical ones only)."""
    terms = set(q.lexemes)
    return len(terms & set(key.meta[c][3])) / len(terms) if terms else 0.0


def page_bonus(weight: float, mode: str, floor: float = 0.0) -> Extra:
    """A page's other candidates lift each of its chunks: `second` adds weight x its second best score,
    `count` weight per other chunk scoring at least `floor`."""
    def extra(key: Key, q: Question, fused: dict[str, float]) -> dict[str, float]:
        by_page: dict[str, list[float]] = {}
        for c, s in fused.items():
            by_page.setdefault(key.meta[c][0], []).append(s)
        bonus = {}
        for page, s in by_page.items():
            s.sort(reverse=True)
            bonus[page] = weight * (s[1] if len(s) > 1 else 0.0) if mode == "second" else \
                weight * sum(1 for x in s[1:] if x >= floor)
        return {c: s + bonus[key.meta[c][0]] for c, s in fused.items()}
    return extra


def field_bonus(name: str, weight: float):
    """Plus weight x the cosine of the message to the chunk's page title (or "title > heading")."""
    def run(key: Key, q: Question) -> list[str]:
        return ranked(key, q, scores=key.scores(q.vector) + weight * (key.fields[name] @ q.vector))
    return run


def hubness(weight: float, neighbours: int = 0):
    """Minus weight x how close the chunk is to everything: its cosine to the key's mean vector, or
    its mean cosine to its `neighbours` nearest chunks (pages close to every question, such as an FAQ
    or a troubleshooting page, rank lower)."""
    def run(key: Key, q: Question) -> list[str]:
        if neighbours:
            sims = key.matrix @ key.matrix.T
            np.fill_diagonal(sims, -1.0)
            hub = np.sort(sims, axis=1)[:, ::-1][:, :neighbours].mean(axis=1)
        else:
            hub = key.matrix @ _unit(key.matrix.mean(axis=0))
        return ranked(key, q, scores=key.scores(q.vector) - weight * hub)
    return run


VARIANTS: dict[str, dict[str, Callable[[Key, Question], list[str]]]] = {
    "base": {"as Plan ranks (lexical weight 0.1)": lambda k, q: ranked(k, q)},
    "lexical-weight": {f"lexical weight {w:g}": (lambda w: lambda k, q: ranked(k, q, lexical_weight=w))(w)
                       for w in (0.0, 0.05, 0.15, 0.2, 0.3)},
    "prf": {**{f"PRF k={k} alpha={a:g}": prf(k, a) for k in (3, 5) for a in (0.1, 0.3, 0.5, 1.0)},
            **{f"PRF k={k} alpha={a:g}, fused {w:g}": prf(k, a, w) for k in (3, 5) for a in (0.5, 1.0)
               for w in (0.3, 0.5)}},
    "clauses": {f"clauses {'2+ questions' if oq else 'any 2+ sentences'}, {m}{'' if m == 'max' else f' {w:g}'}, "
                f"{'pooled from the message' if sp else 'encoded alone'}": clauses(m, w, sp, oq)
                for oq in (True, False) for sp in (False, True) for m, w in (("max", 0.0), ("mean", 0.2), ("mean", 0.5))},
    "bm25": {**{f"BM25 weight {w:g}": (lambda w: lambda k, q: ranked(k, q, lexical_weight=w, lexical=bm25))(w)
                for w in (0.003, 0.005, 0.01, 0.02)},
             **{f"IDF-weighted share {w:g}": (lambda w: lambda k, q: ranked(k, q, lexical_weight=w, lexical=idf_share))(w)
                for w in (0.05, 0.1, 0.2)},
             **{f"share for every candidate {w:g}": (lambda w: lambda k, q: ranked(k, q, lexical_weight=w, lexical=share))(w)
                for w in (0.1, 0.2)}},
    "page": {**{f"page: + {w:g} x 2nd best chunk, {n} candidates": (lambda w, n: lambda k, q: ranked(
                 k, q, extra=page_bonus(w, "second"), candidates=n))(w, n) for n in (20, 50) for w in (0.05, 0.2)},
             **{f"page: + {w:g} per other chunk >= {f:g}": (lambda w, f: lambda k, q: ranked(
                 k, q, extra=page_bonus(w, "count", f)))(w, f) for w in (0.01, 0.02) for f in (0.3, 0.35)}},
    "fields": {f"+ {w:g} x cos(message, {n})": field_bonus(n, w) for n in ("title", "heading") for w in (0.05, 0.1)},
    "hubness": {f"hubness - {w:g} x {'cos(key mean)' if not n else f'mean cos {n} nearest'}": hubness(w, n)
                for n in (0, 20) for w in (0.05, 0.1)},
    "sentences": {"mean of the 2 best sentences": lambda k, q: ranked(k, q, scores=k.scores(q.vector, 2))},
}


def measure(keys: dict[str, Key], answerer: ExtractiveAnswerer, variant) -> tuple[float, float, float, float]:
    """hit@1, hit@3, MRR, fact in answer over the answerable dev questions."""
    hit1 = hit3 = mrr = facts = n = 0.0
    for key in keys.values():
        for q in key.questions:
            n += 1
            if not q.answered:
                continue
            chunks = variant(key, q)
            rank = page_rank(tuple(page_key(p) for p in q.pages), tuple(page_key(key.meta[c][0]) for c in chunks))
            hit1 += rank == 1
            hit3 += bool(rank and rank <= 3)
            mrr += 1 / rank if rank else 0.0
            passages = [PassageText(c, "page", key.meta[c][1], key.meta[c][2], 0.0) for c in chunks]
            answer = answerer.answer(AnswerRequest(q.text, "", "", "KNOWLEDGE", passages))
            facts += bool(answer.cited and fact_found(q.facts, answer.text))
    return hit1 / n, hit3 / n, mrr / n, facts / n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plan", type=Path, help="bench.eval_dev --out of the same index (Plan's strategies)")
    parser.add_argument("--only", default="", help="comma-separated groups: " + ",".join(VARIANTS))
    args = parser.parse_args(argv)
    settings = Settings()
    embedder = Embedder.load()
    keys = asyncio.run(collect(settings, embedder, args.plan))
    answerer = ExtractiveAnswerer(settings.extractive_max_sentences, min_similarity=settings.extractive_min_similarity,
                                  passages=settings.extractive_passages)
    groups = ["base", *(g for g in (args.only.split(",") if args.only else VARIANTS) if g != "base")]
    print(f"{'dev split, answerable (variant)':64}{'hit@1':>7}{'hit@3':>7}{'MRR':>7}{'fact':>7}")
    for group in groups:
        for name, variant in VARIANTS[group].items():
            print(f"{name:64}" + "".join(f"{x:7.3f}" for x in measure(keys, answerer, variant)), flush=True)


if __name__ == "__main__":
    main()
