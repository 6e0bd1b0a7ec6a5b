"""The search service cannot plan (PostgreSQL away under it, search down or not answering): a question
answered before is answered from the knowledge version the secret last pointed at, also after the
short-lived pointer expired; anything else is UNAVAILABLE with a retry hint, and a search that does not
answer within the service's own limit is not passed off as the caller's deadline."""

from __future__ import annotations

import asyncio
import socket
import time

import grpc
import pytest

from services.common.grpc_server import channel
from services.common.product_keys import cache_key, hash_secret
from services.common.pb.parley.v1 import common_pb2, search_pb2_grpc
from services.response.cache import secret_hash
from services.response.search_client import SearchClient
from tests.conftest import make_key
from tests.response.conftest import ask

QUESTION = "How much does the Plus plan cost?"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Silent(search_pb2_grpc.SearchServiceServicer):
    """A search service that takes Plan calls and never answers them."""

    async def Plan(self, request, context):
        await asyncio.sleep(60)


async def test_a_question_answered_before_is_answered_while_search_cannot_plan(served, llm, shop, redis_client):
    key_hash = secret_hash(shop.secret)
    await redis_client.delete(f"parley:kp:{key_hash}")      # other tests' pointer, of a longer life
    async with served(answer_cache_pointer_ttl_seconds=1, answer_cache_local_seconds=0) as s:
        first = await s.stub.Chat(ask(shop, QUESTION), timeout=10)
        assert first.cache_status == common_pb2.CACHE_STATUS_MISS
        await asyncio.sleep(1.5)                # the pointer has expired; its last-known copy stays
        assert not await redis_client.exists(f"parley:kp:{key_hash}")
        version = int((await redis_client.get(f"parley:kpl:{key_hash}")).split()[1])
        async with channel(f"127.0.0.1:{_closed_port()}") as away:
            s.engine._search = SearchClient(search_pb2_grpc.SearchServiceStub(away))
            again = await s.stub.Chat(ask(shop, QUESTION), timeout=10)
            assert (again.answer, again.cache_status) == (first.answer, common_pb2.CACHE_STATUS_HIT)
            with pytest.raises(grpc.aio.AioRpcError) as new:
                await s.stub.Chat(ask(shop, "Do parcels ship abroad?"), timeout=10)
            assert new.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "retry-after" in dict(new.value.trailing_metadata())
            # A knowledge change drops the last-known pointer with the pointer.
            await s.engine._store.forget_key(shop.id, version)
            with pytest.raises(grpc.aio.AioRpcError) as changed:
                await s.stub.Chat(ask(shop, QUESTION), timeout=10)
            assert changed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_search_that_does_not_answer_within_the_services_limit_is_unavailable_not_the_callers_deadline(
        served, llm, shop):
    server = grpc.aio.server()
    search_pb2_grpc.add_SearchServiceServicer_to_server(_Silent(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with served(search_timeout_seconds=0.5) as s, channel(f"127.0.0.1:{port}") as silent:
            s.engine._search = SearchClient(search_pb2_grpc.SearchServiceStub(silent))
            began = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as patient:
                await s.stub.Chat(ask(shop, "Anything new?", no_cache=True), timeout=10)
            assert patient.value.code() == grpc.StatusCode.UNAVAILABLE, patient.value
            assert "retry-after" in dict(patient.value.trailing_metadata())
            assert time.monotonic() - began < 3
            with pytest.raises(grpc.aio.AioRpcError) as hurried:
                await s.stub.Chat(ask(shop, "Anything new?", no_cache=True), timeout=0.3)
            assert hurried.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await server.stop(0)


async def test_a_knowledge_change_whose_event_was_missed_is_not_answered_from_before_it(
        served, llm, search, admin, pg, redis_client):
    """The key's record (read from PostgreSQL) says a newer knowledge version than the last-known
    pointer's: the event that would have dropped the pointer was missed, and the older answer is not
    given while search cannot plan."""
    key = await make_key(search, admin, "missed-change", faq=[],
                         docs=[("Plans", "The Plus plan costs 49 euros per year and includes priority support.")])
    key_hash = secret_hash(key.secret)
    async with served(answer_cache_pointer_ttl_seconds=1, answer_cache_local_seconds=0) as s:
        first = await s.stub.Chat(ask(key, QUESTION), timeout=10)
        assert first.cache_status == common_pb2.CACHE_STATUS_MISS
        await asyncio.sleep(1.5)
        await pg.execute("UPDATE product_keys SET knowledge_version = knowledge_version + 1 WHERE id = $1", key.id)
        await redis_client.delete(cache_key(hash_secret(key.secret)))     # the key's record is read again
        async with channel(f"127.0.0.1:{_closed_port()}") as away:
            s.engine._search = SearchClient(search_pb2_grpc.SearchServiceStub(away))
            with pytest.raises(grpc.aio.AioRpcError) as missed:
                await s.stub.Chat(ask(key, QUESTION), timeout=10)
            assert missed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await redis_client.exists(f"parley:kpl:{key_hash}"), "the last-known pointer was there to refuse"
