"""Redis state of the response service: answer cache, key pointers, session turns, request records.

Answer cache: `parley:ans:{key id}:{knowledge version}:{sha256(normalised question)}` -> the
ChatResponse as first produced (protobuf bytes), TTL `answer_cache_ttl_seconds`. A knowledge
update bumps the version, so older answers are simply never read again.

The version comes from SearchService.Plan, but a cache hit should not need Plan. So each Plan
leaves a pointer `parley:kp:{sha256(secret)}` -> "{key id} {version}" (TTL
`answer_cache_pointer_ttl_seconds`), and the hit path is ONE Redis round trip: a Lua script reads
the pointer and then the answer it points to, sent with the lookups of concurrent turns in one
pipeline (services/common/redis_batch.py). The pointer is dropped when a KnowledgeUpdated
event arrives for the key (knowledge changed, key revoked), so a stale pointer lives at most
until then, and never longer than its TTL. An unknown secret has no pointer and goes to Plan,
which rejects it.

A pointer never moves to an older version: a Plan that ends after a newer one, or one answered
from a search replica's key record not yet invalidated, would otherwise point the key back at its
old answers for the pointer's TTL. The update also leaves the key's version floor
`parley:kpf:{key id}` (as long-lived as the key's pointer set), below which no pointer is written
and no hot answer kept.

Redis is a soft dependency: when it fails, lookups miss, writes are skipped, sessions have no
history and single-flight is in-process only; after a failure Redis is left alone for
`retry_seconds` so that an outage costs no time per turn. Reads and writes are judged apart: a
Redis that refuses writes (out of memory under noeviction, a read-only replica) still serves
cached answers, and the service's health reports `dependency/redis-writes` down meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import re
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass

import redis.asyncio as redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, NoScriptError, RedisError, ResponseError

from services.common.errors import RETRY_AFTER_TRAILER, TRANSIENT_RETRY_AFTER_SECONDS, Unavailable
from services.common.redis_batch import AutoPipeline
from services.common.redis_client import RedisHealth
from services.common.text import PROSE_PUNCTUATION
from services.response.llm import Turn

logger = logging.getLogger(__name__)

PREFIX = "parley:"
# Turn records wait this long for others to join their write. Nobody waits on them (SubmitFeedback
# and the session history flush first in this process); 50 ms instead of 5 ms cut the response
# process's CPU per cached turn by 2-24 % (A/B of two response processes under ghz, concurrency 16
# and 64), for a record another replica cannot see for at most 50 ms, lost with a crash.
RECORD_BATCH_SECONDS = 0.05
RECORD_SCRIPT_TURNS = 256  # turns per script call: a backlog does not hold Redis in one long script

# KEYS[1] = pointer key; ARGV[1] = answer key prefix, ARGV[2] = question hash.
# Returns {pointer or false, cached answer or false}.
_LOOKUP = """#!lua flags=no-writes
local ptr = redis.call('GET', KEYS[1])
if not ptr then return {false, false} end
local sp = string.find(ptr, ' ', 1, true)
local ans = redis.call('GET', ARGV[1] .. string.sub(ptr, 1, sp - 1) .. ':' .. string.sub(ptr, sp + 1) .. ':' .. ARGV[2])
return {ptr, ans}
"""

# The turns of one batch in ONE command (a pipeline of one EVALSHA per turn cost redis-py more CPU
# than the turns themselves under load). ARGV[1..3] = record TTL, turns kept, session TTL; then per
# turn: its key count (1, or 2 with a session), the record, the turn. KEYS: per turn, the request
# record, then the session list when it has one.
_RECORD = """
local k, a = 1, 4
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  redis.call('SET', KEYS[k], ARGV[a + 1], 'EX', ARGV[1])
  if n == 2 then
    redis.call('RPUSH', KEYS[k + 1], ARGV[a + 2])
    redis.call('LTRIM', KEYS[k + 1], -tonumber(ARGV[2]), -1)
    redis.call('EXPIRE', KEYS[k + 1], ARGV[3])
  end
  k = k + n
  a = a + 3
end
return k - 1
"""

# KEYS: the pointer, the key's version floor, the key's pointer set, the last-known pointer; ARGV: key id,
# version, secret hash, pointer TTL, set TTL (also the last-known pointer's). Returns 1 when written, 0
# when the floor or a newer pointer of the key stands.
_SET_POINTER = """
local v = tonumber(ARGV[2])
if v < tonumber(redis.call('GET', KEYS[2]) or '0') then return 0 end
local ptr = redis.call('GET', KEYS[1])
if ptr then
  local sp = string.find(ptr, ' ', 1, true)
  if sp and string.sub(ptr, 1, sp - 1) == ARGV[1] and tonumber(string.sub(ptr, sp + 1)) > v then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'EX', ARGV[4])
redis.call('SET', KEYS[4], ARGV[1] .. ' ' .. ARGV[2], 'EX', ARGV[5])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[5])
return 1
"""

# KEYS: the key's version floor, its pointer set; ARGV: the knowledge version now, the floor's TTL, the
# pointer prefix, the last-known pointer prefix. Raises the floor (never lowers it: updates may arrive
# out of order), drops the pointers (both kinds) and the set that named them (a rotated secret's hash would otherwise stay in it for good).
_FORGET_KEY = """
local floor = math.max(tonumber(ARGV[1]), tonumber(redis.call('GET', KEYS[1]) or '0'))
redis.call('SET', KEYS[1], floor, 'EX', ARGV[2])
local n = 0
for _, h in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  n = n + redis.call('DEL', ARGV[3] .. h)
  redis.call('DEL', ARGV[4] .. h)
end
redis.call('DEL', KEYS[2])
return n
"""

_PUNCT = re.compile(PROSE_PUNCTUATION)


def normalise(question: str) -> str:
    """Case, compatibility forms (NFKC), prose punctuation and spacing do not make a question
    different; symbols and the marks that name things do ("C#" and "C++" are two questions)."""
    text = unicodedata.normalize("NFKC", question).casefold()
    return " ".join(_PUNCT.sub(" ", text).split())


def question_hash(question: str) -> str:
    return hashlib.sha256(normalise(question).encode()).hexdigest()[:32]


# Memoised: every turn hashes its secret, and a process sees few secrets.
@functools.lru_cache(maxsize=4096)
def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.strip().encode()).hexdigest()


@dataclass(frozen=True)
class Pointer:
    key_id: str
    version: int


@dataclass(frozen=True)
class RequestRecord:
    """What SubmitFeedback needs to know about an earlier turn."""

    key_hash: str
    key_id: str
    session_id: str
    message: str


class HotAnswers:
    """A small in-process copy of recent cache hits, for `local_seconds`: the hottest questions are
    answered without a Redis round trip. The knowledge follower clears a key's entries at once and
    leaves the key's version floor: a lookup that read the old pointer before it does not put the old
    answer back."""

    def __init__(self, local_seconds: float, max_entries: int = 10_000) -> None:
        self._ttl = local_seconds
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, Pointer, bytes]] = OrderedDict()
        self._floors: dict[str, int] = {}

    def get(self, key_hash: str, qhash: str) -> tuple[Pointer, bytes] | None:
        if self._ttl <= 0:
            return None
        entry = self._entries.get((key_hash, qhash))
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[(key_hash, qhash)]
            return None
        return entry[1], entry[2]

    def put(self, key_hash: str, qhash: str, pointer: Pointer, value: bytes) -> None:
        if self._ttl <= 0 or pointer.version < self._floors.get(pointer.key_id, 0):
            return
        self._entries[(key_hash, qhash)] = (time.monotonic() + self._ttl, pointer, value)
        self._entries.move_to_end((key_hash, qhash))
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def forget_key(self, key_id: str, version: int) -> None:
        self._floors[key_id] = max(version, self._floors.get(key_id, 0))
        for name in [k for k, (_, ptr, _) in self._entries.items() if ptr.key_id == key_id]:
            del self._entries[name]


class _Local:
    """Stands for the cross-process lock while Redis is away: the in-process single-flight is all."""

    async def release(self) -> None:
        return None


LOCAL_ONLY = _Local()


class ResponseStore:
    def __init__(self, client: redis.Redis, *, answer_ttl: int, pointer_ttl: int, session_turns: int,
                 session_ttl: int, request_ttl: int, local_seconds: float = 0.0, retry_seconds: float = 1.0) -> None:
        self.redis = client
        self.health = RedisHealth(retry_seconds, "answering without the cache, sessions and cross-process locks")
        self.write_health = RedisHealth(retry_seconds, "writing no cached answers, pointers, turns or locks")
        self.hot = HotAnswers(local_seconds)
        self._pending: list[tuple[str, RequestRecord, str]] = []
        # Done once the pending turns (the batch being written) are written or given up: a flush waits
        # for the turns recorded before it, not for those that keep coming after it under load.
        self._pending_done: asyncio.Future | None = None
        self._writing_done: asyncio.Future | None = None
        self._flushing: asyncio.Task | None = None
        self._answer_ttl = answer_ttl
        self._pointer_ttl = pointer_ttl
        self._session_turns = session_turns
        self._session_ttl = session_ttl
        self._request_ttl = request_ttl
        # Flagged no-writes (Redis 7): it runs while Redis holds writes back (CLIENT PAUSE WRITE, as a
        # failover does) and on a read-only replica, so cached answers go on; a Redis before 7, which
        # cannot read the flag, is given the script without it (`_pointed_answer`).
        self._lookup = client.register_script(_LOOKUP)
        self._set_pointer = client.register_script(_SET_POINTER)
        self._forget_key = client.register_script(_FORGET_KEY)
        self._key_ttl = max(pointer_ttl * 4, 3600)  # a key's pointer set and version floor
        # Lookups of concurrent turns share one round trip (and so can the key's admission).
        self.batch = AutoPipeline(client)
        self._record_sha = ""

    def _failed(self, what: str, exc: RedisError, *, write: bool) -> None:
        """A refused write (an error reply: out of memory, a read-only replica) stops writes only, a
        failed read reads only; a Redis that cannot be reached (no reply) stops both."""
        (self.write_health if write else self.health).failed(what, exc)
        if not isinstance(exc, ResponseError):
            (self.health if write else self.write_health).failed(what, exc)

    async def check_writes(self) -> None:
        """Health detail: whether Redis takes writes (it may answer reads and refuse them all)."""
        try:
            await self.redis.set(f"{PREFIX}probe:writes", b"1", ex=60)
        except RedisError as exc:
            self._failed("write probe", exc, write=True)
            raise
        self.write_health.ok()

    @staticmethod
    def answer_key(key_id: str, version: int, qhash: str) -> str:
        return f"{PREFIX}ans:{key_id}:{version}:{qhash}"

    async def lookup(self, key_hash: str, qhash: str) -> tuple[Pointer | None, bytes | None]:
        """The key's pointer and, if both exist, the cached answer: one round trip (none when hot)."""
        hot = self.hot.get(key_hash, qhash)
        if hot is not None:
            return hot
        pointer, answer = await self._pointed_answer(f"{PREFIX}kp:{key_hash}", qhash)
        if pointer is not None and answer is not None:
            self.hot.put(key_hash, qhash, pointer, answer)
        return pointer, answer

    async def last_known(self, key_hash: str, qhash: str) -> tuple[Pointer | None, bytes | None]:
        """The pointer and cached answer to `qhash` of the knowledge version the secret last pointed at (its
        last-known pointer, kept as long as the key's pointer set and dropped with the pointer when
        the knowledge changes): what a turn may be answered with while the search service cannot
        plan (PostgreSQL away), after the short-lived pointer expired."""
        pointer, answer = await self._pointed_answer(f"{PREFIX}kpl:{key_hash}", qhash)
        return (pointer, answer) if answer is not None else (None, None)

    async def _pointed_answer(self, pointer_key: str, qhash: str) -> tuple[Pointer | None, bytes | None]:
        """The pointer at `pointer_key` and the cached answer to `qhash` it points to: one round trip."""
        if not self.health.available():
            return None, None
        try:
            ptr, answer = await self.batch.evalsha(self._lookup, [pointer_key], [f"{PREFIX}ans:", qhash])
        except RedisError as exc:
            if (isinstance(exc, ResponseError) and self._lookup.script.startswith("#!")
                    and ("compil" in str(exc) or "shebang" in str(exc))):
                logger.warning("Redis cannot read script flags (before 7.0): the cache lookup runs without them")
                self._lookup = self.redis.register_script(_LOOKUP.partition("\n")[2])
                return await self._pointed_answer(pointer_key, qhash)
            self._failed("cache lookup", exc, write=False)
            return None, None
        self.health.ok()
        if not ptr:
            return None, None
        key_id, _, version = ptr.decode().partition(" ")
        return Pointer(key_id, int(version)), answer or None

    async def get_answer(self, key_id: str, version: int, qhash: str) -> bytes | None:
        if not self.health.available():
            return None
        try:
            value = await self.redis.get(self.answer_key(key_id, version, qhash))
        except RedisError as exc:
            self._failed("cache read", exc, write=False)
            return None
        self.health.ok()
        return value

    async def put_answer(self, key_id: str, version: int, qhash: str, value: bytes) -> None:
        if not self.write_health.available():
            return
        try:
            await self.redis.set(self.answer_key(key_id, version, qhash), value, ex=self._answer_ttl)
        except RedisError as exc:
            self._failed("cache write", exc, write=True)
        else:
            self.write_health.ok()

    async def set_pointer(self, key_hash: str, key_id: str, version: int) -> None:
        """Point the secret at `version`, unless the key's floor or a newer pointer stands."""
        if not self.write_health.available():
            return
        try:
            await self._set_pointer(keys=[f"{PREFIX}kp:{key_hash}", f"{PREFIX}kpf:{key_id}", f"{PREFIX}kph:{key_id}",
                                          f"{PREFIX}kpl:{key_hash}"],
                                    args=[key_id, version, key_hash, self._pointer_ttl, self._key_ttl])
        except RedisError as exc:
            self._failed("key pointer", exc, write=True)
        else:
            self.write_health.ok()

    async def forget_key(self, key_id: str, version: int) -> int:
        """Drop the pointers of a key whose knowledge is now `version` (changed, or the key revoked),
        and keep pointers and hot answers of older versions from coming back."""
        self.hot.forget_key(key_id, version)
        return await self._forget_key(keys=[f"{PREFIX}kpf:{key_id}", f"{PREFIX}kph:{key_id}"],
                                      args=[version, self._key_ttl, f"{PREFIX}kp:", f"{PREFIX}kpl:"])

    # --- sessions and requests ----------------------------------------------------------

    @staticmethod
    def _session_key(owner: str, session_id: str) -> str:
        # The whole owner: key ids run to 63 characters, and two keys sharing a prefix must not share
        # a session (a caller's session ids are "1", a chat id, "default").
        return f"{PREFIX}sess:{owner}:{session_id}"

    async def history(self, owner: str, session_id: str) -> tuple[Turn, ...]:
        """The session's last turns. `owner`: the product key's id (a session outlives a rotation of
        its secret), or the secret's hash where the id is not known."""
        if not session_id or self._session_turns <= 0:
            return ()
        await self.flush()  # the session's previous turn may still be on its way
        if not self.health.available():
            return ()
        try:
            raw = await self.redis.lrange(self._session_key(owner, session_id), -self._session_turns, -1)
        except RedisError as exc:
            self._failed("session history", exc, write=False)
            return ()
        self.health.ok()
        turns = []
        for item in raw:
            try:
                q, a = json.loads(item)
                turns.append(Turn(q, a))
            except (ValueError, TypeError):
                continue
        return tuple(turns)

    def record_turn(self, request_id: str, record: RequestRecord, answer: str) -> None:
        """Remember the request (for feedback) and the session's turn. Written in the background:
        the turns of a few milliseconds go to Redis in one pipeline."""
        loop = asyncio.get_running_loop()
        if self._pending_done is None:
            self._pending_done = loop.create_future()
        self._pending.append((request_id, record, answer))
        if self._flushing is None:
            self._flushing = loop.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        try:
            # Let the turns of the next few milliseconds join the batch: under load one EVALSHA
            # round trip per turn costs more CPU than the turn itself. Nobody waits on this write
            # (SubmitFeedback flushes first).
            await asyncio.sleep(RECORD_BATCH_SECONDS)
            while self._pending:
                batch, self._pending = self._pending, []
                self._writing_done, self._pending_done = self._pending_done, None
                try:
                    await self._write_batch(batch)
                finally:
                    if self._writing_done is not None and not self._writing_done.done():
                        self._writing_done.set_result(None)
        finally:
            self._flushing = None
            if self._pending and self._pending_done is not None:
                # Cancelled with turns left: a flush does not wait for them forever; the next turn
                # recorded starts another flusher, which writes them too.
                self._pending_done.set_result(None)
                self._pending_done = None

    async def _write_batch(self, batch: list[tuple[str, RequestRecord, str]]) -> None:
        if not self.write_health.available():
            return  # Redis is away: a lost record costs a feedback or a turn of context
        try:
            await self._write(batch)
            self.write_health.ok()
        except RedisError as exc:
            self._failed(f"recording {len(batch)} turn(s)", exc, write=True)
        except Exception:  # noqa: BLE001 - a lost record costs a feedback or a turn of context
            logger.exception("could not record %d turn(s) in Redis", len(batch))

    async def _write(self, batch: list[tuple[str, RequestRecord, str]]) -> None:
        try:
            await self._write_once(batch)
        except NoScriptError:
            self._record_sha = ""  # Redis restarted or flushed its scripts: load it again
            await self._write_once(batch)

    async def _write_once(self, batch: list[tuple[str, RequestRecord, str]]) -> None:
        # EVALSHA directly (a redis-py Script object asks SCRIPT EXISTS on a pipeline's every execute).
        if not self._record_sha:
            self._record_sha = await self.redis.script_load(_RECORD)
        for start in range(0, len(batch), RECORD_SCRIPT_TURNS):
            await self._write_script(batch[start:start + RECORD_SCRIPT_TURNS])

    async def _write_script(self, batch: list[tuple[str, RequestRecord, str]]) -> None:
        keys: list[str] = []
        args: list[object] = [self._request_ttl, self._session_turns, self._session_ttl]
        for request_id, record, answer in batch:
            keys.append(f"{PREFIX}req:{request_id}")
            if record.session_id and self._session_turns > 0:
                keys.append(self._session_key(record.key_id or record.key_hash, record.session_id))
                args.append(2)
            else:
                args.append(1)
            # Not escaped to ASCII: a message of 4,000 CJK characters is 12 kB in UTF-8, 24 kB escaped,
            # and each record is kept for the feedback window.
            args += [json.dumps(record.__dict__, ensure_ascii=False),
                     json.dumps([record.message, answer], ensure_ascii=False)]
        # Through the lookups' pipeline connection: a pooled connection per write (taken, handed back)
        # cost as much CPU as building the script's arguments.
        await self.batch.execute("EVALSHA", self._record_sha, len(keys), *keys, *args)

    async def flush(self) -> None:
        """Until every turn recorded so far is in Redis (or given up); batches are written in order."""
        done = self._pending_done or self._writing_done
        if done is not None:
            await asyncio.shield(done)

    async def close(self) -> None:
        """After the turns recorded so far, the pipeline's connection back to the client's pool."""
        await self.flush()
        await self.batch.close()

    async def request(self, request_id: str) -> RequestRecord | None:
        """The turn's record; None when Redis has none, Unavailable when Redis cannot be asked."""
        await self.flush()  # a turn this process just answered may still be on its way
        if self.health.available():
            try:
                raw = await self.redis.get(f"{PREFIX}req:{request_id}")
            except RedisError as exc:
                self._failed("request record", exc, write=False)
            else:
                self.health.ok()
                return RequestRecord(**json.loads(raw)) if raw else None
        raise Unavailable("the turn records (Redis) cannot be read right now; retry shortly",
                          trailers={RETRY_AFTER_TRAILER: str(TRANSIENT_RETRY_AFTER_SECONDS)})

    # --- cross-process single-flight ----------------------------------------------------

    async def try_lock(self, name: str, ttl_seconds: float) -> Lock | _Local | None:
        """The cross-process lock of `name` (redis-py's Lock: released atomically, only by its
        owner), None when another process holds it, LOCAL_ONLY when Redis is away."""
        if not self.write_health.available():
            return LOCAL_ONLY
        lock = Lock(self.redis, f"{PREFIX}sf:{name}", timeout=max(0.001, ttl_seconds), blocking=False,
                    thread_local=False)
        try:
            acquired = await lock.acquire()
        except RedisError as exc:
            self._failed("single-flight lock", exc, write=True)
            return LOCAL_ONLY
        self.write_health.ok()
        return lock if acquired else None

    async def unlock(self, lock: Lock | _Local) -> None:
        try:
            await lock.release()
        except LockError:
            pass  # it expired (and may be another process's by now): not ours to delete
        except RedisError as exc:
            self._failed("single-flight unlock", exc, write=True)

    async def extend_lock(self, lock: Lock | _Local, ttl_seconds: float) -> None:
        """The lock's time to live set to `ttl_seconds` from now, if it is still ours."""
        if isinstance(lock, _Local):
            return
        try:
            await lock.extend(max(0.001, ttl_seconds), replace_ttl=True)
        except LockError:
            pass  # released, or expired (and maybe another process's by now)
        except RedisError as exc:
            self._failed("single-flight lock", exc, write=True)

    async def locked(self, name: str) -> bool:
        if not self.health.available():
            return False
        try:
            held = bool(await self.redis.exists(f"{PREFIX}sf:{name}"))
        except RedisError as exc:
            self._failed("single-flight wait", exc, write=False)
            return False
        self.health.ok()
        return held
