"""Per-key rate limits: a token bucket in Redis, read and updated atomically by one Lua script."""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as redis

# KEYS[1]: the bucket; ARGV: refill rate (tokens/s), burst (bucket size). Time comes from the Redis
# server, so replicas with skewed clocks share one bucket correctly.
_TOKEN_BUCKET = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_seconds: float


class RateLimiter:
    def __init__(self, client: redis.Redis) -> None:
        self._script = client.register_script(_TOKEN_BUCKET)

    async def take(self, key_id: str, rate_per_second: float, burst: int) -> Verdict:
        allowed, wait = await self._script(keys=[f"parley:rl:{key_id}"], args=[rate_per_second, max(1, burst)])
        return Verdict(bool(int(allowed)), float(wait))


def retry_after_text(seconds: float) -> str:
    """Milliseconds, rounded up (retry-after-ms trailer)."""
    return str(max(1, math.ceil(seconds * 1000)))
