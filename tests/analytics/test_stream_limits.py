"""StreamMetrics within bounds: a key holds a few live streams, a process a few hundred, a key's streams
share their updates, and a saturated PostgreSQL pool answers UNAVAILABLE instead of holding the call."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.analytics.live import StreamSlots
from services.analytics.server import AnalyticsDeps, AnalyticsServicer
from services.common import db
from services.common.errors import ResourceExhausted, Unavailable
from services.common.pb.parley.v1 import analytics_pb2
from services.analytics.settings import AnalyticsSettings
from tests.conftest import make_key, rpc_error

PER_KEY = AnalyticsSettings().metrics_streams_per_key


def _open(analytics, key):
    return analytics.StreamMetrics(analytics_pb2.StreamMetricsRequest(product_key=key.secret, interval_seconds=1),
                                   timeout=60)


async def test_a_key_past_its_streams_is_refused_with_a_retry_hint_and_other_keys_still_stream(analytics, search,
                                                                                              admin):
    key = await make_key(search, admin, "streams-capped", faq=[], docs=[])
    other = await make_key(search, admin, "streams-other", faq=[], docs=[])
    held = [_open(analytics, key) for _ in range(PER_KEY)]
    try:
        for stream in held:
            assert (await stream.read()).total.turns == 0
        extra = _open(analytics, key)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await extra.read()
        assert rpc_error(info).code() == grpc.StatusCode.RESOURCE_EXHAUSTED, rpc_error(info)
        assert f"{PER_KEY} live metrics streams" in rpc_error(info).details()
        assert dict(rpc_error(info).trailing_metadata() or ()).get("retry-after")

        # Another key is not held back by this one's streams.
        theirs = _open(analytics, other)
        assert (await theirs.read()).total.turns == 0
        theirs.cancel()

        # A stream closed frees its slot (once the server has seen the cancellation).
        held.pop().cancel()
        for _ in range(50):
            again = _open(analytics, key)
            try:
                await again.read()
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                await asyncio.sleep(0.1)
        else:
            pytest.fail("a closed stream's slot was never freed")
        held.append(again)
        assert (await again.read()).total.turns == 0   # it streams on
    finally:
        for stream in held:
            stream.cancel()


def test_a_process_holds_at_most_its_streams_and_the_admin_is_not_held_to_a_keys():
    slots = StreamSlots(per_key=2, per_process=3)
    with slots.held("k1"), slots.held("k1"):
        with pytest.raises(ResourceExhausted) as info:
            with slots.held("k1"):
                pass
        assert info.value.trailers["retry-after"]
        with slots.held(None):      # the admin token: the process's bound only
            with pytest.raises(ResourceExhausted) as info:
                with slots.held("k2"):
                    pass
            assert "3 live metrics streams" in info.value.message
    with slots.held("k1"), slots.held("k1"), slots.held("k2"):
        pass


async def test_streams_of_one_key_share_an_update_computed_lately_and_a_failed_one_is_computed_again():
    computed = 0

    async def compute():
        nonlocal computed
        computed += 1
        await asyncio.sleep(0)
        if computed == 3:
            raise Unavailable("PostgreSQL away")
        return computed

    slots = StreamSlots(per_key=10, per_process=10, shared_seconds=3600)
    assert await asyncio.gather(*(slots.update("k1", compute) for _ in range(5))) == [1] * 5
    assert await slots.update("k1", compute) == 1
    assert await slots.update("k2", compute) == 2
    with pytest.raises(Unavailable):
        await slots.update("k3", compute)
    assert await slots.update("k3", compute) == 4
    unshared = StreamSlots(per_key=10, per_process=10, shared_seconds=0)
    assert [await unshared.update("k1", compute) for _ in range(2)] == [5, 6]


class _Context:
    def __init__(self, metadata) -> None:
        self._metadata = metadata

    def invocation_metadata(self):
        return self._metadata


async def test_a_saturated_pool_answers_unavailable_instead_of_holding_the_call(stack, admin, key_a):
    pool = await db.create_pool(stack.postgres_dsn, min_size=1, max_size=1)
    servicer = AnalyticsServicer(AnalyticsDeps(pool=pool), stack.admin_token, streams=StreamSlots(10, 10),
                                 queries=StreamSlots(10, 10), pool_wait_seconds=0.2)
    try:
        async with pool.acquire():
            for call in (servicer.GetMetrics(analytics_pb2.GetMetricsRequest(product_key_id=key_a.id), _Context(admin)),
                         servicer.TopQuestions(analytics_pb2.TopQuestionsRequest(product_key_id=key_a.id),
                                               _Context(admin))):
                with pytest.raises(Unavailable) as info:
                    await asyncio.wait_for(call, 30)
                assert "PostgreSQL connection" in info.value.message
                assert info.value.trailers["retry-after"]
        reply = await servicer.GetMetrics(analytics_pb2.GetMetricsRequest(product_key_id=key_a.id), _Context(admin))
        assert reply.total.turns == 0
    finally:
        await pool.close()


async def test_a_key_holds_a_few_queries_at_once_and_other_keys_are_not_held_back(stack, key_a, key_b):
    """A key's heavy queries (a year of minutes, the top questions of months) wait for the pool like any
    other's; past its few in flight, the next is RESOURCE_EXHAUSTED with a retry hint instead of taking
    the pool from every other tenant. Here the query pool is held, so the calls in flight wait."""
    from services.common.product_keys import KeyValidator  # noqa: PLC0415
    from services.common.redis_client import create_redis  # noqa: PLC0415

    pool = await db.create_pool(stack.postgres_dsn, min_size=1, max_size=1)
    key_pool = await db.create_pool(stack.postgres_dsn, min_size=1, max_size=2)
    client = create_redis(stack.redis_url)
    keys = KeyValidator(client, lambda: key_pool, ttl_seconds=30, local_seconds=3, default_rate=20, default_burst=40)
    servicer = AnalyticsServicer(AnalyticsDeps(pool=pool, keys=keys), stack.admin_token, streams=StreamSlots(10, 10),
                                 queries=StreamSlots(2, 10, what="analytics queries in flight"), pool_wait_seconds=5)

    def metrics(key):
        return servicer.GetMetrics(analytics_pb2.GetMetricsRequest(product_key=key.secret), _Context(()))

    try:
        async with pool.acquire():
            waiting = [asyncio.ensure_future(metrics(key_a)),
                       asyncio.ensure_future(servicer.TopQuestions(
                           analytics_pb2.TopQuestionsRequest(product_key=key_a.secret), _Context(())))]
            theirs = asyncio.ensure_future(metrics(key_b))
            await asyncio.sleep(0.5)
            assert not any(call.done() for call in (*waiting, theirs))    # all three wait for the pool
            with pytest.raises(ResourceExhausted) as info:
                await metrics(key_a)
            assert "2 analytics queries in flight" in info.value.message and info.value.trailers["retry-after"]
        replies = await asyncio.wait_for(asyncio.gather(*waiting, theirs), 30)
        assert replies[0].total.turns == 0 and replies[2].total.turns == 0
        assert (await metrics(key_a)).total.turns == 0      # the slots are free again
    finally:
        await keys.close()
        await client.aclose()
        await key_pool.close()
        await pool.close()


async def test_a_query_behind_a_locked_table_ends_unavailable_at_its_statement_bound(stack, admin, key_a, pg):
    """A table held by another session (a migration's ALTER, a TRUNCATE): the query ends at the pool's
    statement bound, which PostgreSQL keeps itself, UNAVAILABLE with a retry hint; nothing of it is left
    waiting for the lock, even after its caller has gone."""
    pool = await db.create_pool(stack.postgres_dsn, min_size=1, max_size=2, statement_seconds=0.5)
    servicer = AnalyticsServicer(AnalyticsDeps(pool=pool), stack.admin_token, streams=StreamSlots(10, 10),
                                 queries=StreamSlots(10, 10), pool_wait_seconds=2)
    request = analytics_pb2.TopQuestionsRequest(product_key_id=key_a.id)
    try:
        async with pg.acquire() as locker, locker.transaction():
            await locker.execute("LOCK TABLE conversations IN ACCESS EXCLUSIVE MODE")
            began = asyncio.get_running_loop().time()
            with pytest.raises(Unavailable) as info:
                await asyncio.wait_for(servicer.TopQuestions(request, _Context(admin)), 30)
            assert asyncio.get_running_loop().time() - began < 5
            assert "time limit" in info.value.message and info.value.trailers["retry-after"]
            # A caller that gave up first: its statement still ends at the bound, not with the lock.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(servicer.TopQuestions(request, _Context(admin)), 0.1)
            await asyncio.sleep(1.0)
            waiting = await locker.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%WITH turns%'")
            assert waiting == 0
        assert (await servicer.TopQuestions(request, _Context(admin))).questions is not None
    finally:
        await pool.close()
