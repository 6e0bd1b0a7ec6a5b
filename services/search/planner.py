"""The Plan path: validate the key (Redis cache, else one query), retrieve, decide."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import asyncpg
import redis.asyncio as redis

from services.common.errors import InvalidArgument
from services.common.product_keys import KeyCache, KeyRecord, KeyValidator
from services.search.settings import SearchSettings
from services.search import retrieval
from services.search.dense import DenseRetrieval
from services.search.strategy import Decision, Options, Thresholds, decide, is_chitchat

logger = logging.getLogger(__name__)

# A message's query embedding (~6 ms of CPU, most of a Plan) starts before its key is validated when
# that key was valid within this many seconds, so that the key lookup's round trip to Redis (p99 of
# several ms on a busy machine) overlaps it. Only then: a key never seen valid buys no embedding.
EARLY_EMBEDDING_SECONDS = 60.0
_RECENT_KEYS = 10_000

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
    def __init__(self, settings: SearchSettings, pool: asyncpg.Pool, client: redis.Redis,
                 web_available=lambda: False, dense: DenseRetrieval | None = None, embed_early: bool = True) -> None:
        self._settings = settings
        self.embed_early = embed_early
        self._valid: dict[str, float] = {}     # secret -> when it was last found valid (monotonic)
        self.dense = dense          # dense candidates beside the lexical ones (None: lexical only)
        self._pool = pool
        self.keys = KeyValidator(
            client, lambda: pool, ttl_seconds=settings.key_cache_ttl_seconds,
            local_seconds=settings.key_local_cache_seconds, default_rate=settings.rate_limit_per_second,
            default_burst=settings.rate_limit_burst,
        )
        self._web_available = web_available
        self.thresholds = Thresholds(
            settings.knowledge_min_score, settings.faq_min_score, answer_min_dense=settings.answer_min_dense,
            passage_min_dense=settings.passage_min_dense, faq_min_dense=settings.faq_min_dense,
            faq_min_margin=settings.faq_min_margin,
            lexical_weight=settings.lexical_weight,
            answer_min_support=settings.answer_min_support,
            known_weight=settings.known_weight)

    @property
    def cache(self) -> KeyCache:
        return self.keys.cache

    async def key(self, secret: str) -> KeyRecord:
        """The valid key for a secret: Redis cache, else one PostgreSQL query (then cached). The key's
        rate limit is charged by the response service's admission, once per chat turn, not here."""
        return await self.keys.validate(secret)

    async def plan(self, secret: str, message: str, max_passages: int = 0) -> Plan:
        stripped = message.strip() if len(message) <= self._settings.max_message_chars else ""
        talk = is_chitchat(stripped) if stripped else None
        if stripped and not talk:
            self._embed_early(secret, stripped)
        try:
            key = await self.key(secret)
        except Exception:
            self._valid.pop(secret, None)
            raise
        self._remember(secret)
        text = validate_message(message, self._settings.max_message_chars)
        limit = max_passages if 0 < max_passages <= 50 else self._settings.max_passages
        chunks: list[retrieval.Chunk] = []
        if not talk:
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

    def _embed_early(self, secret: str, text: str) -> None:
        seen = self._valid.get(secret)
        if self.dense is not None and self.embed_early and seen is not None \
                and time.monotonic() - seen <= EARLY_EMBEDDING_SECONDS:
            self.dense.queries.start(text)

    def _remember(self, secret: str) -> None:
        if len(self._valid) >= _RECENT_KEYS and secret not in self._valid:
            self._valid.clear()         # a flood of keys: forget rather than grow
        self._valid[secret] = time.monotonic()
