"""The sink's write before the COPY path, kept for the stream bench's side-by-side: one statement
that unnests 23 column arrays, inserts into conversations and aggregates histograms in SQL."""

from __future__ import annotations

from collections.abc import Sequence

from services.analytics.histogram import N_BUCKETS, bucket_of
from services.analytics.stream.rows import _CACHE, _STRATEGY, when as _when
from services.common.pb.parley.v1 import events_pb2

# Only turns whose event_id is new are inserted into conversations (RETURNING), and only those are
# counted into metrics_minute.
WRITE_TURNS = f"""
WITH batch AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[],
        $8::text[], $9::text[], $10::text[], $11::text[], $12::float8[], $13::float8[], $14::float8[],
        $15::float8[], $16::int[], $17::int[], $18::float8[], $19::text[],
        $20::int[], $21::int[], $22::int[], $23::int[]
    ) AS b(event_id, product_key_id, session_id, request_id, occurred_at, message, answer,
           strategy, model, cache_status, error_code, total_ms, ttft_ms, search_ms,
           llm_ms, tokens_in, tokens_out, cost_usd, source_ids,
           total_b, ttft_b, search_b, llm_b)
), inserted AS (
    INSERT INTO conversations (event_id, product_key_id, session_id, request_id, occurred_at, message, answer,
                               strategy, model, cache_status, error_code, total_ms, ttft_ms, search_ms, llm_ms,
                               tokens_in, tokens_out, cost_usd, source_ids)
    SELECT event_id, product_key_id, session_id, request_id, occurred_at, message, answer,
           strategy, model, cache_status, error_code, total_ms, ttft_ms, search_ms, llm_ms,
           tokens_in, tokens_out, cost_usd, coalesce(string_to_array(nullif(source_ids, ''), ','), '{{}}')
    FROM batch
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
)
INSERT INTO metrics_minute AS m (product_key_id, minute, strategy, model, turns, cache_hits, errors, no_answers,
                                 tokens_in, tokens_out, total_hist, ttft_hist, search_hist, llm_hist)
SELECT b.product_key_id, date_trunc('minute', b.occurred_at), b.strategy, b.model,
       count(*),
       count(*) FILTER (WHERE b.cache_status IN ('HIT', 'SHARED')),
       count(*) FILTER (WHERE b.error_code <> ''),
       count(*) FILTER (WHERE b.strategy = 'NO_ANSWER'),
       sum(b.tokens_in), sum(b.tokens_out),
       parley_hist_of(array_agg(b.total_b), {N_BUCKETS}),
       parley_hist_of(array_agg(b.ttft_b), {N_BUCKETS}),
       parley_hist_of(array_agg(b.search_b), {N_BUCKETS}),
       parley_hist_of(array_agg(b.llm_b), {N_BUCKETS})
FROM batch b JOIN inserted USING (event_id)
GROUP BY 1, 2, 3, 4
ON CONFLICT (product_key_id, minute, strategy, model) DO UPDATE SET
    turns = m.turns + excluded.turns,
    cache_hits = m.cache_hits + excluded.cache_hits,
    errors = m.errors + excluded.errors,
    no_answers = m.no_answers + excluded.no_answers,
    tokens_in = m.tokens_in + excluded.tokens_in,
    tokens_out = m.tokens_out + excluded.tokens_out,
    total_hist = parley_hist_add(m.total_hist, excluded.total_hist),
    ttft_hist = parley_hist_add(m.ttft_hist, excluded.ttft_hist),
    search_hist = parley_hist_add(m.search_hist, excluded.search_hist),
    llm_hist = parley_hist_add(m.llm_hist, excluded.llm_hist),
    updated_at = now()
"""


def turn_columns(turns: Sequence[events_pb2.ChatTurn]) -> list[list]:
    """The batch as one array per column, in WRITE_TURNS parameter order; duplicates dropped.
    (This runs for every event: plain lookups, no per-call enum descriptor work.)"""
    seen: set[str] = set()
    cols: list[list] = [[] for _ in range(23)]
    (event_id, key_id, session_id, request_id, occurred_at, message, answer, strategy, model, cache_status,
     error_code, total_ms, ttft_ms, search_ms, llm_ms, tokens_in, tokens_out, cost_usd, source_ids,
     total_b, ttft_b, search_b, llm_b) = (c.append for c in cols)
    for t in turns:
        if t.event_id in seen:
            continue
        seen.add(t.event_id)
        tm = t.timings
        usage = t.usage
        event_id(t.event_id)
        key_id(t.product_key_id)
        session_id(t.session_id)
        request_id(t.request_id)
        occurred_at(_when(t.occurred_at))
        message(t.message)
        answer(t.answer)
        strategy(_STRATEGY.get(t.strategy, "UNSPECIFIED"))
        model(t.model or "unknown")
        cache_status(_CACHE.get(t.cache_status, "UNSPECIFIED"))
        error_code(t.error_code)
        total_ms(tm.total_ms)
        ttft_ms(tm.ttft_ms)
        search_ms(tm.search_ms)
        llm_ms(tm.llm_ms)
        tokens_in(usage.prompt_tokens)
        tokens_out(usage.completion_tokens)
        cost_usd(t.cost_usd)
        source_ids(",".join(t.source_ids))
        total_b(bucket_of(tm.total_ms))
        ttft_b(bucket_of(tm.ttft_ms))
        search_b(bucket_of(tm.search_ms))
        llm_b(bucket_of(tm.llm_ms))
    return cols
