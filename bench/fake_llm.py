"""A local HTTP server that speaks Groq's OpenAI-compatible chat completions API, for tests and bench.

It answers `POST /openai/v1/chat/completions` (JSON or SSE streaming) with a deterministic answer
that cites the first passage id of the prompt, and can be told to misbehave: 429 with Retry-After,
500, a slow first token, a stream cut in the middle, malformed JSON. Every request is recorded.

In-process: `async with FakeLLM() as llm: ... llm.base_url ...`;
as a process (bench): `python -m bench.fake_llm PORT --first-token-ms 200`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

logger = logging.getLogger(__name__)

_CITE = re.compile(r"^\[([^\]\s]+)\]", re.MULTILINE)


@dataclass
class Behaviour:
    """What the server does with one request.

    kind: "ok" | "429" | "500" | "cut" (stream stops after `cut_after` pieces, connection closed) |
    "malformed" (a broken SSE data line after `cut_after` pieces).
    """

    kind: str = "ok"
    retry_after: float | None = None
    first_token_delay: float | None = None   # None: the server's default
    cut_after: int = 2
    model: str | None = None                 # only for requests to this model (None: any)


@dataclass
class Seen:
    """One request as the server received it."""

    at: float
    model: str
    messages: list[dict]
    stream: bool
    outcome: str = ""          # what the server did: ok | 429 | 500 | cut | malformed | disconnected
    finished: float | None = None   # when a complete answer was sent


@dataclass
class FakeLLM:
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    words: int = 12                     # words in an answer besides the citation
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    _script: deque[Behaviour] = field(default_factory=deque)
    default: Behaviour = field(default_factory=Behaviour)
    _runner: web.AppRunner | None = None

    # --- control ------------------------------------------------------------------------

    def then(self, *behaviours: Behaviour) -> FakeLLM:
        """Queue one-shot behaviours; each is used by the next request it matches."""
        self._script.extend(behaviours)
        return self

    def reset(self, default: Behaviour | None = None) -> None:
        self._script.clear()
        self.requests.clear()
        self.default = default or Behaviour()

    def well_behaved(self) -> FakeLLM:
        """Reset, answering at once (what each test starts from)."""
        self.reset()
        self.first_token_delay = self.token_delay = 0.0
        return self

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def count(self, model: str | None = None) -> int:
        return sum(1 for r in self.requests if model is None or r.model == model)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> FakeLLM:
        app = web.Application()
        app.router.add_post("/openai/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLM:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # --- the API ------------------------------------------------------------------------

    def _pick(self, model: str) -> Behaviour:
        for i, b in enumerate(self._script):
            if b.model is None or b.model == model:
                del self._script[i]
                return b
        return self.default

    def _answer_pieces(self, model: str, messages: list[dict]) -> list[str]:
        prompt = "\n".join(str(m.get("content", "")) for m in messages)
        cite = _CITE.search(prompt)
        body = " ".join(f"w{i}" for i in range(self.words))
        text = f"Answer from {model}: {body}" + (f" [{cite.group(1)}]" if cite else "")
        return re.findall(r"\S+\s*", text)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        model = payload.get("model", "")
        seen = Seen(time.monotonic(), model, payload.get("messages", []), bool(payload.get("stream")))
        self.requests.append(seen)
        b = self._pick(model)
        seen.outcome = b.kind
        if b.kind == "429":
            headers = {"retry-after": f"{b.retry_after:g}"} if b.retry_after is not None else {}
            return web.json_response(
                {"error": {"message": "Rate limit reached", "type": "tokens", "code": "rate_limit_exceeded"}},
                status=429, headers=headers,
            )
        if b.kind == "500":
            return web.json_response({"error": {"message": "internal server error", "type": "internal_server_error"}},
                                     status=500)
        delay = self.first_token_delay if b.first_token_delay is None else b.first_token_delay
        if delay:
            await asyncio.sleep(delay)
        pieces = self._answer_pieces(model, seen.messages)
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in seen.messages) // 4 + 1
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces),
                 "total_tokens": prompt_tokens + len(pieces)}
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = int(time.time())
        if not seen.stream:
            return web.json_response({
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                             "finish_reason": "stop"}],
                "usage": usage,
            })
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)

        def chunk(delta: dict, finish: str | None = None, last: bool = False) -> bytes:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if last:
                body["x_groq"] = {"id": cid, "usage": usage}
                body["usage"] = usage
            return f"data: {json.dumps(body)}\n\n".encode()

        try:
            await resp.write(chunk({"role": "assistant", "content": ""}))
            for i, piece in enumerate(pieces):
                if b.kind in ("cut", "malformed") and i == b.cut_after:
                    if b.kind == "malformed":
                        await resp.write(b'data: {"id": "broken", "choices": [{"delta": {"content": "x\n\n')
                        await resp.write_eof()
                    else:
                        request.transport.close()  # type: ignore[union-attr]
                    return resp
                if i and self.token_delay:
                    await asyncio.sleep(self.token_delay)
                await resp.write(chunk({"content": piece}))
            await resp.write(chunk({}, "stop", last=True))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            seen.finished = time.monotonic()
        except (ConnectionResetError, asyncio.CancelledError):
            seen.outcome = "disconnected"
            raise
        return resp


async def _serve(port: int, first_token_ms: float, token_ms: float) -> None:
    llm = FakeLLM(first_token_delay=first_token_ms / 1000, token_delay=token_ms / 1000, port=port)
    await llm.start()
    try:
        await asyncio.Event().wait()
    finally:
        await llm.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="A local Groq-compatible chat completions server")
    parser.add_argument("port", type=int)
    parser.add_argument("--first-token-ms", type=float, default=0.0)
    parser.add_argument("--token-ms", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.first_token_ms, args.token_ms))


if __name__ == "__main__":
    main()
