"""The Plan path: validate the key (Redis cache, else one query), retrieve, decide."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import asyncpg
import redis.asyncio as redis

from services.common.errors import RETRY_AFTER_MS_TRAILER, InvalidArgument, ResourceExhausted
from services.common.text import is_blank
from services.common.product_keys import KeyCache, KeyRecord, KeyValidator, limits_of, retry_after_text
from services.search.settings import SearchSettings
from services.search import retrieval
from services.search.dense import DenseRetrieval
from services.search.spelling import Vocabularies
from services.search.strategy import Decision, Options, Thresholds, decide, is_chitchat
from services.search.urls import website_problem

logger = logging.getLogger(__name__)

# A message's retrieval (the query embedding, ~6 ms of CPU and most of a Plan, and the full-text
# statement, the longest part on a large key) starts before its key is validated when that secret was
# valid within this many seconds, with the key record it had then, so that the key lookup's round trip
# to Redis (p99 of several ms on a busy machine) overlaps it. The result is used only if the secret is
# still valid for the same key, search configuration and knowledge version; otherwise it is dropped and
# the retrieval runs again with the record just validated. A key never seen valid buys no work.
EARLY_RETRIEVAL_SECONDS = 60.0
_RECENT_KEYS = 10_000
# Plans a tenant calls itself take from a bucket of their own per key (RateLimiter's prefix, then this and
# the key id, which holds no ':'), at the key's rate and burst. Not the bucket Chat's admission takes
# from: a response service that does not send the admin token with its Plans (one deployed before it
# did) is charged here too, and a second charge in admission's bucket would halve the key's chat turns.
PLAN_BUCKET = "plan:"
MAX_PASSAGES = 50      # a request's max_passages, at most (0: the server's default)

@dataclass
class Plan:
    key: KeyRecord
    decision: Decision


@dataclass
class Retrieved:
    chunks: list[retrieval.Chunk]
    text: str                                   # the message as searched (misspelt words read as the key's)
    read_as: list[tuple[str, str]]              # [(word of the message, the key's word it was read as)]


def validate_message(message: str, max_chars: int) -> str:
    """As the response service's Chat: a message of only invisible characters is empty too."""
    if len(message) > max_chars:
        raise InvalidArgument(f"message has {len(message)} characters; the limit is {max_chars}")
    if is_blank(message):
        raise InvalidArgument("message is empty")
    return message.strip()


class Planner:
    def __init__(self, settings: SearchSettings, pool: asyncpg.Pool, client: redis.Redis,
                 web_available=lambda: False, dense: DenseRetrieval | None = None, early: bool = True) -> None:
        self._settings = settings
        self.early = early
        # secret -> (when it was last found valid (monotonic), the key record then)
        self._valid: dict[str, tuple[float, KeyRecord]] = {}
        self.dense = dense          # dense candidates beside the lexical ones (None: lexical only)
        self._pool = pool
        # misspelt words read as the key's own (None: messages are searched as they are)
        self.spelling = Vocabularies(pool) if settings.spelling_correction else None
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
            answer_min_support=settings.answer_min_support, unknown_min_support=settings.unknown_min_support,
            known_weight=settings.known_weight, covered_weight=settings.covered_weight)

    @property
    def cache(self) -> KeyCache:
        return self.keys.cache

    async def key(self, secret: str) -> KeyRecord:
        """The valid key for a secret: Redis cache, else one PostgreSQL query (then cached). Not charged
        here: the response service's admission charges a chat turn, `plan` a tenant's own Plan."""
        return await self.keys.validate(secret)

    async def plan(self, secret: str, message: str, max_passages: int = 0, *, charge: bool = False) -> Plan:
        """`charge`: the call is a tenant's own (not the response service's, which charged the chat
        turn already): it takes a token of the key's Plan bucket, or is RESOURCE_EXHAUSTED."""
        stripped = message.strip() if len(message) <= self._settings.max_message_chars else ""
        talk = is_chitchat(stripped) if stripped else None
        passages_valid = 0 <= max_passages <= MAX_PASSAGES
        limit = max_passages if passages_valid and max_passages else self._settings.max_passages
        early = self._retrieve_early(secret, stripped, limit) if stripped and not talk and passages_valid else None
        try:
            key = await self.key(secret)
        except BaseException:
            self._valid.pop(secret, None)
            if early is not None:
                early[1].cancel()
            raise
        self._remember(secret, key)
        text = validate_message(message, self._settings.max_message_chars)
        if not passages_valid:
            raise InvalidArgument(f"max_passages must be between 1 and {MAX_PASSAGES} (0: the server's default)")
        if charge:
            try:
                await self._charge(key)
            except BaseException:
                if early is not None:
                    early[1].cancel()
                raise
        found = Retrieved([], text, [])
        if not talk:
            if early is not None and _same_knowledge(early[0], key):
                found = await early[1]
            else:
                if early is not None:
                    early[1].cancel()
                found = await self._retrieve(key, text, limit)
        chunks = found.chunks
        # A website stored before websites were checked, whose host no Fetch can reach, is not offered.
        website = key.website if not website_problem(key.website) else ""
        options = Options(website=website, web_available=bool(website) and self._web_available(),
                          allow_direct=bool(key.settings.get("allow_direct")))
        decision = decide(found.text, chunks, self.thresholds, options)
        if found.read_as:
            decision.reasons.insert(0, "read " + ", ".join(f"{w!r} as {r!r}" for w, r in found.read_as)
                                    + " (misspelt words as the key's own)")
        if self.dense is not None and chunks:
            decision.scores["dense"] = round(max(c.dense for c in chunks), 4)   # best cosine among candidates
        decision.chunks = decision.chunks[:limit]
        return Plan(key, decision)

    async def _charge(self, key: KeyRecord) -> None:
        rate, burst = limits_of(key, self._settings.rate_limit_per_second, self._settings.rate_limit_burst)
        verdict = await self.keys.limiter.take(PLAN_BUCKET + key.id, rate, burst)
        if not verdict.allowed:
            wait = retry_after_text(verdict.retry_after_seconds)
            raise ResourceExhausted(f"rate limit of product key {key.id} exceeded for Plan ({rate:g}/s, "
                                    f"burst {burst}); retry in {wait} ms", trailers={RETRY_AFTER_MS_TRAILER: wait})

    async def _retrieve(self, key: KeyRecord, text: str, limit: int) -> Retrieved:
        read_as: list[tuple[str, str]] = []
        if self._spells(key):
            text, read_as = await self.spelling.correct(key.id, key.knowledge_version, text)
        return Retrieved(await self._search(key, text, limit), text, read_as)

    async def _search(self, key: KeyRecord, text: str, limit: int) -> list[retrieval.Chunk]:
        # More than asked for: the decision drops passages below the relevance threshold first.
        lexical = retrieval.search(
            self._pool, key.id, key.ts_config, text, limit=max(2 * limit, 10),
            candidates=self._settings.search_candidates,
        )
        if self.dense is None:
            return await lexical
        return await self.dense.with_lexical(key.id, key.knowledge_version, text, lexical)

    def _retrieve_early(self, secret: str, text: str, limit: int) -> tuple[KeyRecord, asyncio.Task] | None:
        """The retrieval for the record the secret had when last found valid, started now, or None."""
        seen = self._valid.get(secret)
        if not self.early or seen is None or time.monotonic() - seen[0] > EARLY_RETRIEVAL_SECONDS:
            return None
        if self.dense is not None:              # in its worker thread at once, before the task first runs
            spelt = self.spelling.spelt_now(seen[1].id, text) if self._spells(seen[1]) else text
            if spelt is not None:               # (None: known only once the key's vocabulary is read)
                self.dense.queries.start(spelt)
        task = asyncio.ensure_future(self._retrieve(seen[1], text, limit))
        task.add_done_callback(_consume)
        return seen[1], task

    def _spells(self, key: KeyRecord) -> bool:
        """Whether the key's messages are read for misspelt words: English keys only (the word list that
        tells a typo from a word is English; in a German key's messages every word would be a suspect)."""
        return self.spelling is not None and key.ts_config == "english"

    def _remember(self, secret: str, key: KeyRecord) -> None:
        if len(self._valid) >= _RECENT_KEYS and secret not in self._valid:
            self._valid.clear()         # a flood of keys: forget rather than grow
        self._valid[secret] = (time.monotonic(), key)


def _same_knowledge(guess: KeyRecord, key: KeyRecord) -> bool:
    """Whether a retrieval made for `guess` is the one `key` would make."""
    return (guess.id, guess.ts_config, guess.knowledge_version) == (key.id, key.ts_config, key.knowledge_version)


def _consume(task: asyncio.Task) -> None:
    """An early retrieval that was dropped may have failed: its error is not the caller's."""
    if not task.cancelled():
        task.exception()
