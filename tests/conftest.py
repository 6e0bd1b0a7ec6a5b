"""Session fixtures: the real local stack, the four services and the worker, unique names per run."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest

from services.common import db
from services.common.grpc_server import channel, check_serving
from services.common.pb.parley.v1 import (
    analytics_pb2_grpc,
    response_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)
from services.settings import Settings
from services.common.topics import create_all_topics
from services.launcher import Launcher
from bench.harness import free_port

RUN_ID = uuid.uuid4().hex[:8]
HOW_TO_START = "start the local stack with `make up` (or run the tests with `make test`)"


# Run last, in this order: the image test and the live Kubernetes stage (its tools may still be
# building in the background when the run starts: .ci/test.sh), then the fault suite (it kills and
# restarts the shared stack's servers, so no other test meets a dependency on its way back).
LAST = ("tests/deploy/live/test_image.py", "tests/deploy/live/", "tests/faults/")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        return next((i + 1 for i, prefix in enumerate(LAST) if item.nodeid.startswith(prefix)), 0)

    items.sort(key=rank)  # stable: the order within each group is kept
    for item in items:
        if "integration" in item.fixturenames or any(
            f in item.fixturenames for f in ("stack", "services", "pg", "search", "response", "analytics", "key_a")
        ):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def test_env() -> dict[str, str]:
    """Settings of this run: own ports, own topics, own worker group."""
    env = {
        "PARLEY_TOPIC_NAMESPACE": f".test-{RUN_ID}",
        "PARLEY_WORKER_APP_ID": f"parley-test-{RUN_ID}",
        "PARLEY_ADMIN_TOKEN": f"admin-{RUN_ID}",
        "PARLEY_LOG_LEVEL": "INFO",
        # The crawler tests fetch a sample site served on 127.0.0.1, which is refused unless allow-listed.
        "PARLEY_SCRAPER_ALLOW_NETWORKS": "127.0.0.1/32",
        "PARLEY_SCRAPER_HOST_DELAY_SECONDS": "0",
        "PARLEY_SCRAPER_TIMEOUT_SECONDS": "3",
    }
    for name in ("search", "response", "scraper", "analytics"):
        env[f"PARLEY_{name.upper()}_ADDR"] = f"127.0.0.1:{free_port()}"
    for name in ("search", "response", "scraper", "analytics", "worker", "crawler", "indexer"):
        env[f"PARLEY_{name.upper()}_METRICS_PORT"] = str(free_port())
    return env


@pytest.fixture(scope="session")
def settings(test_env) -> Settings:
    saved = {k: os.environ.get(k) for k in test_env}
    os.environ.update(test_env)
    try:
        return Settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
async def stack(settings: Settings) -> Settings:
    """The real Kafka, PostgreSQL and Redis. Never skipped: a missing stack fails the run."""
    from deploy.local import stack as local_stack

    try:
        local_stack.up()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"the local stack is not available ({exc}); {HOW_TO_START}", pytrace=False)
    await db.migrate(settings.postgres_dsn)
    await create_all_topics(settings)
    return settings


@pytest.fixture(scope="session")
async def pg(stack: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(stack.postgres_dsn, min_size=1, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def services(stack: Settings, test_env, tmp_path_factory) -> AsyncIterator[Launcher]:
    """The four services and the stream worker as real processes, torn down (drained) at the end."""
    state = Path(tmp_path_factory.mktemp("services"))
    lr = Launcher(state, env=test_env)
    lr.start()
    try:
        await lr.wait_serving(stack, timeout=120)
    except Exception:
        lr.stop()
        raise
    yield lr
    lr.stop()


@pytest.fixture(scope="session")
async def search(services, settings) -> AsyncIterator[search_pb2_grpc.SearchServiceStub]:
    async with channel(settings.search_addr) as ch:
        yield search_pb2_grpc.SearchServiceStub(ch)


@pytest.fixture(scope="session")
async def response(services, settings) -> AsyncIterator[response_pb2_grpc.ResponseServiceStub]:
    async with channel(settings.response_addr) as ch:
        yield response_pb2_grpc.ResponseServiceStub(ch)


@pytest.fixture(scope="session")
async def analytics(services, settings) -> AsyncIterator[analytics_pb2_grpc.AnalyticsServiceStub]:
    async with channel(settings.analytics_addr) as ch:
        yield analytics_pb2_grpc.AnalyticsServiceStub(ch)


@pytest.fixture(scope="session")
def admin(settings) -> tuple[tuple[str, str]]:
    return (("x-parley-admin-token", settings.admin_token),)


@dataclass
class TestKey:
    __test__ = False   # a product key a test made, not a test class for pytest to collect

    id: str
    secret: str


async def make_key(search, admin, suffix: str, faq: list[tuple[str, str]], docs: list[tuple[str, str]]) -> TestKey:
    reply = await search.CreateProductKey(
        search_pb2.CreateProductKeyRequest(name=f"Test {suffix}", id=f"t-{RUN_ID}-{suffix}"), metadata=admin, timeout=10
    )
    key = TestKey(reply.key.id, reply.product_key)
    for q, a in faq:
        await search.AddFaq(search_pb2.AddFaqRequest(product_key_id=key.id, question=q, answer=a), metadata=admin, timeout=10)
    for title, text in docs:
        await search.AddDocument(
            search_pb2.AddDocumentRequest(product_key_id=key.id, title=title, text=text), metadata=admin, timeout=10
        )
    return key


@pytest.fixture(scope="session")
async def key_a(search, admin) -> TestKey:
    """A bakery: its knowledge mentions sourdough and opening hours."""
    return await make_key(
        search, admin, "bakery",
        faq=[("When are you open?", "The bakery is open from 7am to 6pm, Monday to Saturday.")],
        docs=[("Our bread", "Our sourdough bread is baked every morning with a starter that is twelve years old. "
                            "Rye loaves are available on Fridays only.")],
    )


@pytest.fixture(scope="session")
async def key_b(search, admin) -> TestKey:
    """A bike shop whose knowledge overlaps in words (open, bread) but not in facts."""
    return await make_key(
        search, admin, "bikes",
        faq=[("When are you open?", "The bike shop is open from 10am to 8pm every day except Sunday.")],
        docs=[("Repairs", "Flat tyre repairs take about twenty minutes. We do not sell bread; "
                          "the sourdough question is a popular joke among our mechanics.")],
    )


def rpc_error(exc_info) -> grpc.aio.AioRpcError:
    assert isinstance(exc_info.value, grpc.aio.AioRpcError)
    return exc_info.value


async def until_serving(launcher: Launcher, name: str, ch: grpc.aio.Channel, timeout: float = 120.0) -> None:
    """Until the launched service `name` (on channel `ch`) says SERVING; fails naming its log if it
    exits or does not within `timeout`."""
    import asyncio  # noqa: PLC0415
    import time  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while True:
        assert launcher.pid(name), f"{name} exited; see {launcher.log_file(name)}"
        try:
            await check_serving(ch, name)
            return
        except Exception:  # noqa: BLE001 - starting
            assert time.monotonic() < deadline, f"{name} never said SERVING; see {launcher.log_file(name)}"
            await asyncio.sleep(0.3)


async def stream_ended_by_sigterm(test_env: dict[str, str], state: Path, name: str, open_stream
                                  ) -> tuple[grpc.aio.AioRpcError, float]:
    """Starts service `name` alone (its own ports, a 20 s grace), opens a stream with
    `open_stream(channel)`, reads its first reply and SIGTERMs the service: the error the stream then
    ends with (the test fails if it does not within 15 s) and the seconds it took."""
    import asyncio  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import time  # noqa: PLC0415

    addr = f"127.0.0.1:{free_port()}"
    launcher = Launcher(state, env={**test_env, f"PARLEY_{name.upper()}_ADDR": addr,
                                    f"PARLEY_{name.upper()}_METRICS_PORT": str(free_port()),
                                    "PARLEY_SHUTDOWN_GRACE_SECONDS": "20"})
    launcher.start([name])
    try:
        async with channel(addr) as ch:
            await until_serving(launcher, name, ch)
            stream = open_stream(ch)
            await stream.read()
            started = time.monotonic()
            os.kill(launcher.pid(name), signal.SIGTERM)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(stream.read(), timeout=15)
            return info.value, time.monotonic() - started
    finally:
        launcher.stop([name])
