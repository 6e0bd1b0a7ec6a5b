"""Automatic pipelining of Redis commands issued by concurrent requests.

A cache hit costs one or two Redis round trips (the key's admission, the answer's lookup). Under
load, the same round trip is made by dozens of concurrent turns, and on a busy machine each
round trip's socket write and wake-up costs more CPU than the command. `AutoPipeline` sends the
commands of every caller waiting at the same moment in one pipeline: at most one pipeline is in
flight per AutoPipeline; commands issued meanwhile wait for it and go together in the next one.
A lone caller pays no delay (its command is sent at the next loop iteration).
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

MAX_BATCH = 512  # commands per pipeline: a burst does not become one huge request


class AutoPipeline:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future]] = []
        self._sender: asyncio.Task | None = None

    def execute(self, *args: Any) -> asyncio.Future:
        """Queue one command (as for `execute_command`); the future holds its reply or its error."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((args, future))
        if self._sender is None:
            self._sender = loop.create_task(self._send_all())
        return future

    async def evalsha(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a registered script, loading it once if Redis does not know it (a restart, a flush)."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._client.script_load(script.script)
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    async def _send_all(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._send(batch)
        finally:
            self._sender = None

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future]]) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for args, _ in batch:
                    pipe.execute_command(*args)
                replies = await pipe.execute(raise_on_error=False)
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
