"""The cached chat turn's CPU in process, by part: the response service's engine (admission, answer
cache, turn record, ChatTurn event through the outbox to Kafka) called directly, without gRPC, with
each part left out in turn to show its share.

    .venv/bin/python -m bench.chat_engine [--concurrency 16] [--rounds 5] [--seconds 2]

Starts the services on the local stack (`python -m deploy.local up` first), answers the bench questions
once (the cache is warm), then runs `concurrency` turns at a time for `seconds` per variant, the
variants alternating, `rounds` times; prints the medians. The load comes from this process: these are
CPU costs per turn, not a throughput (the chat scenario of `make bench` measures that with ghz)."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import uvloop

from bench.harness import QUESTIONS, console, started_services
from services.common.grpc_server import channel
from services.common.kafka import EventProducer
from services.common.outbox import Outbox
from services.common.pb.parley.v1 import response_pb2, search_pb2_grpc
from services.common.redis_client import create_redis
from services.response.admission import Admission
from services.response.answer import build_engine, build_store
from services.response.search_client import SearchClient

VARIANTS = {
    "full": "every part, as the service runs it",
    "no_admission": "without the key's admission (record and rate limit in Redis)",
    "events_discarded": "the ChatTurn event built, then discarded (no outbox, no Kafka)",
    "neither": "without admission and without the event",
}


class _Discard:
    async def publish(self, *args, **kwargs) -> bool:
        return True


async def run(concurrency: int, rounds: int, seconds: float) -> dict[str, float]:
    async with started_services() as (settings, _key_id, secret):
        producer = EventProducer(settings.kafka_bootstrap, client_id="bench-chat-engine")
        outbox = Outbox(Path(tempfile.mkdtemp(prefix="parley-bench-")) / "outbox.sqlite", producer, name="bench",
                        max_events=settings.outbox_max_events, batch=settings.outbox_batch)
        outbox.start()
        search = channel(settings.search_addr, settings.grpc_max_message_bytes)
        client = create_redis(settings.redis_url)
        engine = build_engine(settings, SearchClient(search_pb2_grpc.SearchServiceStub(search), settings.admin_token),
                              build_store(settings, client), outbox)
        admission = Admission(settings, client, lambda: engine.in_flight)
        requests = [response_pb2.ChatRequest(product_key=secret, message=q, session_id=f"bench-{i % concurrency}")
                    for i, q in enumerate(QUESTIONS * 4)]
        try:
            engine.admission = admission
            for request in requests[:len(QUESTIONS)]:
                await engine.chat(request)
            parts = {"full": (admission, outbox), "no_admission": (None, outbox),
                     "events_discarded": (admission, _Discard()), "neither": (None, _Discard())}
            samples: dict[str, list[float]] = {name: [] for name in parts}
            for round_no in range(1, rounds + 1):
                console.print(f"  round {round_no}/{rounds}: {', '.join(parts)}, {seconds:g}s each ...")
                for name, (admit, events) in parts.items():
                    engine.admission, engine._producer = admit, events
                    n, cpu, wall = 0, time.process_time(), time.perf_counter()
                    while time.perf_counter() - wall < seconds:
                        await asyncio.gather(*(engine.chat(requests[(n + i) % len(requests)]) for i in range(concurrency)))
                        n += concurrency
                    samples[name].append((time.process_time() - cpu) / n * 1e6)
        finally:
            await engine.drain()
            await admission.close()
            await outbox.stop(drain_seconds=5)
            await client.aclose()
            await search.close()
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    uvloop.install()
    cpu = asyncio.run(run(args.concurrency, args.rounds, args.seconds))
    for name, what in VARIANTS.items():
        console.print(f"{name:17} {cpu[name]:6.0f} µs of CPU per turn   {what}")
    console.print(f"admission {cpu['full'] - cpu['no_admission']:.0f} µs, event {cpu['full'] - cpu['events_discarded']:.0f} µs, "
                  f"the rest {cpu['neither']:.0f} µs per turn")


if __name__ == "__main__":
    main()
