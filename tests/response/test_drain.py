"""A stopping response service: the engine's drain waits for the turns still ending and for the writes
they start as they end (pointers, lock releases, the turn's event), not only for those under way when
it was called."""

from __future__ import annotations

import asyncio

from tests.response.conftest import ask


async def test_drain_waits_for_a_turn_still_ending_and_the_writes_it_starts(served, llm, shop, events):
    llm.token_delay = 0.2
    async with served() as s:
        turn = asyncio.create_task(s.engine.chat(ask(shop, "How much does the Plus plan cost?", no_cache=True),
                                                 timeout=20))
        for _ in range(100):
            if s.engine.in_flight:
                break
            await asyncio.sleep(0.01)
        assert s.engine.in_flight == 1
        await s.engine.drain(seconds=15)
        assert turn.done() and s.engine.in_flight == 0 and not s.engine._background
        reply = turn.result()
    assert (await events.turn(reply.request_id)).answer == reply.answer


async def test_drain_gives_up_after_its_bound(served, llm, shop):
    llm.first_token_delay = 3.0
    async with served() as s:
        turn = asyncio.create_task(s.engine.chat(ask(shop, "Do parcels ship abroad?", no_cache=True), timeout=20))
        await asyncio.sleep(0.2)
        began = asyncio.get_running_loop().time()
        await s.engine.drain(seconds=0.5)
        assert asyncio.get_running_loop().time() - began < 1.5 and not turn.done()
        await turn
