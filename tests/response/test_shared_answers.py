"""A shared answer (single-flight, in process and across replicas through the Redis lock) as its
callers see it when one of them goes away or the answer fails: each caller's own outcome, and no
lock left behind. The real `groq` client against the local Groq-compatible server."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.common.pb.parley.v1 import response_pb2
from services.response.cache import PREFIX
from tests.response.conftest import SMALL, ask

QUESTION = "How much does the Plus plan cost?"


async def test_the_same_question_while_an_abandoned_flight_cleans_up_is_answered(served, llm, shop, events):
    """The caller of a streamed answer goes away; while its flight releases the Redis lock, the same
    question is asked again: it gets an answer (from a flight of its own), not the old flight's
    cancellation."""
    llm.token_delay = 0.2
    async with served() as s:
        store = s.engine._store
        real_unlock = store.unlock
        unlocking = asyncio.Event()

        async def slow_unlock(lock) -> None:
            unlocking.set()
            await asyncio.sleep(1.0)
            await real_unlock(lock)

        store.unlock = slow_unlock
        call = s.stub.ChatStream(ask(shop, QUESTION), timeout=30)
        assert (await call.read()).delta
        call.cancel()
        await asyncio.wait_for(unlocking.wait(), 10)
        reply = await s.stub.Chat(ask(shop, QUESTION), timeout=20)
    assert reply.model == SMALL and reply.answer.startswith("Answer from")
    assert (await events.turn(reply.request_id)).error_code == ""


async def test_callers_of_a_failed_shared_answer_each_get_their_own_request_id(served, llm, shop, events):
    """Without the extractive fallback, an LLM that sends no first token fails the shared answer:
    each caller's error names its own turn (x-parley-request-id), whose ChatTurn says the same code."""
    llm.first_token_delay = 5.0
    async with served(llm_fallback_extractive=False, llm_max_attempts=1,
                      llm_first_token_timeout_seconds=0.5) as s:
        results = await asyncio.gather(*(s.stub.Chat(ask(shop, QUESTION, session_id=f"e{i}"), timeout=20)
                                         for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, grpc.aio.AioRpcError) for r in results), results
    assert llm.count() == 1, [(r.model, r.outcome) for r in llm.requests]   # one shared answer failed
    ids = [dict(r.trailing_metadata())["x-parley-request-id"] for r in results]
    assert len(set(ids)) == 3, ids
    for error, request_id in zip(results, ids):
        assert (await events.turn(request_id)).error_code == error.code().name


@pytest.mark.parametrize("phase", ["taking", "double-check", "unlocking"])
async def test_a_flight_cancelled_once_redis_granted_its_lock_releases_the_lock(served, llm, shop, redis_client,
                                                                                 phase):
    """The caller goes away while the flight takes the cross-replica lock, checks the answer cache
    again under it, or releases it after that check found the answer: the lock is released at once,
    not left to its TTL (other replicas would wait on it until their deadline)."""
    names: list[str] = []
    async with served() as s:
        store = s.engine._store
        real_try_lock, real_get_answer, real_unlock = store.try_lock, store.get_answer, store.unlock
        held = asyncio.Event()

        async def try_lock(name: str, ttl_seconds: float):
            lock = await real_try_lock(name, ttl_seconds)
            names.append(f"{PREFIX}sf:{name}")
            held.set()
            if phase == "taking":
                await asyncio.sleep(0.5)   # Redis granted it; the reply is still on its way
            return lock

        async def get_answer(key_id: str, version: int, qhash: str) -> bytes | None:
            if held.is_set() and phase == "double-check":
                await asyncio.sleep(30)
            if held.is_set() and phase == "unlocking":   # another replica cached it meanwhile
                return response_pb2.ChatResponse(answer="cached meanwhile", model=SMALL).SerializeToString()
            return await real_get_answer(key_id, version, qhash)

        async def unlock(lock) -> None:
            if phase == "unlocking":
                await asyncio.sleep(0.5)
            await real_unlock(lock)

        store.try_lock, store.get_answer, store.unlock = try_lock, get_answer, unlock
        try:
            turn = asyncio.create_task(s.engine.chat(ask(shop, QUESTION), timeout=20))
            await asyncio.wait_for(held.wait(), 10)
            assert await redis_client.exists(names[0]), "the lock was taken"
            await asyncio.sleep(0.1)
            turn.cancel()
            await asyncio.gather(turn, return_exceptions=True)
            for _ in range(40):
                if not await redis_client.exists(names[0]):
                    break
                await asyncio.sleep(0.05)
            assert not await redis_client.exists(names[0]), f"the lock is left for {await redis_client.pttl(names[0])} ms"
        finally:
            if names:
                await redis_client.delete(*names)


async def test_a_patient_caller_who_joins_keeps_the_cross_replica_lock_for_its_own_deadline(served, llm, shop,
                                                                                              redis_client):
    """The lock was taken for a hurried caller's deadline (a second); a patient caller joins the
    flight: the lock lives on to the patient caller's deadline, so that no other replica starts the
    same answer while this one still runs, and it is released when the answer is in."""
    llm.first_token_delay = 2.5
    names: list[str] = []
    async with served() as s:
        store = s.engine._store
        real_try_lock = store.try_lock

        async def try_lock(name: str, ttl_seconds: float):
            names.append(f"{PREFIX}sf:{name}")
            return await real_try_lock(name, ttl_seconds)

        store.try_lock = try_lock

        async def hurried():
            try:
                await s.stub.Chat(ask(shop, QUESTION, session_id="hurried"), timeout=0.5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()

        try:
            first = asyncio.ensure_future(hurried())
            await asyncio.sleep(0.2)
            patient = asyncio.ensure_future(s.stub.Chat(ask(shop, QUESTION, session_id="patient"), timeout=10))
            await asyncio.sleep(1.5)
            assert len(names) == 1
            assert await redis_client.pttl(names[0]) > 5000, "the lock kept the hurried caller's term"
            assert await first == grpc.StatusCode.DEADLINE_EXCEEDED
            reply = await patient
            assert reply.model == SMALL and llm.count() == 1
            assert not await redis_client.exists(names[0])
        finally:
            if names:
                await redis_client.delete(*names)
