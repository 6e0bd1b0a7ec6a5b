"""Product-key admission, shared by every tenant-facing service: who a secret is, and its rate limit.

A secret is known by the SHA-256 of it. Its key record (id, name, website, settings, knowledge
version) lives in PostgreSQL (`product_keys`, written by the search service) and is cached in Redis
at `parley:key:<sha256 hex>`, shared by every replica of every service:

- Revocation and rotation write a tombstone over the old secret's entry *before* they change
  PostgreSQL, and a validator caches what it read with SET NX, so a read that raced the change
  cannot bring the old record back: the old secret is refused on every replica as soon as the admin
  RPC returns, whether the record was cached or not. A change that does not commit lifts its
  tombstone again (`key_change`), so a failed revocation refuses nothing.
- Knowledge changes delete the entry and leave a version floor beside it for the record TTL: a
  validator that read the key before the change and caches it after the delete cannot bring the old
  knowledge version back (it is refused as a tombstone refuses a revoked record). A missed delete is
  bounded by `PARLEY_KEY_CACHE_TTL_SECONDS`.
- Redis down: records come from PostgreSQL and are kept in process for
  `PARLEY_KEY_LOCAL_CACHE_SECONDS` (a few seconds). That is the bound on how long a secret rotated
  during a Redis outage can still be accepted by a replica that validated it just before. (A rotation
  itself needs Redis: it refuses to run without writing the tombstone.)

Rate limits: one token bucket per key id in Redis (a Lua script on the Redis clock, so replicas share
it); the common case — a cached key — is validated and charged in ONE round trip. Redis down: a token
bucket per process, so each replica admits at most the key's limit on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass

import asyncpg
import redis.asyncio as redis

from services.common import db
from services.common.errors import ResourceExhausted, Unauthenticated, Unavailable
from services.common.redis_batch import AutoPipeline
from services.common.redis_client import RedisHealth

logger = logging.getLogger(__name__)

KEY_PREFIX = "parley:key:"
BUCKET_PREFIX = "parley:rl:"
TOMBSTONE = b"-"
RETRY_AFTER_TRAILER = "retry-after-ms"
# Kept in Redis for tombstones at least this long, whatever the record TTL (a tombstone that
# expired would only send the next check to PostgreSQL, which refuses the old secret too).
MIN_TOMBSTONE_SECONDS = 60.0
# A key's last record read from PostgreSQL is kept this long beside the cached one (LAST_PREFIX), for
# PostgreSQL outages: a key whose cached record expired meanwhile is then still admitted (its cached
# answers go on) with that record. A revocation deletes it together with writing the tombstone, and a
# record is never kept where a tombstone stands, so a revoked secret never comes back through it.
LAST_PREFIX = "parley:keylast:"
LAST_KNOWN_SECONDS = 3600.0
# Beside each tombstone, a random mark of the change that wrote it (as long-lived): a change that did
# not commit lifts its tombstone only while its own mark stands (see key_change).
CHANGE_PREFIX = "parley:keychange:"
# Beside a record dropped because its knowledge changed, the version it changed to (for the record TTL):
# a record read before the change and cached after the drop is refused (see KeyCache.invalidate).
FLOOR_PREFIX = "parley:keyfloor:"
# Secrets are "pk_" and 43 URL-safe characters (search's new_secret); nothing longer is one.
MAX_SECRET_CHARS = 256


@dataclass(frozen=True)
class KeyRecord:
    """What a service needs of a valid key: validated with one query, then cached in Redis."""

    id: str
    name: str
    knowledge_version: int
    instructions: str
    website: str
    ts_config: str
    settings: dict

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> KeyRecord:
        return cls(**json.loads(raw))


# Memoised: every turn hashes its secret, and a process sees few secrets.
@functools.lru_cache(maxsize=4096)
def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def require_key(secret: str) -> bytes:
    """The hash of the secret exactly as sent: one padded with white space or cut short is another
    string, so an unknown secret. A string longer than any secret is refused before it is hashed: the
    memo above would otherwise keep up to 4,096 of them, each as long as a gRPC message may be."""
    if not secret.strip():
        raise Unauthenticated("product key missing")
    if len(secret) > MAX_SECRET_CHARS:
        raise Unauthenticated("unknown or revoked product key")
    return hash_secret(secret)


def cache_key(key_hash: bytes) -> str:
    return KEY_PREFIX + key_hash.hex()


# KEYS: a key cache entry, deleted unless it is the tombstone ARGV[1]; its version floor, raised to
# ARGV[2] (0: none) for ARGV[3] ms (kept if higher, its TTL renewed: the latest drop is what a late
# write races).
_DROP_RECORD = """
if tonumber(ARGV[2]) > 0 then
  local floor = redis.call('GET', KEYS[2])
  if not floor or tonumber(floor) < tonumber(ARGV[2]) then floor = ARGV[2] end
  redis.call('SET', KEYS[2], floor, 'PX', ARGV[3])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""

# KEYS: the cache entry, the last-known entry, the version floor; ARGV: the record, its TTL (ms), the
# last-known TTL (ms), the tombstone, the record's knowledge version. Where a tombstone stands nothing is
# written (a read that raced the revocation), nor a record older than the floor (one that raced a
# knowledge change).
_PUT_RECORD = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[4] then return 0 end
local floor = tonumber(redis.call('GET', KEYS[3]))
if floor and tonumber(ARGV[5]) < floor then return 0 end
if not current then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
return 1
"""


# KEYS: the cache entry, the change mark; ARGV: the mark of the change that failed, the tombstone. The
# tombstone goes only if that change wrote the last one (in one script: no other change's in between).
_LIFT = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
if redis.call('GET', KEYS[1]) == ARGV[2] then redis.call('DEL', KEYS[1]) end
return 1
"""

# The tombstones written within a key_change so far: (cache, hash of the secret, mark).
_CHANGE: ContextVar[list[tuple[KeyCache, bytes, str]] | None] = ContextVar("parley_key_change", default=None)


class KeyCache:
    """Key records in Redis by the hash of their secret; tombstones for secrets that stopped working;
    version floors for keys whose knowledge changed. `pool`: where invalidate reads the new version when
    its caller does not say it."""

    def __init__(self, client: redis.Redis, ttl_seconds: float,
                 pool: Callable[[], asyncpg.Pool | None] = lambda: None) -> None:
        self._redis = client
        self._pool = pool
        self._ttl_ms = max(1, int(ttl_seconds * 1000))
        self._tombstone_ms = max(self._ttl_ms, int(MIN_TOMBSTONE_SECONDS * 1000))
        self._drop = client.register_script(_DROP_RECORD)
        self._put = client.register_script(_PUT_RECORD)
        self._lift = client.register_script(_LIFT)

    async def get(self, key_hash: bytes) -> KeyRecord | bytes | None:
        """The cached record, TOMBSTONE for a secret that was revoked or rotated away, or None."""
        raw = await self._redis.get(cache_key(key_hash))
        if raw is None or raw == TOMBSTONE:
            return raw
        try:
            return KeyRecord.from_json(raw)
        except (ValueError, TypeError):
            logger.warning("unreadable key cache entry; ignoring it")
            return None

    async def put(self, key_hash: bytes, record: KeyRecord) -> None:
        """Caches a record read from PostgreSQL, and keeps it as the key's last known one. Only where
        nothing is cached (as SET NX): a tombstone (or a fresher entry) written meanwhile wins over
        this possibly stale read, and a tombstone also keeps the last-known record from being written;
        so does a version floor above the record's knowledge version."""
        await self._put(keys=[cache_key(key_hash), LAST_PREFIX + key_hash.hex(), FLOOR_PREFIX + key_hash.hex()],
                        args=[record.to_json(), self._ttl_ms, int(LAST_KNOWN_SECONDS * 1000), TOMBSTONE,
                              record.knowledge_version])

    async def last_known(self, key_hash: bytes) -> KeyRecord | None:
        """The key's last record read from PostgreSQL (up to LAST_KNOWN_SECONDS old), unless the
        secret was revoked or rotated away since; for when PostgreSQL cannot be asked."""
        current, last = await self._redis.mget(cache_key(key_hash), LAST_PREFIX + key_hash.hex())
        if current == TOMBSTONE or last is None:
            return None
        try:
            return KeyRecord.from_json(last)
        except (ValueError, TypeError):
            return None

    async def forbid(self, key_hash: bytes) -> None:
        """The secret no longer works (revoked or rotated away): its tombstone, and no last-known record.
        Within a key_change, the tombstone is lifted again if the change does not commit."""
        mark = secrets.token_hex(8)
        written = _CHANGE.get()
        if written is not None:
            written.append((self, key_hash, mark))   # before the write: one whose reply is lost is lifted too
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(cache_key(key_hash), TOMBSTONE, px=self._tombstone_ms)
            pipe.set(CHANGE_PREFIX + key_hash.hex(), mark, px=self._tombstone_ms)
            pipe.delete(LAST_PREFIX + key_hash.hex())
            await pipe.execute()

    async def lift(self, key_hash: bytes, mark: str) -> bool:
        """Removes the tombstone of the change `mark` if no other change wrote one since."""
        return bool(await self._lift(keys=[cache_key(key_hash), CHANGE_PREFIX + key_hash.hex()],
                                     args=[mark, TOMBSTONE]))

    async def invalidate(self, key_hash: bytes, version: int = 0) -> None:
        """Drop a cached record (its knowledge changed to `version`), never a tombstone: a revocation is
        followed by a knowledge event for the same secret, and without its tombstone a validator that
        read the key just before the revocation could cache it again (SET NX) for the record TTL.
        For the same race with a knowledge change, the key's version floor is raised to `version` (0:
        the version PostgreSQL has now, read here), so put refuses a record read before the change."""
        if not version:
            version = await self._current_version(key_hash)
        await self._drop(keys=[cache_key(key_hash), FLOOR_PREFIX + key_hash.hex()],
                         args=[TOMBSTONE, version, self._ttl_ms])

    async def _current_version(self, key_hash: bytes) -> int:
        """The key's knowledge version in PostgreSQL; 0 (no floor) if it cannot be read or is revoked
        (whose tombstone refuses the old record already)."""
        pool = self._pool()
        if pool is None:
            return 0
        try:
            record = await validate_key(pool, key_hash)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            logger.warning("no knowledge version for the key cache's floor (%s); dropping the record only", exc)
            return 0
        return record.knowledge_version if record is not None else 0


@contextlib.asynccontextmanager
async def key_change(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Around the transaction of a change that stops a secret working (revocation, rotation): the
    tombstones KeyCache.forbid writes within it are lifted again if it raises, so a change that did
    not commit leaves the secret working rather than refused for MIN_TOMBSTONE_SECONDS. forbid finds
    the change in a context variable, so the change needs no handle on the cache: its caller's
    before_change (the search servicer's wraps forbid) stays a plain callable.

    Why lifting cannot undo a change that did happen:
    - It runs after the transaction ended, and only if PostgreSQL still takes the secret: a COMMIT that
      went through with its reply lost (the secret refused there) keeps its tombstone.
    - A concurrent change of the same key locks its row first too, so it writes its own tombstone only
      once this transaction has ended; its write replaces the mark, and the lift (compare and delete
      in one script) then leaves that tombstone, however the two interleave after the check.
    Lifting that fails (Redis or PostgreSQL away) is logged: the tombstone then expires on its own."""
    written: list[tuple[KeyCache, bytes, str]] = []
    token = _CHANGE.set(written)
    committed = False
    try:
        yield
        committed = True
    finally:
        _CHANGE.reset(token)
        if not committed:
            await _lift_unless_refused(pool, written)


async def _lift_unless_refused(pool: asyncpg.Pool, written: list[tuple[KeyCache, bytes, str]]) -> None:
    for cache, key_hash, mark in written:
        try:
            if await validate_key(pool, key_hash, bounded=False) is not None:
                await cache.lift(key_hash, mark)
        except Exception as exc:  # noqa: BLE001 - the change's own error is the one to raise
            logger.warning("a key change that did not commit could not lift its tombstone (%r); the old "
                           "secret is refused until it expires", exc)


_VALIDATE = """
SELECT id, name, knowledge_version, instructions, website, ts_config::text AS ts_config, settings
FROM product_keys WHERE key_hash = $1 AND revoked_at IS NULL
"""


# A key check waits this long for a connection of its pool: one whose connections are all taken (a
# flood of unknown secrets while Redis is away) answers UNAVAILABLE instead of holding the call.
KEY_CHECK_ACQUIRE_SECONDS = 2.0
# ... and this long for its statement: a PostgreSQL that accepts and never answers (frozen, a lost
# network path) held each check to the pool's 30 s statement timeout.
KEY_CHECK_STATEMENT_SECONDS = 3.0


async def validate_key(pool: asyncpg.Pool, key_hash: bytes, *, bounded: bool = True) -> KeyRecord | None:
    """The key with its settings and knowledge version in one query; None when unknown or revoked.
    `bounded`: the wait for a connection is KEY_CHECK_ACQUIRE_SECONDS at most and for the statement
    KEY_CHECK_STATEMENT_SECONDS (a caller's key check; TimeoutError past it)."""
    if bounded:
        async with db.connection(pool, KEY_CHECK_ACQUIRE_SECONDS) as conn:
            row = await conn.fetchrow(_VALIDATE, key_hash, timeout=KEY_CHECK_STATEMENT_SECONDS)
    else:
        row = await pool.fetchrow(_VALIDATE, key_hash)
    if row is None:
        return None
    settings = row["settings"]
    return KeyRecord(
        id=row["id"], name=row["name"], knowledge_version=row["knowledge_version"],
        instructions=row["instructions"], website=row["website"], ts_config=row["ts_config"],
        settings=json.loads(settings) if isinstance(settings, str) else dict(settings),
    )


# The token bucket of KEYS[1] (or of BUCKET_PREFIX .. key id); rate and burst in `rate`, `burst`;
# `want` tokens asked for at once (turns admitted together), of which `granted` are taken, in order:
# as `want` calls one after the other at the same instant would. `wait`: when the next token is due.
# Time comes from the Redis server, so replicas with skewed clocks share one bucket correctly.
# An idle bucket expires once it would be full again, but never later than MAX_BUCKET_TTL_MS: a rate
# stored before key settings were bounded (1e-17/s) would ask PEXPIRE for 1e+23 ms, which Redis refuses
# as not an integer, failing the script (and so marking Redis down) for every tenant of the replica. The
# cap (math.min with it first, so a NaN loses) is longer than any bounded setting needs (1e8 s).
MAX_BUCKET_TTL_MS = 10 ** 12
_BUCKET = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local state = redis.call('HMGET', bucket, 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local granted = math.max(0, math.min(want, math.floor(tokens)))
tokens = tokens - granted
local wait = 0
if granted < want then
  wait = (1 - tokens) / rate
end
redis.call('HSET', bucket, 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', bucket, math.min(""" + str(MAX_BUCKET_TTL_MS) + """, math.ceil(burst / rate * 1000)) + 1000)
"""

# ARGV: refill rate (tokens/s), burst (bucket size).
_TAKE = "local bucket = KEYS[1]\nlocal rate = tonumber(ARGV[1])\nlocal burst = tonumber(ARGV[2])\nlocal want = 1\n" + \
    _BUCKET + "return {granted, tostring(wait)}\n"

# KEYS[1]: the key cache entry; ARGV: default rate, default burst, bucket prefix, tokens wanted.
# Returns {0} (not cached), {-1} (tombstone), or {1, record, wait, rate, burst, tokens granted}.
_ADMIT = """
local rec = redis.call('GET', KEYS[1])
if not rec then return {0} end
if rec == '-' then return {-1} end
local ok, doc = pcall(cjson.decode, rec)
if not ok or type(doc) ~= 'table' or type(doc['id']) ~= 'string' then return {0} end
local s = doc['settings']
if type(s) ~= 'table' then s = {} end
local rate = tonumber(s['rate_limit_per_second']) or 0
if rate <= 0 then rate = tonumber(ARGV[1]) end
local burst = tonumber(s['rate_limit_burst']) or 0
if burst < 1 then burst = tonumber(ARGV[2]) end
burst = math.max(1, burst)
local bucket = ARGV[3] .. doc['id']
local want = tonumber(ARGV[4])
""" + _BUCKET + """
return {1, rec, tostring(wait), tostring(rate), tostring(burst), granted}
"""


class _Admissions:
    """The turns of one secret that wait for the same pipeline: admitted by one script call. Each
    turn waits on a future of its own, so that one cancelled does not cancel the others' admission
    (cheaper than an `asyncio.shield` per turn)."""

    __slots__ = ("waiters", "task")

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future] = []
        self.task: asyncio.Task | None = None

    def settle(self, reply: list | None, error: BaseException | None) -> None:
        for waiter in self.waiters:
            if waiter.done():
                continue  # its turn was cancelled
            if error is not None:
                waiter.set_exception(error if isinstance(error, Exception) else asyncio.CancelledError())
            else:
                waiter.set_result(reply)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_seconds: float


class LocalBuckets:
    """Per-process token buckets: the rate limit while Redis is away."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._max = max_keys

    def take(self, key_id: str, rate: float, burst: int) -> Verdict:
        now = time.monotonic()
        tokens, ts = self._buckets.get(key_id, (float(burst), now))
        tokens = min(float(burst), tokens + max(0.0, now - ts) * rate)
        if len(self._buckets) >= self._max and key_id not in self._buckets:
            self._buckets.clear()  # a flood of keys: forget (refills everyone) rather than grow
        if tokens >= 1:
            self._buckets[key_id] = (tokens - 1, now)
            return Verdict(True, 0.0)
        self._buckets[key_id] = (tokens, now)
        return Verdict(False, (1 - tokens) / rate)


class RateLimiter:
    """Token bucket per key in Redis; per process when Redis does not answer."""

    def __init__(self, client: redis.Redis) -> None:
        self._script = client.register_script(_TAKE)
        self.local = LocalBuckets()
        self.health = RedisHealth(1.0, "limiting per process")   # one warning per outage, not per call

    async def take(self, key_id: str, rate_per_second: float, burst: int) -> Verdict:
        if not self.health.available():
            return self.local.take(key_id, rate_per_second, max(1, burst))
        try:
            allowed, wait = await self._script(keys=[BUCKET_PREFIX + key_id], args=[rate_per_second, max(1, burst)])
        except redis.RedisError as exc:
            self.health.failed("rate limiter", exc)
            return self.local.take(key_id, rate_per_second, max(1, burst))
        self.health.ok()
        return Verdict(bool(int(allowed)), float(wait))


def retry_after_text(seconds: float) -> str:
    """Milliseconds, rounded up (retry-after-ms trailer)."""
    return str(max(1, math.ceil(seconds * 1000)))


def limits_of(record: KeyRecord, default_rate: float, default_burst: int) -> tuple[float, int]:
    rate = float(record.settings.get("rate_limit_per_second") or default_rate)
    burst = int(record.settings.get("rate_limit_burst") or default_burst)
    return rate, max(1, burst)


def limited(key_id: str, rate: float, burst: int, wait: float) -> ResourceExhausted:
    text = retry_after_text(wait)
    return ResourceExhausted(f"rate limit of product key {key_id} exceeded ({rate:g}/s, burst {burst}); "
                             f"retry in {text} ms", trailers={RETRY_AFTER_TRAILER: text})


class KeyValidator:
    """The valid key of a secret: Redis, else PostgreSQL (kept a few seconds in process without Redis)."""

    def __init__(self, client: redis.Redis, pool: Callable[[], asyncpg.Pool | None], *, ttl_seconds: float,
                 local_seconds: float, default_rate: float, default_burst: int,
                 linger: Callable[[], float] | None = None) -> None:
        self.cache = KeyCache(client, ttl_seconds, pool)
        self.limiter = RateLimiter(client)
        self._pool = pool
        self._local_seconds = local_seconds
        self._local: dict[bytes, tuple[float, KeyRecord | None]] = {}
        self._default = (default_rate, default_burst)
        self._admit = client.register_script(_ADMIT)
        # Concurrent turns' admissions go to Redis together, in one pipeline (redis_batch.py), and
        # those of one secret in one script call that takes as many tokens; `linger` (AutoPipeline)
        # lets a busy process wait for more turns before the batch goes.
        self._batch = AutoPipeline(client, linger)
        self._joining: dict[bytes, _Admissions] = {}
        self._records: dict[bytes, KeyRecord] = {}  # a cached record's JSON -> the record, decoded once
        # While Redis fails, one call a second tries it; the others validate in PostgreSQL at once
        # instead of each waiting for a Redis that may not answer (stopped, frozen).
        self.health = RedisHealth(1.0, "validating keys in PostgreSQL, rate limits per process")
        # While PostgreSQL fails, one check a second asks it; the others are answered at once (a
        # known key's last record, else UNAVAILABLE), so a flood of secrets no cache holds is
        # neither a flood of connection attempts nor one warning each.
        self.postgres_health = RedisHealth(1.0, "known keys go on with their last record", server="PostgreSQL")

    async def close(self) -> None:
        """The admissions' pipeline connection back to the client's pool (the client is the owner's)."""
        await self._batch.close()

    async def validate(self, secret: str) -> KeyRecord:
        key_hash = require_key(secret)
        if not self.health.available():
            return await self._validate_locally(key_hash)
        try:
            cached = await self.cache.get(key_hash)
        except redis.RedisError as exc:
            self.health.failed("key cache", exc)
            return await self._validate_locally(key_hash)
        self.health.ok()
        if cached == TOMBSTONE:
            raise Unauthenticated("unknown or revoked product key")
        if isinstance(cached, KeyRecord):
            return cached
        return await self._validate_and_cache(key_hash)

    async def admit(self, secret: str) -> KeyRecord:
        """validate() and take a token of the key's bucket: one Redis round trip for a cached key,
        shared by the turns of the same secret that wait for the same pipeline."""
        key_hash = require_key(secret)
        if not self.health.available():
            return await self._admit_locally(key_hash)
        loop = asyncio.get_running_loop()
        group = self._joining.get(key_hash)
        if group is None:
            group = self._joining[key_hash] = _Admissions()
            group.task = loop.create_task(self._admit_together(key_hash, group))
        waiter = loop.create_future()
        group.waiters.append(waiter)
        rank = len(group.waiters)  # turns are granted tokens in the order they asked
        try:
            status, *rest = await waiter
        except redis.RedisError as exc:
            self.health.failed("admission", exc)
            return await self._admit_locally(key_hash)
        self.health.ok()
        status = int(status)
        if status == -1:
            raise Unauthenticated("unknown or revoked product key")
        if status == 0:
            record = await self._validate_and_cache(key_hash)
            rate, burst = limits_of(record, *self._default)
            verdict = await self.limiter.take(record.id, rate, burst)
            if not verdict.allowed:
                raise limited(record.id, rate, burst, verdict.retry_after_seconds)
            return record
        record = self._decoded(rest[0])
        if rank > int(rest[4]):
            raise limited(record.id, float(rest[2]), int(float(rest[3])), float(rest[1]))
        return record

    async def _admit_locally(self, key_hash: bytes) -> KeyRecord:
        """Redis is away: the key from PostgreSQL (see _validate_locally), its tokens from this
        process's own bucket."""
        record = await self._validate_locally(key_hash)
        rate, burst = limits_of(record, *self._default)
        verdict = self.limiter.local.take(record.id, rate, burst)
        if not verdict.allowed:
            raise limited(record.id, rate, burst, verdict.retry_after_seconds)
        return record

    async def _admit_together(self, key_hash: bytes, group: _Admissions) -> None:
        """The admission script for every turn of the group, with as many tokens as turns joined
        until the pipeline was sent."""
        def args() -> list:
            if self._joining.get(key_hash) is group:
                del self._joining[key_hash]  # sent: later turns start a group of their own
            return [*self._default, BUCKET_PREFIX, len(group.waiters)]

        try:
            reply = await self._batch.evalsha(self._admit, [cache_key(key_hash)], args)
        except BaseException as exc:  # noqa: BLE001 - every waiting turn gets the error
            group.settle(None, exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            if self._joining.get(key_hash) is group:
                del self._joining[key_hash]
        group.settle(reply, None)

    def _decoded(self, raw: bytes) -> KeyRecord:
        record = self._records.get(raw)
        if record is None:
            if len(self._records) >= 4096:
                self._records.clear()
            record = self._records[raw] = KeyRecord.from_json(raw)
        return record

    async def _from_postgres(self, key_hash: bytes) -> KeyRecord | None:
        pool = self._pool()
        if pool is None:
            raise Unavailable("product keys cannot be checked right now; retry shortly",
                              trailers={RETRY_AFTER_TRAILER: "1000"})
        if not self.postgres_health.available():
            raise Unavailable("product keys cannot be checked right now; retry shortly",
                              trailers={RETRY_AFTER_TRAILER: "1000"})
        try:
            record = await validate_key(pool, key_hash)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            self.postgres_health.failed("product key check", exc)
            raise Unavailable("product keys cannot be checked right now; retry shortly",
                              trailers={RETRY_AFTER_TRAILER: "1000"}) from None
        self.postgres_health.ok()
        return record

    async def _validate_and_cache(self, key_hash: bytes) -> KeyRecord:
        try:
            record = await self._from_postgres(key_hash)
        except Unavailable:
            # PostgreSQL is away: a key it knew (and did not revoke) goes on with its last record, so
            # that its cached answers are still given; a secret never seen stays UNAVAILABLE.
            try:
                last = await self.cache.last_known(key_hash)
            except redis.RedisError:
                last = None
            if last is None:
                raise
            return last
        if record is None:
            raise Unauthenticated("unknown or revoked product key")
        try:
            await self.cache.put(key_hash, record)
        except redis.RedisError as exc:
            self.health.failed("key cache", exc)
        return record

    async def _validate_locally(self, key_hash: bytes) -> KeyRecord:
        """Redis is away: PostgreSQL, remembered for local_seconds (unknown secrets too, so a flood of
        wrong secrets does not become a flood of queries)."""
        now = time.monotonic()
        entry = self._local.get(key_hash)
        if entry is None or entry[0] <= now:
            if len(self._local) > 50_000:
                self._local = {h: e for h, e in self._local.items() if e[0] > now}
            entry = (now + self._local_seconds, await self._from_postgres(key_hash))
            if self._local_seconds > 0:
                self._local[key_hash] = entry
        if entry[1] is None:
            raise Unauthenticated("unknown or revoked product key")
        return entry[1]
