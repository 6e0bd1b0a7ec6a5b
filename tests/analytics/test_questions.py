"""TopQuestions and KnowledgeGaps against the real PostgreSQL: what they read of feedback_events."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from services.analytics import queries
from services.common.pb.parley.v1 import analytics_pb2

INSERT_TURN = """
INSERT INTO conversations (event_id, product_key_id, session_id, request_id, occurred_at, message, answer, strategy,
                           model, cache_status, total_ms, ttft_ms, search_ms, llm_ms, tokens_in, tokens_out, cost_usd)
VALUES ($1, $2, 's', $3, $4, $5, 'a', $6, 'extractive', 'MISS', 1, 1, 1, 1, 1, 1, 0)
"""
INSERT_FEEDBACK = """
INSERT INTO feedback_events (event_id, product_key_id, request_id, occurred_at, rating) VALUES ($1, $2, $3, $4, $5)
"""


async def test_rated_down_turns_are_read_from_the_keys_down_ratings_not_from_every_tenants_feedback(stack, pg):
    """With other tenants' feedback in the table (30,000 rows, a third of them down-ratings), the plan of
    both calls reads feedback_events through the index of one key's down-ratings, never by a sequential
    scan of every tenant's; a request rated down twice counts once, and another key's rating of the same
    request id not at all. Everything is seeded in a transaction that is rolled back."""
    key_id = f"down-{uuid.uuid4().hex[:8]}"
    now = datetime.now(timezone.utc)
    start, end = now - timedelta(hours=1), now + timedelta(minutes=1)
    async with pg.acquire() as conn:
        seeding = conn.transaction()
        await seeding.start()
        try:
            await conn.execute(
                "INSERT INTO feedback_events (event_id, product_key_id, request_id, occurred_at, rating) "
                "SELECT $1 || i, $1 || (i % 40), md5(i::text), now(), CASE WHEN i % 3 = 0 THEN -1 ELSE 1 END "
                "FROM generate_series(1, 30000) AS i", f"other-{key_id}-")
            turns = [("open-1", "When are you open?", "KNOWLEDGE"), ("open-2", "when are  you OPEN?", "KNOWLEDGE"),
                     ("mars", "Do you ship to Mars?", "NO_ANSWER")]
            for request, message, strategy in turns:
                await conn.execute(INSERT_TURN, f"{key_id}-{request}", key_id, f"{key_id}-{request}", now, message,
                                   strategy)
            for event, request, rating, owner in (("d1", "open-1", -1, key_id), ("d2", "open-1", -1, key_id),
                                                  ("u1", "open-2", 1, key_id), ("x1", "open-2", -1, f"x-{key_id}")):
                await conn.execute(INSERT_FEEDBACK, f"{key_id}-{event}", owner, f"{key_id}-{request}", now, rating)
            await conn.execute("ANALYZE feedback_events")
            for gaps_only in (False, True):
                plan = "\n".join(r[0] for r in await conn.fetch(
                    "EXPLAIN " + queries.questions_query(gaps_only), key_id, start, end, 20))
                assert "Seq Scan on feedback_events" not in plan, plan
                assert "feedback_events_key_down_idx" in plan, plan
            top = await queries.top_questions(conn, key_id, start, end, 20)
            assert [(q.question, q.count, q.no_answers, q.feedback_down) for q in top] == [
                ("When are you open?", 2, 0, 1), ("Do you ship to Mars?", 1, 1, 0)]
            gaps = await queries.top_questions(conn, key_id, start, end, 20, gaps_only=True)
            assert [(q.question, q.no_answers, q.feedback_down) for q in gaps] == [
                ("When are you open?", 0, 1), ("Do you ship to Mars?", 1, 0)]
        finally:
            await seeding.rollback()


async def test_a_thousand_long_non_ascii_questions_fit_in_one_reply(services, pg, analytics, admin):
    """1,000 questions of 4,000 characters in 3-byte UTF-8 are 12 MB, three times what gRPC sends
    (RESOURCE_EXHAUSTED); each question is cut to QUESTION_CHARS characters, and the reply is served."""
    key_id = f"long-{uuid.uuid4().hex[:8]}"
    now = datetime.now(timezone.utc)
    await pg.execute(
        "INSERT INTO conversations (event_id, product_key_id, session_id, request_id, occurred_at, message, answer,"
        " strategy, model, cache_status, total_ms, ttft_ms, search_ms, llm_ms, tokens_in, tokens_out, cost_usd) "
        "SELECT $1 || i, $1, 's', $1 || i, $2, left(i || ' ' || repeat('営業時間はいつですか', 400), 4000), 'a',"
        " 'NO_ANSWER', 'extractive', 'MISS', 1, 1, 1, 1, 1, 1, 0 FROM generate_series(1, 1000) AS i", key_id, now)
    try:
        for rpc in (analytics.TopQuestions, analytics.KnowledgeGaps):
            reply = await rpc(analytics_pb2.TopQuestionsRequest(product_key_id=key_id, limit=1000), metadata=admin,
                              timeout=30)
            assert len(reply.questions) == 1000
            assert {len(q.question) for q in reply.questions} == {queries.QUESTION_CHARS}
            assert reply.ByteSize() < 4 * 1024 * 1024 // 2
    finally:
        await pg.execute("DELETE FROM conversations WHERE product_key_id = $1", key_id)


async def test_a_question_is_one_whatever_its_case_punctuation_spacing_or_compatibility_forms(stack, pg):
    """As the answer cache tells questions apart: the six forms below are one question, shown as it
    was written most often; a different question stays apart."""
    key_id = f"forms-{uuid.uuid4().hex[:8]}"
    now = datetime.now(timezone.utc)
    forms = ["What are your hours?", "What are your hours?", "what are your hours", "What are your hours?\n",
             "\tWhat are your hours?", "ＷＨＡＴ are your hours?", "What are your hours ?", "What are your hours!!"]
    start, end = now - timedelta(minutes=1), now + timedelta(minutes=1)
    async with pg.acquire() as conn:
        seeding = conn.transaction()
        await seeding.start()
        try:
            others = ["ÉCOLE ouverte ?", "école ouverte", "Привет!", "привет", "营业时间？", "营业时间"]
            apart = ["Is C# supported?", "Is C++ supported?", "👍", "👎"]   # a symbol makes another question
            for i, message in enumerate(forms + ["What are your prices?"] + others + apart):
                await conn.execute(INSERT_TURN, f"{key_id}-{i}", key_id, f"{key_id}-{i}", now, message,
                                   "NO_ANSWER" if i == 2 else "KNOWLEDGE")
            assert await queries._unicode_collation(conn) == "und-x-icu"   # Unicode's rules, whatever the locale
            top = await queries.top_questions(conn, key_id, start, end, 20)
            assert [(q.question, q.count, q.no_answers) for q in top] == [
                ("What are your hours?", len(forms), 1), ("ÉCOLE ouverte ?", 2, 0), ("Привет!", 2, 0),
                ("营业时间", 2, 0), ("Is C# supported?", 1, 0), ("Is C++ supported?", 1, 0), ("What are your prices?", 1, 0),
                ("👍", 1, 0), ("👎", 1, 0)]
            gaps = await queries.top_questions(conn, key_id, start, end, 20, gaps_only=True)
            assert [(q.question, q.no_answers) for q in gaps] == [("What are your hours?", 1)]
        finally:
            await seeding.rollback()
