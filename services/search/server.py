"""SearchService servicer: maps protobuf to the search logic and back."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import InvalidArgument, Unauthenticated
from services.common.kafka import EventProducer, new_event_id, now_timestamp
from services.common.pb.parley.v1 import common_pb2, events_pb2, search_pb2, search_pb2_grpc
from services.common.settings import Settings
from services.search import keys, knowledge
from services.search.retrieval import plan_lookup
from services.search.strategy import decide

logger = logging.getLogger(__name__)

ADMIN_HEADER = "x-parley-admin-token"


def _key_info(key: keys.ProductKey) -> search_pb2.ProductKeyInfo:
    created = Timestamp()
    created.FromDatetime(key.created_at)
    return search_pb2.ProductKeyInfo(
        id=key.id, name=key.name, knowledge_version=key.knowledge_version,
        created_at=created, revoked=key.revoked, website=key.website,
    )


def validate_message(message: str, max_chars: int) -> str:
    text = message.strip()
    if not text:
        raise InvalidArgument("message is empty")
    if len(message) > max_chars:
        raise InvalidArgument(f"message has {len(message)} characters; the limit is {max_chars}")
    return text


@dataclass
class SearchDeps:
    """Connections of the search service; the pool is attached once PostgreSQL answers."""

    producer: EventProducer
    pool: asyncpg.Pool | None = None


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, settings: Settings, deps: SearchDeps) -> None:
        self._settings = settings
        self._deps = deps

    @property
    def _pool(self) -> asyncpg.Pool:
        assert self._deps.pool is not None, "the gate admits calls only once the pool exists"
        return self._deps.pool

    @property
    def _producer(self) -> EventProducer:
        return self._deps.producer

    async def Plan(self, request: search_pb2.PlanRequest, context: grpc.aio.ServicerContext) -> search_pb2.PlanResponse:
        key_hash = keys.require_key(request.product_key)
        message = validate_message(request.message, self._settings.max_message_chars)
        limit = request.max_passages if 0 < request.max_passages <= 50 else self._settings.max_passages
        ctx = await plan_lookup(self._pool, key_hash, message, limit)
        if ctx is None:
            raise Unauthenticated("unknown or revoked product key")
        decision = decide(message, ctx.chunks, min_score=self._settings.knowledge_min_score)
        return search_pb2.PlanResponse(
            product_key_id=ctx.key_id,
            key_name=ctx.name,
            knowledge_version=ctx.knowledge_version,
            strategy=common_pb2.Strategy.Value("STRATEGY_" + decision.strategy),
            reasons=decision.reasons,
            passages=[
                common_pb2.Passage(
                    id=c.id, kind=c.kind, title=c.title or c.question,
                    text=c.content if c.kind != "faq" else f"{c.question}\n{c.content}",
                    url=c.url, score=c.score,
                )
                for c in decision.chunks
            ],
            top_score=decision.top_score,
            instructions=ctx.instructions,
            website=ctx.website,
        )

    # --- admin ---------------------------------------------------------------------------

    def _admin(self, context: grpc.aio.ServicerContext) -> None:
        token = dict(context.invocation_metadata() or ()).get(ADMIN_HEADER)
        keys.check_admin(token, self._settings.admin_token)

    async def _knowledge_changed(self, key_id: str, version: int, reason: str, url: str = "") -> None:
        event = events_pb2.KnowledgeUpdated(
            event_id=new_event_id(), occurred_at=now_timestamp(), product_key_id=key_id,
            knowledge_version=version, reason=reason, url=url,
        )
        await self._producer.publish(self._settings.topic("knowledge_updated"), key_id, event)

    async def CreateProductKey(self, request, context):
        self._admin(context)
        key, secret = await keys.create_key(
            self._pool, name=request.name, key_id=request.id, instructions=request.instructions, website=request.website
        )
        logger.info("created product key %s", key.id)
        return search_pb2.CreateProductKeyResponse(key=_key_info(key), product_key=secret)

    async def ListProductKeys(self, request, context):
        self._admin(context)
        return search_pb2.ListProductKeysResponse(keys=[_key_info(k) for k in await keys.list_keys(self._pool)])

    async def RevokeProductKey(self, request, context):
        self._admin(context)
        key = await keys.revoke_key(self._pool, request.id)
        await self._knowledge_changed(key.id, key.knowledge_version, "key_revoked")
        logger.info("revoked product key %s", key.id)
        return search_pb2.RevokeProductKeyResponse(key=_key_info(key))

    async def AddFaq(self, request, context):
        self._admin(context)
        ids, version = await knowledge.add_faq(self._pool, request.product_key_id, request.question, request.answer)
        await self._knowledge_changed(request.product_key_id, version, "faq_added")
        return search_pb2.AddKnowledgeResponse(chunk_ids=ids, knowledge_version=version)

    async def AddDocument(self, request, context):
        self._admin(context)
        ids, version = await knowledge.add_document(
            self._pool, request.product_key_id, request.title, request.text, request.url
        )
        await self._knowledge_changed(request.product_key_id, version, "document_added", request.url)
        return search_pb2.AddKnowledgeResponse(chunk_ids=ids, knowledge_version=version)

    async def DeleteKnowledge(self, request, context):
        self._admin(context)
        deleted, version = await knowledge.delete_knowledge(
            self._pool, request.product_key_id, request.chunk_id, request.document
        )
        await self._knowledge_changed(request.product_key_id, version, "deleted")
        return search_pb2.DeleteKnowledgeResponse(deleted=deleted, knowledge_version=version)
