"""Product keys over the admin RPCs: create, list, rotate, revoke; the Redis cache and its invalidation."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from aiokafka import AIOKafkaConsumer

from services.common.kafka import EventProducer, new_event_id, now_timestamp
from services.common.knowledge_store import bump_version
from services.common.pb.parley.v1 import events_pb2, search_pb2
from services.search.key_cache import cache_key
from services.search.keys import hash_secret
from tests.conftest import RUN_ID, make_key, rpc_error
from tests.search.conftest import plan


async def test_create_list_and_settings(search, admin, pg):
    reply = await search.CreateProductKey(
        search_pb2.CreateProductKeyRequest(
            name="Settings shop", id=f"t-{RUN_ID}-srch-settings", website="https://shop.example",
            settings=search_pb2.KeySettings(rate_limit_per_second=5, rate_limit_burst=7, allow_direct=True),
            text_search_config="simple",
        ),
        metadata=admin, timeout=10,
    )
    assert reply.product_key.startswith("pk_") and len(reply.product_key) > 40
    stored = await pg.fetchrow("SELECT key_hash, settings::text, ts_config::text FROM product_keys WHERE id = $1", reply.key.id)
    assert bytes(stored["key_hash"]) == hash_secret(reply.product_key)
    assert reply.product_key.encode() not in stored["settings"].encode()
    assert stored["ts_config"] == "simple"
    listed = await search.ListProductKeys(search_pb2.ListProductKeysRequest(), metadata=admin, timeout=10)
    info = next(k for k in listed.keys if k.id == reply.key.id)
    assert info.settings.rate_limit_burst == 7 and info.settings.allow_direct and info.text_search_config == "simple"
    # The "simple" configuration does not stem: "running" finds "running", not "run".
    await search.AddDocument(search_pb2.AddDocumentRequest(product_key_id=reply.key.id, title="Shoes",
                                                           text="Our running shoes are light."), metadata=admin, timeout=10)
    assert (await plan(search, reply.product_key, "running shoes")).scores["relevance"] == 1.0
    # The lexical arm finds no term of "run shoe" (the dense arm still finds the page by meaning).
    assert (await plan(search, reply.product_key, "run shoe")).scores["relevance"] == 0.0


async def test_bad_key_settings_are_invalid(search, admin):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search.CreateProductKey(
            search_pb2.CreateProductKeyRequest(name="x", id=f"t-{RUN_ID}-srch-badcfg", text_search_config="klingon"),
            metadata=admin, timeout=10,
        )
    assert rpc_error(info).code() == grpc.StatusCode.INVALID_ARGUMENT and "klingon" in rpc_error(info).details()


@pytest.mark.parametrize("rpc, request_", [
    ("RotateProductKey", search_pb2.RotateProductKeyRequest(id="nope")),
    ("RevokeProductKey", search_pb2.RevokeProductKeyRequest(id="nope")),
    ("AddFaq", search_pb2.AddFaqRequest(product_key_id="nope", question="q", answer="a")),
])
async def test_admin_rpcs_refuse_missing_or_wrong_tokens(search, rpc, request_):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(search, rpc)(request_, timeout=5)
    assert rpc_error(info).code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(search, rpc)(request_, metadata=(("x-parley-admin-token", "guess"),), timeout=5)
    assert rpc_error(info).code() == grpc.StatusCode.UNAUTHENTICATED  # a wrong token identifies no one


async def test_a_cache_hit_does_not_read_postgres_and_changes_invalidate_it(search, admin, pg, redis_client):
    # No knowledge yet: no knowledge event is in flight that would drop the entry meanwhile.
    key = await make_key(search, admin, "srch-cache", faq=[], docs=[])
    first = await plan(search, key.secret, "Do you ship abroad?")
    assert await redis_client.get(cache_key(hash_secret(key.secret))) is not None
    # Renamed behind the service's back: a cached Plan still shows the old name (PostgreSQL not read).
    await pg.execute("UPDATE product_keys SET name = 'Renamed' WHERE id = $1", key.id)
    assert (await plan(search, key.secret, "Do you ship abroad?")).key_name == first.key_name
    # A knowledge change through the admin RPC drops the entry at once.
    added = await search.AddFaq(search_pb2.AddFaqRequest(product_key_id=key.id, question="Do you gift wrap?",
                                                         answer="Yes, for 2 euros."), metadata=admin, timeout=10)
    after = await plan(search, key.secret, "Do you ship abroad?")
    assert after.key_name == "Renamed" and after.knowledge_version == added.knowledge_version > first.knowledge_version


async def test_a_knowledge_event_from_elsewhere_invalidates_the_cache(search, admin, pg, settings):
    """The scraper bumps the version itself and publishes parley.knowledge.updated.v1."""
    key = await make_key(search, admin, "srch-scraped", faq=[("Do you ship abroad?", "Yes, to the EU.")], docs=[])
    before = await plan(search, key.secret, "hello")
    async with pg.acquire() as conn:
        version = await bump_version(conn, key.id)
    producer = EventProducer(settings.kafka_bootstrap, client_id="test-scraper")
    await producer.start()
    try:
        await producer.publish(settings.topic("knowledge_updated"), key.id, events_pb2.KnowledgeUpdated(
            event_id=new_event_id(), occurred_at=now_timestamp(), product_key_id=key.id,
            knowledge_version=version, reason="page_changed"), wait=True)
    finally:
        await producer.stop()
    deadline = time.monotonic() + 15  # far below the cache TTL: the event did it
    seen = before.knowledge_version
    while time.monotonic() < deadline and seen != version:
        await asyncio.sleep(0.1)
        seen = (await plan(search, key.secret, "hello")).knowledge_version
    assert seen == version
    assert settings.key_cache_ttl_seconds > 15


async def test_revoked_key_stops_at_once_even_when_cached(search, admin):
    key = await make_key(search, admin, "srch-revoke", faq=[], docs=[])
    await plan(search, key.secret, "hello")  # cached now
    reply = await search.RevokeProductKey(search_pb2.RevokeProductKeyRequest(id=key.id), metadata=admin, timeout=10)
    assert reply.key.revoked
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await plan(search, key.secret, "hello")
    assert rpc_error(info).code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search.RotateProductKey(search_pb2.RotateProductKeyRequest(id=key.id), metadata=admin, timeout=10)
    assert rpc_error(info).code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_rotation_replaces_the_secret_and_keeps_the_knowledge(search, admin):
    key = await make_key(search, admin, "srch-rotate", faq=[("Do you ship abroad?", "Yes, to the EU.")], docs=[])
    old = await plan(search, key.secret, "Do you ship abroad?")
    reply = await search.RotateProductKey(search_pb2.RotateProductKeyRequest(id=key.id), metadata=admin, timeout=10)
    assert reply.product_key != key.secret and reply.key.HasField("rotated_at")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await plan(search, key.secret, "Do you ship abroad?")
    assert rpc_error(info).code() == grpc.StatusCode.UNAUTHENTICATED
    new = await plan(search, reply.product_key, "Do you ship abroad?")
    assert new.product_key_id == key.id and new.faq_answer == old.faq_answer == "Yes, to the EU."


async def test_revoking_a_revoked_key_again_changes_nothing(search, admin, pg, settings):
    """A revocation sent again (a retry after a lost reply): OK with the key as it is, its knowledge
    version and revocation time unchanged, and no second key_revoked event (which would empty the
    key's answer caches and tell the other services again for nothing)."""
    key = await make_key(search, admin, "srch-revoke-twice", faq=[], docs=[])
    consumer = AIOKafkaConsumer(settings.topic("knowledge_updated"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="latest", enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.seek_to_end()
        first = await search.RevokeProductKey(search_pb2.RevokeProductKeyRequest(id=key.id), metadata=admin, timeout=10)
        revoked_at = await pg.fetchval("SELECT revoked_at FROM product_keys WHERE id = $1", key.id)
        again = await search.RevokeProductKey(search_pb2.RevokeProductKeyRequest(id=key.id), metadata=admin, timeout=10)
        assert again.key.revoked and again.key.knowledge_version == first.key.knowledge_version
        assert await pg.fetchval("SELECT revoked_at FROM product_keys WHERE id = $1", key.id) == revoked_at
        events = []
        deadline = time.monotonic() + 15
        quiet_until = None      # once the first revocation's event came: a while more for a second one
        while time.monotonic() < (quiet_until or deadline):
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for m in messages:
                    event = events_pb2.KnowledgeUpdated.FromString(m.value)
                    if event.product_key_id == key.id:
                        events.append((event.reason, event.knowledge_version))
                        quiet_until = quiet_until or time.monotonic() + 3
    finally:
        await consumer.stop()
    assert events == [("key_revoked", first.key.knowledge_version)]
