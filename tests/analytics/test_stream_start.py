"""A stream worker started while no Kafka broker answers waits for one, answers its liveness probe
meanwhile, and consumes once the broker is there (a pod scheduled before the broker, or during an
outage, must not crash-loop); a stop signal ends the wait."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import pytest

from services.settings import Settings
from services.common.topics import create_all_topics
from tests.analytics.test_stream import count_turns, now_turn, producer, wait_for
from bench.harness import free_port


@contextmanager
def worker_process(env: dict[str, str]) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-m", "services.analytics.stream"], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@asynccontextmanager
async def forwarder(port: int, to: str) -> AsyncIterator[None]:
    """A TCP port that relays to the broker: the worker's bootstrap address 'coming up'."""
    host, to_port = to.rsplit(":", 1)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(to_port))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(relay, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()


async def _health(port: int) -> tuple[int, dict] | None:
    try:
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return r.status_code, r.json()
    except httpx.HTTPError:
        return None


@pytest.fixture
def own_worker(stack: Settings, test_env) -> dict[str, str]:
    """Settings of a second worker of its own: own topics, group and ports; its broker address a
    port where nothing listens yet."""
    run = uuid.uuid4().hex[:6]
    return {**test_env, "PARLEY_TOPIC_NAMESPACE": f".start-{run}", "PARLEY_WORKER_APP_ID": f"parley-start-{run}",
            "PARLEY_WORKER_METRICS_PORT": str(free_port()), "PARLEY_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
            "PARLEY_LOG_JSON": "false"}


async def test_a_worker_started_without_a_broker_waits_live_and_consumes_once_it_answers(stack, pg, own_worker):
    real = stack.kafka_bootstrap
    ns_settings = Settings(topic_namespace=own_worker["PARLEY_TOPIC_NAMESPACE"], kafka_bootstrap=real)
    await create_all_topics(ns_settings)
    port = int(own_worker["PARLEY_WORKER_METRICS_PORT"])
    bootstrap_port = int(own_worker["PARLEY_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])
    with worker_process(own_worker) as proc:
        waiting = await wait_for(lambda: _health(port), timeout=60)
        assert waiting[0] == 200 and "waiting for Kafka" in waiting[1]["detail"], waiting
        await asyncio.sleep(6)  # several attempts later: still alive, still live
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        status, body = await _health(port)
        assert status == 200 and "waiting for Kafka" in body["detail"], body

        async with forwarder(bootstrap_port, real):
            key_id = f"start-{uuid.uuid4().hex[:8]}"
            p = await producer(ns_settings)
            try:
                for _ in range(50):
                    await p.send_and_wait(ns_settings.topic("chat_turns"), now_turn(key_id).SerializeToString(),
                                          key=key_id.encode())
            finally:
                await p.stop()

            async def stored() -> bool:
                return await count_turns(pg, key_id) == (50, 50)

            assert await wait_for(stored, timeout=90), await count_turns(pg, key_id)
            status, body = await _health(port)
            assert status == 200 and "waiting" not in body["detail"], body
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, proc.stderr.read().decode()[-2000:]


async def test_a_stop_signal_ends_the_wait_for_a_broker(stack, own_worker):
    port = int(own_worker["PARLEY_WORKER_METRICS_PORT"])
    with worker_process(own_worker) as proc:
        assert await wait_for(lambda: _health(port), timeout=60)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(proc.wait, 30)
        assert code == 0, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() - started < 15
