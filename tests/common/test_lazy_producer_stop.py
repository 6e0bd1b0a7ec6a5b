"""A stop always ends, even while the producer's start never does (a broker whose metadata answers
but whose advertised address does not: aiokafka then tries for good); the start is cancelled and the
producer closed."""

from __future__ import annotations

import asyncio

import pytest

from services.common.kafka import LazyProducer


class _NeverStarts:
    def __init__(self) -> None:
        self.stopped = False

    async def start(self) -> None:
        await asyncio.sleep(3600)

    async def stop(self) -> None:
        self.stopped = True


async def test_a_stop_cancels_a_start_that_never_ends():
    producer = _NeverStarts()
    lazy = LazyProducer(producer)
    lazy.start_wait_seconds = 0.2
    starting = asyncio.create_task(lazy.start())
    await asyncio.sleep(0.05)
    began = asyncio.get_running_loop().time()
    await asyncio.wait_for(lazy.stop(), 5)
    assert asyncio.get_running_loop().time() - began < 1.5
    assert producer.stopped
    with pytest.raises(asyncio.CancelledError):
        await starting
