"""Hybrid lexical retrieval within one key: full text (ts_rank_cd) and trigram similarity, fused by RRF.

One statement per message. Every arm filters on product_key_id first, and the GIN indexes lead with
product_key_id (migration 0002), so a key's search never reads another key's chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

# Words that say how a question is asked rather than what it is about (as stems of the english
# configuration). They neither select passages nor count towards a passage's relevance.
FILLER_LEXEMES = (
    "get", "can", "could", "would", "like", "need", "want", "pleas", "tell", "know", "help", "possibl",
    "also", "anyth", "someth", "thing", "much", "mani", "way", "ok", "hi", "hello", "thank", "question",
)
RRF_K = 60
MAX_QUERY_LEXEMES = 48
# The full-text arm ranks at most this many of the chunks that contain one of the message's lexemes:
# the first found (in the table's physical order, so roughly the oldest). A message of common words
# matches thousands of a large key's chunks, and ranking every one (reading its row, ts_rank_cd) was
# most of Plan's time there: on a 50k-chunk key the statement took a median 38 ms inside PostgreSQL,
# 8.5 ms with this bound (bench/scenario_search.py). Keys where a message matches at most this many
# chunks rank exactly as without it, which covers every key of the help-site evaluation (at most a few
# hundred chunks each) and, for the benchmark's questions, the 1000-chunk keys. On larger keys the
# dense arm still searches every chunk.
LEXICAL_POOL = 500

# The message becomes an OR of its normalised lexemes (so extra words in a question do not exclude a
# passage), built from to_tsvector: tsquery operator characters in the message are plain text, never
# syntax. (websearch_to_tsquery ANDs the terms: as a third arm it moved retrieval hit@1 on the
# evaluation set from 0.85 to 0.87 for ~25% more time per Plan, so it is not used.)
# `known`: the message's lexemes that some chunk of the key contains: a question that names things the
# knowledge never mentions is likely one it does not answer (strategy.py). A lexeme found in a chunk of
# the full-text pool (already read) is known without an index probe; only the others are probed. (The
# probe reads the lexeme's whole posting list in the key's GIN entry, ~2 ms a common lexeme on a
# 50k-chunk key: the statement's median went from 12.4 to 8.1 ms there, 5.0 to 2.0 ms on the 1000-chunk
# keys, side by side in bench/dense_compare.py, with the same rows: tests/search/test_indexes.py.)
# The trigram arm finds FAQ questions that contain the message's terms (word similarity, so typos and
# inflections still match); it searches with the terms only, because the trigrams of "how do I ..."
# are in every FAQ question of every key and their posting lists made the arm the costliest part.
SEARCH_QUERY = """
WITH lx AS MATERIALIZED (
    SELECT array(
        SELECT c FROM (
            SELECT DISTINCT replace(replace(l, '\\', ''), '''', '') AS c
            FROM unnest(tsvector_to_array(to_tsvector($2::regconfig, $3))) AS l
        ) AS s
        WHERE c <> '' AND c <> ALL($4::text[])
        ORDER BY length(c) DESC, c
        LIMIT $7
    ) AS lexemes
), q AS (
    SELECT lexemes, array_to_string(lexemes, ' ') AS words,
           nullif(array_to_string(array(SELECT quote_literal(x) FROM unnest(lexemes) AS x), ' | '), '')::tsquery AS query
    FROM lx
), pool AS MATERIALIZED (      -- bounded: LEXICAL_POOL
    SELECT ch.id, ch.tsv
    FROM knowledge_chunks ch, q
    WHERE ch.product_key_id = $1 AND q.query IS NOT NULL AND ch.tsv @@ q.query
    LIMIT $9
), fts AS (
    SELECT pool.id, ts_rank_cd(pool.tsv, q.query, 32) AS rank
    FROM pool, q
    ORDER BY rank DESC, pool.id
    LIMIT $5
), trg AS (
    SELECT ch.id, word_similarity(q.words, ch.question) AS sim
    FROM knowledge_chunks ch, q
    WHERE ch.product_key_id = $1 AND ch.kind = 'faq' AND q.words <% ch.question
    ORDER BY sim DESC, ch.id
    LIMIT $5
), kn AS MATERIALIZED (
    SELECT array(
        SELECT x FROM unnest(q.lexemes) AS x
        WHERE EXISTS (SELECT 1 FROM pool WHERE pool.tsv @@ quote_literal(x)::tsquery)
           OR EXISTS (SELECT 1 FROM knowledge_chunks ch
                      WHERE ch.product_key_id = $1 AND ch.tsv @@ quote_literal(x)::tsquery)
    ) AS known
    FROM q
), fused AS (
    SELECT coalesce(f.id, t.id) AS id, f.rank, t.sim,
           coalesce(1.0 / ($8 + f.pos), 0) + coalesce(1.0 / ($8 + t.pos), 0) AS rrf
    FROM (SELECT id, rank, row_number() OVER (ORDER BY rank DESC, id) AS pos FROM fts) AS f
    FULL JOIN (SELECT id, sim, row_number() OVER (ORDER BY sim DESC, id) AS pos FROM trg) AS t ON t.id = f.id
)
SELECT ch.id, ch.kind, ch.document, ch.title, ch.question, ch.content, ch.url,
       coalesce(fused.rank, 0) AS rank,
       CASE WHEN ch.kind = 'faq' THEN similarity(ch.question, $3) ELSE 0 END AS sim, fused.rrf,
       array(SELECT x FROM unnest(q.lexemes) AS x WHERE ch.tsv @@ quote_literal(x)::tsquery) AS matched,
       CASE WHEN ch.kind = 'faq' THEN array(
           SELECT l FROM unnest(tsvector_to_array(to_tsvector($2::regconfig, ch.question))) AS l
           WHERE l <> ALL($4::text[])) END AS question_lexemes,
       q.lexemes, kn.known
FROM fused JOIN knowledge_chunks ch ON ch.id = fused.id AND ch.product_key_id = $1
CROSS JOIN q CROSS JOIN kn
ORDER BY fused.rrf DESC, ch.id
LIMIT $6
"""


@dataclass(frozen=True)
class Chunk:
    id: str
    kind: str
    title: str
    question: str
    content: str
    url: str
    score: float                  # fused (RRF), normalised to 0..1
    relevance: float = 0.0        # share of the message's terms the chunk contains
    faq_score: float = 0.0        # how closely an FAQ question matches the message
    document: str = ""
    dense: float = 0.0            # cosine similarity of the chunk's embedding to the message's (dense.py)
    known: float = 0.0            # share of the message's terms that the key's knowledge contains at all
    unknown: tuple[str, ...] = () # the message's lexemes that no chunk of the key contains (strategy.unnamed)
    named: tuple[str, ...] = ()   # the message's lexemes that some chunk of the key contains

    def with_scores(self, **changes: float) -> Chunk:
        """A copy with some scores changed: dataclasses.replace's result at a sixth of its cost (it
        checks every field and calls __init__), which over the ~40 copies of a Plan was ~0.25 ms of CPU."""
        for name in changes:
            if name not in _SCORES:
                raise TypeError(f"Chunk.with_scores() changes scores only, not {name!r}")
        copy = object.__new__(Chunk)
        copy.__dict__.update(self.__dict__, **changes)
        return copy


_SCORES = frozenset({"score", "relevance", "faq_score", "dense", "known"})


def clean_message(message: str) -> str:
    """PostgreSQL text cannot hold NUL or lone surrogates; neither carries meaning here."""
    return message.replace("\x00", " ").encode("utf-8", "replace").decode("utf-8")


def _dice(a: set[str], b: set[str]) -> float:
    return 2 * len(a & b) / (len(a) + len(b)) if a and b else 0.0


async def search(
    conn: asyncpg.Pool | asyncpg.Connection, key_id: str, ts_config: str, message: str, *,
    limit: int, candidates: int = 20, pool: int = LEXICAL_POOL,
) -> list[Chunk]:
    """The key's best chunks for the message, best first. `pool`: how many full-text matches are
    ranked at most (LEXICAL_POOL)."""
    rows = await conn.fetch(
        SEARCH_QUERY, key_id, ts_config, clean_message(message), list(FILLER_LEXEMES),
        candidates, limit, MAX_QUERY_LEXEMES, RRF_K, pool,
    )
    best_possible = 2.0 / (RRF_K + 1)
    # The message's lexemes and those the key knows are the same on every row (one per statement).
    lexemes = set(rows[0]["lexemes"] or ()) if rows else set()
    found = set(rows[0]["known"] or ()) if rows else set()
    known = len(found) / len(lexemes) if lexemes else 0.0
    unknown = tuple(sorted(lexemes - found))
    named = tuple(sorted(found & lexemes))
    chunks = []
    for r in rows:
        matched = set(r["matched"] or ())
        relevance = len(matched) / len(lexemes) if lexemes else 0.0
        faq_score = 0.0
        if r["kind"] == "faq":
            # Trigram similarity catches typos and word order; the lexeme overlap (Dice) catches
            # rephrasing with the same content words. Terms found only in the answer do not count:
            # in the evaluation that made the FAQ strategy pick wrong stored answers.
            faq_score = max(float(r["sim"]), _dice(set(r["question_lexemes"] or ()), lexemes))
        chunks.append(Chunk(
            id=str(r["id"]), kind=r["kind"], title=r["title"], question=r["question"], content=r["content"],
            url=r["url"], score=min(1.0, float(r["rrf"]) / best_possible), relevance=relevance,
            faq_score=faq_score, document=r["document"], known=known, unknown=unknown, named=named,
        ))
    return chunks


async def explain(conn: asyncpg.Pool | asyncpg.Connection, key_id: str, ts_config: str, message: str,
                  *, limit: int = 5, candidates: int = 20) -> str:
    """EXPLAIN of the search statement with these arguments (for tests and operators)."""
    rows = await conn.fetch(
        "EXPLAIN " + SEARCH_QUERY, key_id, ts_config, clean_message(message), list(FILLER_LEXEMES),
        candidates, limit, MAX_QUERY_LEXEMES, RRF_K, LEXICAL_POOL,
    )
    return "\n".join(r[0] for r in rows)
