"""The stream worker when events or PostgreSQL misbehave: every acknowledged turn is stored once,
or dead-lettered with its reason, and the worker stays up."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from deploy.local import stack as local_stack
from deploy.local.config import progress_console
from deploy.local.postgres import kill_postgres, pg_layout, stop_postgres
from tests.analytics.test_stream import _is, count_turns, now_turn, producer, wait_for


async def _dead_letters(settings, key: bytes, want: int, timeout: float = 40.0) -> list:
    consumer = AIOKafkaConsumer(settings.topic("deadletter"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        found: list = []
        deadline = time.monotonic() + timeout
        while len(found) < want and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(m for m in msgs if m.key == key)
        return found
    finally:
        await consumer.stop()


async def test_a_nul_in_one_turn_loses_none_of_the_others(services, settings, pg):
    key_id = f"nul-{uuid.uuid4().hex[:8]}"
    p = await producer(settings)
    try:
        for i in range(60):  # one after another, as chats arrive
            message = "what is \x00 this?" if i == 30 else f"question {i}"
            await p.send_and_wait(settings.topic("chat_turns"), now_turn(key_id, message=message).SerializeToString(),
                                  key=key_id.encode())
    finally:
        await p.stop()
    assert await wait_for(lambda: _is(count_turns(pg, key_id), (60, 60))), await count_turns(pg, key_id)
    assert await pg.fetchval("SELECT count(*) FROM conversations WHERE product_key_id = $1 AND message = $2",
                             key_id, "what is  this?") == 1


async def test_a_turn_postgres_refuses_is_dead_lettered_and_the_others_are_stored(services, settings, pg):
    key_id = f"refused-{uuid.uuid4().hex[:8]}"
    turns = [now_turn(key_id, 1.0 + i) for i in range(50)]
    turns[20].session_id = os.urandom(6000).hex()  # too large for the session index: refused by PostgreSQL
    p = await producer(settings)
    try:
        for t in turns:
            await p.send(settings.topic("chat_turns"), t.SerializeToString(), key=key_id.encode())
        await p.flush()
    finally:
        await p.stop()
    letters = await _dead_letters(settings, key_id.encode(), want=1)
    assert len(letters) == 1
    assert letters[0].value == turns[20].SerializeToString()
    assert "ProgramLimitExceeded" in dict(letters[0].headers)["reason"].decode()
    assert await wait_for(lambda: _is(count_turns(pg, key_id), (49, 49))), await count_turns(pg, key_id)


def _restart_postgres(how: str, down_seconds: float) -> None:
    """Stopped in order ("fast" shutdown), or every PostgreSQL process SIGKILLed (nothing flushed,
    no shutdown checkpoint); started again after `down_seconds`."""
    cfg = local_stack.StackConfig.from_env()
    if how == "killed":
        assert kill_postgres(pg_layout(cfg)) is not None, "PostgreSQL of this stack is not running"
    else:
        stop_postgres(cfg, pg_layout(cfg), progress_console(False))
    time.sleep(down_seconds)
    local_stack.up(progress=False)


@pytest.mark.timeout(300)  # a shortfall shows as the counts below, not as a timeout
@pytest.mark.parametrize("how", ["stopped", "killed"])
async def test_postgres_restarted_mid_stream_loses_and_doubles_nothing(services, settings, pg, test_env, how):
    key_id = f"pg{how}-{uuid.uuid4().hex[:8]}"
    n = 1500
    worker_pid = services.pid("worker")
    health_url = f"http://127.0.0.1:{test_env['PARLEY_WORKER_METRICS_PORT']}/healthz"
    p = await producer(settings)

    async def steady() -> int:
        acked = 0
        for i in range(n):
            await p.send_and_wait(settings.topic("chat_turns"), now_turn(key_id, 1.0 + i % 40).SerializeToString(),
                                  key=key_id.encode())
            acked += 1
            await asyncio.sleep(0.004)
        return acked

    sending = asyncio.ensure_future(steady())
    try:
        assert await wait_for(lambda: _above(count_turns(pg, key_id), 100), timeout=60, interval=0.05)
        restart = asyncio.ensure_future(asyncio.to_thread(_restart_postgres, how, 6.0))
        await asyncio.sleep(2.0)
        async with httpx.AsyncClient() as client:
            health = (await client.get(health_url, timeout=5)).json()
        await restart
        acked = await sending
    finally:
        sending.cancel()
        await p.stop()
    assert acked == n
    assert "writes failing" in health["detail"], health
    assert await wait_for(lambda: _is(count_turns(pg, key_id), (n, n)), timeout=90), await count_turns(pg, key_id)
    await asyncio.sleep(1.0)
    assert await count_turns(pg, key_id) == (n, n)
    assert services.pid("worker") == worker_pid, "the worker exited"


async def _above(awaitable, floor: int) -> bool:
    rows, _ = await awaitable
    return rows > floor
