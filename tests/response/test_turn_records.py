"""Turn records in Redis: a batch of turns goes in one script call, each turn lands where
SubmitFeedback and the session history read it."""

from __future__ import annotations

import asyncio
import uuid

from services.common.redis_client import create_redis
from services.response.cache import RequestRecord, ResponseStore


async def test_a_batch_of_turns_is_one_command_and_every_turn_is_stored(stack):
    client = create_redis(stack.redis_url)
    store = ResponseStore(client, answer_ttl=60, pointer_ttl=30, session_turns=2, session_ttl=60, request_ttl=60)
    key_hash = uuid.uuid4().hex * 2
    session = f"s-{uuid.uuid4().hex[:8]}"
    turns = [(uuid.uuid4().hex, RequestRecord(key_hash, "key-a", session if i != 1 else "", f"question {i}"), f"answer {i}")
             for i in range(4)]
    sent: list[tuple] = []
    execute, pipelined = client.execute_command, store.batch.execute

    async def counting(*args, **options):
        sent.append(args)
        return await execute(*args, **options)

    def counting_pipelined(*args):
        sent.append(args)
        return pipelined(*args)

    client.execute_command, store.batch.execute = counting, counting_pipelined
    try:
        for request_id, record, answer in turns:
            store.record_turn(request_id, record, answer)
        await store.flush()
    finally:
        client.execute_command, store.batch.execute = execute, pipelined
    assert [args[0] for args in sent if args[0] != "SCRIPT LOAD"] == ["EVALSHA"]
    for request_id, record, _ in turns:
        assert await store.request(request_id) == record
    # Three turns had the session, two are kept: the last two, in order.
    history = await store.history("key-a", session)  # a session belongs to the key id
    assert [(t.question, t.answer) for t in history] == [("question 2", "answer 2"), ("question 3", "answer 3")]
    await client.aclose()


async def test_turns_are_stored_after_redis_forgot_the_record_script(stack):
    """A Redis restart or SCRIPT FLUSH forgets the script the records are written with: it is loaded again."""
    client = create_redis(stack.redis_url)
    store = ResponseStore(client, answer_ttl=60, pointer_ttl=30, session_turns=2, session_ttl=60, request_ttl=60)
    first = (uuid.uuid4().hex, RequestRecord(uuid.uuid4().hex * 2, "key-a", "", "question 1"), "answer 1")
    second = (uuid.uuid4().hex, RequestRecord(uuid.uuid4().hex * 2, "key-a", "", "question 2"), "answer 2")
    store.record_turn(*first)
    await store.flush()
    await client.script_flush()
    store.record_turn(*second)
    await store.flush()
    assert await store.request(first[0]) == first[1]
    assert await store.request(second[0]) == second[1]
    await client.aclose()


async def test_flush_returns_while_turns_keep_coming(stack):
    """Follow-ups and feedback flush first; under sustained load, turns recorded after the flush began
    must not keep it waiting: it waits for the turns recorded before it. Redis is 2 ms away here (in
    another zone, or a busy process reads its replies late), so every write finds new turns behind it."""
    client = create_redis(stack.redis_url)
    store = ResponseStore(client, answer_ttl=60, pointer_ttl=30, session_turns=2, session_ttl=60, request_ttl=60)
    execute = store.batch.execute

    async def far(*args):
        reply = await execute(*args)
        await asyncio.sleep(0.002)
        return reply

    store.batch.execute = far
    key_hash = uuid.uuid4().hex * 2
    recorded: list[str] = []
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            recorded.append(uuid.uuid4().hex)
            store.record_turn(recorded[-1], RequestRecord(key_hash, "key-a", "", "question"), "answer")
            await asyncio.sleep(0.0005)

    task = asyncio.create_task(load())
    try:
        await asyncio.sleep(0.2)
        before = list(recorded)
        await asyncio.wait_for(store.flush(), timeout=10)
        written = await client.mget([f"parley:req:{request_id}" for request_id in before])
        assert all(written), "flush returned before the turns recorded ahead of it were written"
    finally:
        stop.set()
        await task
        await store.flush()
        await client.delete(*(f"parley:req:{request_id}" for request_id in recorded))
        await client.aclose()


async def test_two_keys_whose_ids_share_a_long_prefix_never_share_a_session(stack):
    """Key ids run to 63 characters; the same session id under two of them is two sessions."""
    client = create_redis(stack.redis_url)
    store = ResponseStore(client, answer_ttl=60, pointer_ttl=30, session_turns=4, session_ttl=60, request_ttl=60)
    prefix = f"acme-corporation-support-widget-{uuid.uuid4().hex[:12]}"
    key_a, key_b = f"{prefix}-eu", f"{prefix}-us"
    store.record_turn(uuid.uuid4().hex, RequestRecord(uuid.uuid4().hex * 2, key_a, "1", "what is my order number?"),
                      "ORD-1234")
    await store.flush()
    assert [t.question for t in await store.history(key_a, "1")] == ["what is my order number?"]
    assert await store.history(key_b, "1") == ()
    await client.aclose()


async def test_a_record_of_a_non_ascii_message_is_stored_as_utf8(stack):
    client = create_redis(stack.redis_url)
    store = ResponseStore(client, answer_ttl=60, pointer_ttl=30, session_turns=2, session_ttl=60, request_ttl=60)
    request_id, message = uuid.uuid4().hex, "配送にはどのくらい時間がかかりますか" * 100
    record = RequestRecord(uuid.uuid4().hex * 2, "key-a", "", message)
    store.record_turn(request_id, record, "answer")
    await store.flush()
    assert await store.request(request_id) == record
    stored = await client.get(f"parley:req:{request_id}")
    assert len(stored) < len(message.encode()) + 500     # not six bytes a character, as \\uXXXX escapes are
    await client.aclose()
