"""SearchService servicer: maps protobuf to the search logic and back."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg
import grpc
import redis.asyncio as redis

from services.common.admin import admin_token, check_admin
from services.common.errors import Unauthenticated, Unavailable
from services.common.kafka import LazyProducer, new_event_id, now_timestamp
from services.common.logs import EveryFewSeconds
from services.common.pb.parley.v1 import common_pb2, events_pb2, search_pb2, search_pb2_grpc
from services.common.text import storable
from services.search.settings import SearchSettings
from services.common.timestamps import to_timestamp
from services.search import keys, knowledge
from services.search.indexing import Indexing
from services.search.planner import Planner

logger = logging.getLogger(__name__)
_wrong_tokens = EveryFewSeconds()


def _key_info(key: keys.ProductKey) -> search_pb2.ProductKeyInfo:
    s = key.settings
    return search_pb2.ProductKeyInfo(
        id=key.id, name=key.name, knowledge_version=key.knowledge_version,
        created_at=to_timestamp(key.created_at), revoked=key.revoked, website=key.website,
        settings=search_pb2.KeySettings(
            rate_limit_per_second=s.get("rate_limit_per_second", 0), rate_limit_burst=s.get("rate_limit_burst", 0),
            allow_direct=s.get("allow_direct", False),
        ),
        text_search_config=key.ts_config, rotated_at=to_timestamp(key.rotated_at),
    )


def _settings_of(message: search_pb2.KeySettings) -> dict:
    return {
        "rate_limit_per_second": message.rate_limit_per_second,
        "rate_limit_burst": message.rate_limit_burst,
        "allow_direct": message.allow_direct,
    }


@dataclass
class SearchDeps:
    """Connections of the search service; pool, redis and planner are attached once they answer."""

    producer: LazyProducer
    pool: asyncpg.Pool | None = None
    redis: redis.Redis | None = None
    planner: Planner | None = None
    indexing: Indexing | None = None
    web_available: bool = False     # the scraper answers health checks


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, settings: SearchSettings, deps: SearchDeps) -> None:
        self._settings = settings
        self._deps = deps

    @property
    def _pool(self) -> asyncpg.Pool:
        assert self._deps.pool is not None, "the gate admits calls only once the pool exists"
        return self._deps.pool

    @property
    def _planner(self) -> Planner:
        assert self._deps.planner is not None, "the gate admits calls only once the planner exists"
        return self._deps.planner

    async def Plan(self, request: search_pb2.PlanRequest, context: grpc.aio.ServicerContext) -> search_pb2.PlanResponse:
        plan = await self._planner.plan(request.product_key, request.message, request.max_passages,
                                        charge=not self._from_platform(context))
        key, decision = plan.key, plan.decision
        return search_pb2.PlanResponse(
            product_key_id=key.id,
            key_name=key.name,
            knowledge_version=key.knowledge_version,
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
            faq_answer=decision.faq_answer,
            top_score=decision.top_score,
            instructions=key.instructions,
            website=key.website,
            scores=decision.scores,
            fetch_url=decision.fetch_url,
        )

    def _from_platform(self, context: grpc.aio.ServicerContext) -> bool:
        """Whether the call carries the admin token: one of the platform's own services (the response
        service, which charged the chat turn already), not a tenant calling Plan itself. A wrong token
        makes it a tenant's call (charged), logged: a service configured with another token than this
        one has its Plans limited as a tenant's would be."""
        token = admin_token(context)
        if token is None:
            return False
        try:
            check_admin(token, self._settings.admin_token)
            return True
        except Unauthenticated:
            if _wrong_tokens.due():
                logger.warning("a Plan came with a wrong admin token: charged as the tenant's own%s",
                               _wrong_tokens.more())
            return False

    # --- admin ---------------------------------------------------------------------------

    def _admin(self, context: grpc.aio.ServicerContext) -> None:
        check_admin(admin_token(context), self._settings.admin_token)

    async def _forbid(self, key_hash: bytes) -> None:
        """Tombstone the secret in the shared key cache before PostgreSQL changes (see product_keys)."""
        try:
            await self._planner.cache.forbid(key_hash)
        except redis.RedisError as exc:
            logger.warning("cannot write the key tombstone: %s", exc)
            raise Unavailable("the key cache (Redis) is unavailable, so the old secret could not be refused "
                              "everywhere at once; nothing changed, retry shortly") from None

    async def _knowledge_changed(self, key_id: str, version: int, reason: str, url: str = "") -> None:
        """Drop the cached key record (its knowledge version changed), then tell the other services."""
        try:
            key_hash = await keys.key_hash_of(self._pool, key_id)
            if key_hash is not None:
                await self._planner.cache.invalidate(key_hash, version)
            if self._planner.dense is not None:
                self._planner.dense.index.forget(key_id, version)
        except Exception:  # noqa: BLE001 - the event below and the TTL still bound the staleness
            logger.exception("could not invalidate the cached key %s", key_id)
        event = events_pb2.KnowledgeUpdated(
            event_id=new_event_id(), occurred_at=now_timestamp(), product_key_id=key_id,
            knowledge_version=version, reason=reason, url=url,
        )
        # The change is committed: while Kafka is away its announcement waits, the call does not fail.
        self._deps.producer.defer(self._settings.topic("knowledge_updated"), key_id, event)

    async def CreateProductKey(self, request, context):
        self._admin(context)
        key, secret = await keys.create_key(
            self._pool, name=request.name, key_id=request.id, instructions=request.instructions,
            website=request.website, settings=_settings_of(request.settings), ts_config=request.text_search_config,
        )
        logger.info("created product key %s", key.id)
        return search_pb2.CreateProductKeyResponse(key=_key_info(key), product_key=secret)

    async def ListProductKeys(self, request, context):
        self._admin(context)
        return search_pb2.ListProductKeysResponse(keys=[_key_info(k) for k in await keys.list_keys(self._pool)])

    async def RevokeProductKey(self, request, context):
        self._admin(context)
        key, _, revoked_now = await keys.revoke_key(self._pool, request.id, self._forbid)
        if revoked_now:
            await self._knowledge_changed(key.id, key.knowledge_version, "key_revoked")
            logger.info("revoked product key %s", key.id)
        return search_pb2.RevokeProductKeyResponse(key=_key_info(key))

    async def RotateProductKey(self, request, context):
        self._admin(context)
        key, secret, _ = await keys.rotate_key(self._pool, request.id, self._forbid)
        logger.info("rotated the secret of product key %s", key.id)
        return search_pb2.RotateProductKeyResponse(key=_key_info(key), product_key=secret)

    async def AddFaq(self, request, context):
        self._admin(context)
        ids, version = await knowledge.add_faq(self._deps.indexing, request.product_key_id, request.question, request.answer)
        await self._knowledge_changed(request.product_key_id, version, "faq_added")
        return search_pb2.AddKnowledgeResponse(chunk_ids=ids, knowledge_version=version)

    async def AddDocument(self, request, context):
        self._admin(context)
        ids, version = await knowledge.add_document(
            self._deps.indexing, request.product_key_id, request.title, request.text, request.url
        )
        url = storable(request.url).strip()
        await self._knowledge_changed(request.product_key_id, version, "document_added", url)
        return search_pb2.AddKnowledgeResponse(chunk_ids=ids, knowledge_version=version)

    async def DeleteKnowledge(self, request, context):
        self._admin(context)
        deleted, version = await knowledge.delete_knowledge(
            self._pool, request.product_key_id, request.chunk_id, request.document
        )
        await self._knowledge_changed(request.product_key_id, version, "deleted")
        return search_pb2.DeleteKnowledgeResponse(deleted=deleted, knowledge_version=version)
