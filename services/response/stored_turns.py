"""Chat turns as the analytics stream worker stored them (`conversations`, read-only here): where
SubmitFeedback finds a turn whose Redis record is gone (Redis restarted empty, flushed, evicted)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from services.common.errors import RETRY_AFTER_TRAILER, TRANSIENT_RETRY_AFTER_SECONDS, Unavailable, is_transient
from services.response.cache import RequestRecord

logger = logging.getLogger(__name__)

# Answered turns only, as Redis holds them (a failed turn has no record there either), and only within
# the feedback window, as long as Redis keeps a turn's record: past it a turn is not rated, wherever it
# is found. request_id has a hash index (migration 0010), the other conditions filter its few rows;
# product_key_id keeps another key's turn out.
_TURN = """
SELECT session_id, message FROM conversations
WHERE request_id = $1 AND product_key_id = $2 AND error_code = ''
  AND occurred_at >= now() - make_interval(secs => $3)
LIMIT 1
"""
# An unreachable server may not refuse the connection (a lost network path): the caller hears back.
LOOKUP_SECONDS = 5.0


async def any_turn_stored(pool: asyncpg.Pool, request_id: str) -> bool:
    """Whether any turn (of any key, at any time, failed or not) with `request_id` is stored.
    UNAVAILABLE when PostgreSQL cannot be asked."""
    return await _asked(pool.fetchval("SELECT EXISTS (SELECT 1 FROM conversations WHERE request_id = $1)",
                                      request_id))


async def _asked(query):
    try:
        return await asyncio.wait_for(query, LOOKUP_SECONDS)
    except Exception as exc:
        if not is_transient(exc):
            raise
        logger.warning("stored chat turn lookup in PostgreSQL failed: %r", exc)
        raise Unavailable("the chat turn rated cannot be looked up right now; retry shortly",
                          trailers={RETRY_AFTER_TRAILER: str(TRANSIENT_RETRY_AFTER_SECONDS)}) from None


async def stored_turn(pool: asyncpg.Pool, request_id: str, key_id: str, key_hash: str,
                      window_seconds: float) -> RequestRecord | None:
    """The answered turn `request_id` of the key `key_id` from the last `window_seconds`; None when it
    is not stored (or not yet: the worker stores a turn a moment after its event) or older.
    UNAVAILABLE when PostgreSQL cannot be asked."""
    row = await _asked(pool.fetchrow(_TURN, request_id, key_id, float(window_seconds)))
    if row is None:
        return None
    return RequestRecord(key_hash, key_id, row["session_id"], row["message"])
