"""Steady chat load for the fault suite, in its own process: `python -m bench.fault_load ...`.

Sends `--rate` chats per second (half of them questions whose answers are cached, half new ones)
to the response replicas in turn, until the stop file appears. Like any gRPC client, a chat
refused with UNAVAILABLE by one replica (draining, unreachable) is sent once more to the next
one. Writes one JSON line per chat: start time, final status, request id, hit or miss.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path

import grpc

from services.common.grpc_server import channel
from services.common.pb.parley.v1 import common_pb2, response_pb2, response_pb2_grpc


async def _one(stubs, i: int, secret: str, questions: list[str], timeout: float) -> dict:
    hit = i % 2 == 0
    question = questions[(i // 2) % len(questions)]
    message = question if hit else f"{question} (ticket {uuid.uuid4().hex[:10]})"
    request = response_pb2.ChatRequest(product_key=secret, message=message)
    started = time.time()
    code, request_id, cache, hint = "OK", "", "", ""
    for attempt in range(2):
        stub = stubs[(i + attempt) % len(stubs)]
        try:
            reply = await stub.Chat(request, timeout=timeout)
            code, request_id = "OK", reply.request_id
            cache = common_pb2.CacheStatus.Name(reply.cache_status).removeprefix("CACHE_STATUS_")
            break
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            hint = dict(exc.trailing_metadata() or ()).get("retry-after", "")
            if exc.code() != grpc.StatusCode.UNAVAILABLE or len(stubs) < 2:
                break
    return {"t": started, "ms": (time.time() - started) * 1000, "code": code, "rid": request_id,
            "kind": "hit" if hit else "miss", "cache": cache, "retry_after": hint}


async def main(args: argparse.Namespace) -> None:
    questions = json.loads(Path(args.questions).read_text())
    channels = [channel(t) for t in args.targets.split(",")]
    stubs = [response_pb2_grpc.ResponseServiceStub(ch) for ch in channels]
    stop = Path(args.stop_file)
    out = open(args.out, "a", buffering=1)  # noqa: SIM115 - a line per chat, flushed as it is written
    pending: set[asyncio.Task] = set()

    async def send(i: int) -> None:
        out.write(json.dumps(await _one(stubs, i, args.secret, questions, args.timeout)) + "\n")

    loop = asyncio.get_running_loop()
    start = loop.time()
    i = 0
    while not stop.exists():
        task = loop.create_task(send(i))
        pending.add(task)
        task.add_done_callback(pending.discard)
        i += 1
        await asyncio.sleep(max(0.0, start + i / args.rate - loop.time()))
    if pending:
        await asyncio.wait(pending, timeout=args.timeout + 5)
    out.close()
    for ch in channels:
        await ch.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="bench.fault_load", description=__doc__)
    parser.add_argument("--targets", required=True, help="comma-separated response addresses")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--questions", required=True, help="a JSON file: the list of cached questions")
    parser.add_argument("--rate", type=float, default=15.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop-file", required=True)
    asyncio.run(main(parser.parse_args()))
