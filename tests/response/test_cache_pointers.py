"""Key pointers of the answer cache after knowledge updates: a pointer never goes back to an older
knowledge version, neither in Redis nor in the in-process copy of hot answers."""

from __future__ import annotations

import asyncio
import uuid

from services.common.pb.parley.v1 import common_pb2, response_pb2
from services.response.cache import _LOOKUP, PREFIX, Pointer, ResponseStore, question_hash, secret_hash
from tests.conftest import make_key


def _store(client, local_seconds: float = 0.0) -> ResponseStore:
    return ResponseStore(client, answer_ttl=60, pointer_ttl=30, session_turns=2, session_ttl=60, request_ttl=60,
                         local_seconds=local_seconds)


def _ids() -> tuple[str, str]:
    """A key id and a secret's hash of this test alone."""
    return f"key-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex * 2


async def _forget_floor(client, key_id: str) -> None:
    await client.delete(f"{PREFIX}kpf:{key_id}", f"{PREFIX}kph:{key_id}")


async def test_a_slow_plan_of_an_older_version_does_not_move_the_pointer_back(redis_client):
    store = _store(redis_client)
    key_id, key_hash = _ids()
    try:
        await store.set_pointer(key_hash, key_id, 5)   # a turn whose Plan saw the update
        await store.set_pointer(key_hash, key_id, 4)   # a Plan that started before it ends later
        assert (await store.lookup(key_hash, "q"))[0] == Pointer(key_id, 5)
        await store.set_pointer(key_hash, key_id, 6)
        assert (await store.lookup(key_hash, "q"))[0] == Pointer(key_id, 6)
    finally:
        await redis_client.delete(f"{PREFIX}kp:{key_hash}")
        await _forget_floor(redis_client, key_id)


async def test_a_knowledge_update_leaves_a_floor_that_a_stale_plan_cannot_pass(redis_client):
    """The follower drops the pointers of version 3 on the update to 4; a turn whose Plan still says 3
    (a search replica's cached key record) must not write the pointer back to 3."""
    store = _store(redis_client)
    key_id, key_hash = _ids()
    try:
        await store.set_pointer(key_hash, key_id, 3)
        assert await store.forget_key(key_id, 4) == 1
        assert not await redis_client.exists(f"{PREFIX}kph:{key_id}")     # the set of dropped pointers goes too
        assert not await redis_client.exists(f"{PREFIX}kpl:{key_hash}")    # and the last-known pointer
        await store.set_pointer(key_hash, key_id, 3)
        assert (await store.lookup(key_hash, "q"))[0] is None
        # A replica's follower that only now handles the older update lowers no floor.
        await _store(redis_client).forget_key(key_id, 2)
        await store.set_pointer(key_hash, key_id, 3)
        assert (await store.lookup(key_hash, "q"))[0] is None
        await store.set_pointer(key_hash, key_id, 4)
        assert (await store.lookup(key_hash, "q"))[0] == Pointer(key_id, 4)
        assert await redis_client.ttl(f"{PREFIX}kpf:{key_id}") >= 30   # outlives any pointer written before it
    finally:
        await redis_client.delete(f"{PREFIX}kp:{key_hash}", f"{PREFIX}kpl:{key_hash}")
        await _forget_floor(redis_client, key_id)


async def test_a_lookup_in_flight_during_a_knowledge_update_does_not_keep_the_old_answer_hot(redis_client):
    store = _store(redis_client, local_seconds=30)
    key_id, key_hash = _ids()
    qhash = question_hash("When do you open?")
    answer_key = ResponseStore.answer_key(key_id, 3, qhash)
    await store.set_pointer(key_hash, key_id, 3)
    await redis_client.set(answer_key, b"old answer", ex=60)
    replied, release = asyncio.Event(), asyncio.Event()
    evalsha = store.batch.evalsha

    async def slow_reply(*args, **kwargs):
        reply = await evalsha(*args, **kwargs)
        replied.set()
        await release.wait()   # the reply is read; the update is handled before the lookup goes on
        return reply

    store.batch.evalsha = slow_reply
    try:
        lookup = asyncio.create_task(store.lookup(key_hash, qhash))
        await asyncio.wait_for(replied.wait(), timeout=5)
        await store.forget_key(key_id, 4)
        release.set()
        assert await lookup == (Pointer(key_id, 3), b"old answer")   # read before the update: that turn's answer
        store.batch.evalsha = evalsha
        assert await store.lookup(key_hash, qhash) == (None, None)
    finally:
        store.batch.evalsha = evalsha
        await redis_client.delete(answer_key, f"{PREFIX}kp:{key_hash}")
        await _forget_floor(redis_client, key_id)


async def test_a_turn_between_the_update_and_search_seeing_it_does_not_restore_the_old_pointer(
        served, search, admin, redis_client):
    """Through the engine: the follower has dropped the pointer for version v+1 while search still
    plans with version v (here: knowledge that has not changed yet, as a stale key record says)."""
    key = await make_key(search, admin, f"ptr-{uuid.uuid4().hex[:6]}",
                         faq=[("When do you open?", "We open at nine.")], docs=[])
    question = response_pb2.ChatRequest(product_key=key.secret, message="When do you open?")
    pointer = f"{PREFIX}kp:{secret_hash(key.secret)}"
    try:
        async with served() as s:
            first = await s.stub.Chat(question, timeout=10)
            await s.engine.drain()
            key_id, _, version = (await redis_client.get(pointer)).decode().partition(" ")
            assert first.cache_status == common_pb2.CACHE_STATUS_MISS and key_id == key.id
            await s.engine._store.forget_key(key.id, int(version) + 1)   # as the knowledge follower does
            again = await s.stub.Chat(question, timeout=10)
            await s.engine.drain()
        assert again.cache_status == common_pb2.CACHE_STATUS_HIT   # answered with what search planned
        assert await redis_client.get(pointer) is None, "the pointer went back to the old version"
    finally:
        await redis_client.delete(pointer)
        await _forget_floor(redis_client, key.id)


async def test_cached_answers_are_read_while_redis_holds_writes_back(redis_client):
    """CLIENT PAUSE WRITE (as a failover does): the lookup script is flagged no-writes, so it is
    answered at once instead of waiting with the writes (every repeated question missed the cache)."""
    store = _store(redis_client)
    key_id, key_hash = _ids()
    qhash = question_hash("When do you open?")
    try:
        await store.set_pointer(key_hash, key_id, 1)
        await store.put_answer(key_id, 1, qhash, b"answer")
        await redis_client.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
        try:
            began = asyncio.get_running_loop().time()
            assert await store.lookup(key_hash, qhash) == (Pointer(key_id, 1), b"answer")
            assert asyncio.get_running_loop().time() - began < 1.0
        finally:
            await redis_client.execute_command("CLIENT", "UNPAUSE")
    finally:
        await redis_client.delete(f"{PREFIX}kp:{key_hash}", ResponseStore.answer_key(key_id, 1, qhash))
        await _forget_floor(redis_client, key_id)


async def test_a_redis_that_cannot_read_the_scripts_flags_gets_the_lookup_without_them(redis_client):
    """Before Redis 7 a shebang does not compile; here a flag Redis 7 does not know stands for it."""
    store = _store(redis_client)
    key_id, key_hash = _ids()
    qhash = question_hash("Do you ship abroad?")
    store._lookup = redis_client.register_script(_LOOKUP.replace("no-writes", "no-such-flag"))
    try:
        await store.set_pointer(key_hash, key_id, 1)
        await store.put_answer(key_id, 1, qhash, b"yes")
        assert await store.lookup(key_hash, qhash) == (Pointer(key_id, 1), b"yes")
        assert not store._lookup.script.startswith("#!")
    finally:
        await redis_client.delete(f"{PREFIX}kp:{key_hash}", ResponseStore.answer_key(key_id, 1, qhash))
        await _forget_floor(redis_client, key_id)
