"""Automatic pipelining of Redis commands issued by concurrent requests.

A cache hit costs one or two Redis round trips (the key's admission, the answer's lookup). Under
load, the same round trip is made by dozens of concurrent turns, and on a busy machine each
round trip's socket write and wake-up costs more CPU than the command. `AutoPipeline` sends the
commands of every caller waiting at the same moment in one pipeline: at most one pipeline is in
flight per AutoPipeline; commands issued meanwhile wait for it and go together in the next one.
A lone caller pays no delay (its command is sent at the next loop iteration).

Under steady load that is not enough: a closed-loop client sends its next request when its answer
comes, so turns arrive one at a time, each after the last one's round trip is done, and every batch
holds one command. An owner that knows its process is busy passes `linger`, called once per batch:
the seconds to wait first, so that the turns of the next moment join (the response service waits
2 ms while other turns are in flight: fewer round trips, and the turns that waited together also
write their events and records together).

The batch goes over a connection of the AutoPipeline's own, taken from the client's pool once
and kept, as one write and its replies read back, retried like a redis-py pipeline (the client's
`Retry`, on a fresh connection): a redis-py `Pipeline` per batch, with a connection taken from the
pool and given back each time, cost more CPU than the cached chat turn's other Redis work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

MAX_BATCH = 512  # commands per pipeline: a burst does not become one huge request


class AutoPipeline:
    def __init__(self, client: redis.Redis, linger: Callable[[], float] | None = None) -> None:
        """`linger`: seconds to wait before a batch is sent (0 or None: at the next loop iteration)."""
        self._client = client
        self._linger = linger
        # A command's arguments, or a function that makes them when the batch is sent.
        self._queue: list[tuple[tuple[Any, ...] | Callable[[], tuple[Any, ...]], asyncio.Future]] = []
        self._sender: asyncio.Task | None = None
        self._connection: Connection | None = None
        self._callbacks = client.response_callbacks

    def execute(self, *args: Any) -> asyncio.Future:
        """Queue one command (as for `execute_command`); the future holds its reply or its error."""
        return self.execute_later(args)

    def execute_later(self, command: tuple[Any, ...] | Callable[[], tuple[Any, ...]]) -> asyncio.Future:
        """Queue a command, or a function called for its arguments only when the batch is sent (so
        that what joins it until then, e.g. more turns of one key, goes in the same command)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((command, future))
        if self._sender is None:
            self._sender = loop.create_task(self._send_all())
        return future

    async def evalsha(self, script: AsyncScript, keys: list[str], args: list[Any] | Callable[[], list[Any]]) -> Any:
        """Run a registered script, loading it once if Redis does not know it (a restart, a flush).
        `args` may be a function called for the arguments only when the batch is sent (execute_later)."""
        def command() -> tuple[Any, ...]:
            return ("EVALSHA", script.sha, len(keys), *keys, *(args() if callable(args) else args))

        try:
            return await self.execute_later(command)
        except NoScriptError:
            await self._client.script_load(script.script)
            return await self.execute_later(command)

    async def close(self) -> None:
        """After the batch in flight, hands the kept connection back to the client's pool (a process
        stops, or an owner of a shared client is done with it). A command queued later takes it again."""
        while self._sender is not None:     # a command queued meanwhile starts another sender
            await asyncio.gather(asyncio.shield(self._sender), return_exceptions=True)
        if self._connection is not None:    # detached before any await: a later sender takes its own
            connection, self._connection = self._connection, None
            await self._client.connection_pool.release(connection)

    async def _send_all(self) -> None:
        try:
            if self._linger is not None:
                wait = self._linger()
                if wait > 0:
                    await asyncio.sleep(wait)
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._send(batch)
        finally:
            self._sender = None

    async def _send(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        commands = [command() if callable(command) else command for command, _ in batch]
        try:
            if self._connection is None:
                self._connection = await self._client.connection_pool.get_connection()
            connection = self._connection
            replies = await connection.retry.call_with_retry(
                lambda: self._exchange(connection, commands), lambda _error: connection.disconnect())
        except BaseException as exc:  # noqa: BLE001 - every waiting caller gets the error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue  # the caller went away (cancelled)
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _exchange(self, connection: Connection, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send the commands in one write, read every reply (an error reply is kept as the command's
        reply; a broken connection is disconnected, so a half-read batch never desyncs it)."""
        try:
            # As the pool checks a connection it hands out: one Redis closed (a restart, a kill) is
            # replaced before the batch is sent, instead of failing it.
            if connection.is_connected:
                try:
                    stale = await connection.can_read()
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    stale = True
                if stale:
                    await connection.disconnect()
            await connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            for args in commands:
                try:
                    reply = await connection.read_response()
                except ResponseError as exc:
                    replies.append(exc)
                    continue
                callback = self._callbacks.get(args[0])
                replies.append(callback(reply) if callback is not None else reply)
            return replies
        except BaseException:
            await connection.disconnect()
            raise
