"""Knowledge admin: every change bumps the key's version and emits parley.knowledge.updated.v1."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from aiokafka import AIOKafkaConsumer

from services.cli import add_knowledge_path
from services.common.pb.parley.v1 import common_pb2, events_pb2, search_pb2
from tests.conftest import make_key, rpc_error
from tests.search.conftest import plan


async def test_changes_bump_the_version_and_emit_events(search, admin, settings, tmp_path):
    key = await make_key(search, admin, "srch-know", faq=[], docs=[])
    consumer = AIOKafkaConsumer(settings.topic("knowledge_updated"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="latest", enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.seek_to_end()
        (tmp_path / "faq.json").write_text('{"faq": [{"question": "Do you ship abroad?", "answer": "To the EU."}]}')
        (tmp_path / "returns.md").write_text("# Returns\n\nReturns are free within 30 days of delivery.")
        assert await add_knowledge_path(settings, key.id, tmp_path) == 2
        reply = await plan(search, key.secret, "Are returns free?")
        assert reply.strategy == common_pb2.STRATEGY_KNOWLEDGE
        assert "30 days" in reply.passages[0].text
        deleted = await search.DeleteKnowledge(
            search_pb2.DeleteKnowledgeRequest(product_key_id=key.id, document="doc:returns.md"), metadata=admin, timeout=10
        )
        assert deleted.deleted == 1
        assert not (await plan(search, key.secret, "Are returns free?")).passages
        reasons = []
        async with asyncio.timeout(15):
            while len(reasons) < 3:
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    for m in messages:
                        event = events_pb2.KnowledgeUpdated.FromString(m.value)
                        if event.product_key_id == key.id:
                            reasons.append((event.reason, event.knowledge_version))
    finally:
        await consumer.stop()
    assert [r for r, _ in reasons] == ["faq_added", "document_added", "deleted"]
    versions = [v for _, v in reasons]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert deleted.knowledge_version == versions[-1]


async def test_deleting_nothing_is_not_found(search, admin):
    key = await make_key(search, admin, "srch-know2", faq=[], docs=[])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search.DeleteKnowledge(search_pb2.DeleteKnowledgeRequest(product_key_id=key.id, document="nope"),
                                     metadata=admin, timeout=10)
    assert rpc_error(info).code() == grpc.StatusCode.NOT_FOUND
