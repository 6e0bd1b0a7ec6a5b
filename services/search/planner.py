"""The Plan path: validate the key (Redis cache, else one query), rate-limit it, retrieve, decide."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg
import redis.asyncio as redis

from services.common.errors import InvalidArgument, ResourceExhausted, Unauthenticated
from services.common.settings import Settings
from services.search import keys, retrieval
from services.search.dense import DenseRetrieval
from services.search.key_cache import TOMBSTONE, KeyCache
from services.search.keys import KeyRecord
from services.search.rate_limit import RateLimiter, retry_after_text
from services.search.strategy import Decision, Options, Thresholds, decide, is_chitchat

logger = logging.getLogger(__name__)

RETRY_AFTER_TRAILER = "retry-after-ms"


@dataclass
class Plan:
    key: KeyRecord
    decision: Decision


def validate_message(message: str, max_chars: int) -> str:
    text = message.strip()
    if not text:
        raise InvalidArgument("message is empty")
    if len(message) > max_chars:
        raise InvalidArgument(f"message has {len(message)} characters; the limit is {max_chars}")
    return text


class Planner:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, client: redis.Redis,
                 web_available=lambda: False, dense: DenseRetrieval | None = None) -> None:
        self._settings = settings
        self.dense = dense          # dense candidates beside the lexical ones (None: lexical only)
        self._pool = pool
        self.cache = KeyCache(client, settings.key_cache_ttl_seconds)
        self._limiter = RateLimiter(client)
        self._web_available = web_available
        self.thresholds = Thresholds(
            settings.knowledge_min_score, settings.faq_min_score, answer_min_dense=settings.answer_min_dense,
            passage_min_dense=settings.passage_min_dense, faq_min_dense=settings.faq_min_dense,
            dense_weight=settings.dense_weight)

    async def key(self, secret: str) -> KeyRecord:
        """The valid key for a secret: from the cache, else one PostgreSQL query (then cached)."""
        key_hash = keys.require_key(secret)
        try:
            cached = await self.cache.get(key_hash)
        except redis.RedisError as exc:  # the database still answers: serve, uncached
            logger.warning("key cache unavailable (%s); validating in PostgreSQL", exc)
            cached = None
        if cached == TOMBSTONE:
            raise Unauthenticated("unknown or revoked product key")
        if isinstance(cached, KeyRecord):
            return cached
        record = await keys.validate_key(self._pool, key_hash)
        if record is None:
            raise Unauthenticated("unknown or revoked product key")
        try:
            await self.cache.put(key_hash, record)
        except redis.RedisError as exc:
            logger.warning("key cache unavailable (%s)", exc)
        return record

    async def admit(self, key: KeyRecord) -> None:
        rate = float(key.settings.get("rate_limit_per_second") or self._settings.rate_limit_per_second)
        burst = int(key.settings.get("rate_limit_burst") or self._settings.rate_limit_burst)
        try:
            verdict = await self._limiter.take(key.id, rate, burst)
        except redis.RedisError as exc:  # fail open: a Redis outage must not stop every tenant
            logger.warning("rate limiter unavailable (%s); admitting", exc)
            return
        if not verdict.allowed:
            wait = retry_after_text(verdict.retry_after_seconds)
            raise ResourceExhausted(
                f"rate limit of product key {key.id} exceeded ({rate:g}/s, burst {burst}); retry in {wait} ms",
                trailers={RETRY_AFTER_TRAILER: wait},
            )

    async def plan(self, secret: str, message: str, max_passages: int = 0) -> Plan:
        key = await self.key(secret)
        text = validate_message(message, self._settings.max_message_chars)
        await self.admit(key)
        limit = max_passages if 0 < max_passages <= 50 else self._settings.max_passages
        chunks: list[retrieval.Chunk] = []
        if not is_chitchat(text):
            # More than asked for: the decision drops passages below the relevance threshold first.
            lexical = retrieval.search(
                self._pool, key.id, key.ts_config, text, limit=max(2 * limit, 10),
                candidates=self._settings.search_candidates,
            )
            if self.dense is not None:
                chunks = await self.dense.with_lexical(key.id, key.knowledge_version, text, lexical)
            else:
                chunks = await lexical
        options = Options(website=key.website, web_available=bool(key.website) and self._web_available(),
                          allow_direct=bool(key.settings.get("allow_direct")))
        decision = decide(text, chunks, self.thresholds, options)
        if self.dense is not None and chunks:
            decision.scores["dense"] = round(max(c.dense for c in chunks), 4)   # best cosine among candidates
        decision.chunks = decision.chunks[:limit]
        return Plan(key, decision)
