"""Answer backends behind one interface, and the Groq client that streams answers (the extractive
answerer, the offline default, is services/response/extractive.py)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import json
import logging
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Callable, Protocol

import groq
import httpx

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class PassageText:
    id: str
    kind: str
    title: str
    text: str
    score: float


@dataclass
class Answer:
    text: str
    model: str
    cited: list[str] = field(default_factory=list)   # passage ids the answer relies on
    prompt_tokens: int = 0
    completion_tokens: int = 0
    degraded: bool = False        # a fallback answered because the routed model failed
    truncated: bool = False       # the model stopped at max_tokens: served, never cached
    ttft_ms: float = 0.0          # the LLM's first token, from the start of answering


@dataclass(frozen=True)
class Turn:
    """One earlier exchange of the session."""

    question: str
    answer: str


@dataclass(frozen=True)
class AnswerRequest:
    message: str
    key_name: str
    instructions: str
    strategy: str                 # GREETING | SMALLTALK | KNOWLEDGE | NO_ANSWER | ...
    passages: list[PassageText]
    history: tuple[Turn, ...] = ()


class Restart:
    """Stream marker: the pieces so far are void; a fallback answers from the start."""


RESTART = Restart()


class Answerer(Protocol):
    """Produces an answer as a stream of text pieces; the last value returned is the Answer."""

    def stream(self, request: AnswerRequest) -> AsyncIterator[str | Restart | Answer]: ...


_CITATION = re.compile(r"\[([^\[\]\n]{1,64})\]")


def cited_ids(text: str, passages: list[PassageText]) -> list[str]:
    """Passage ids cited as [id] in an answer, in order of first citation; unknown ids are ignored."""
    known = {p.id for p in passages}
    found: list[str] = []
    for match in _CITATION.finditer(text):
        for pid in match.group(1).split(","):
            pid = pid.strip()
            if pid in known and pid not in found:
                found.append(pid)
    return found


class LLMError(Exception):
    """A failed LLM call, classified for retries, the breakers, fallback and the gRPC status.

    kind: rate_limited | unavailable | timeout (the attempt's own limit) | deadline (the callers'
    deadline: no fault of the model) | stalled (no first token, or no next piece, in time) |
    bad_response (unreadable or empty) | filtered (the model's content filter) | rejected (a 4xx
    refusing this request) | auth (the API key refused: 401/403) | model_missing (404).
    `message` is the detail for the log: it may carry the provider's text (organisation, quotas),
    so it never goes to the caller (see resilience.to_domain_error).
    """

    def __init__(self, kind: str, message: str, *, retry_after: float | None = None, partial: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        self.partial = partial       # some pieces were already produced

    @property
    def retryable(self) -> bool:
        return self.kind in ("rate_limited", "unavailable", "bad_response") and not self.partial


def _retry_after(headers: httpx.Headers | None) -> float | None:
    """Retry-After-Ms, or Retry-After as seconds or as an HTTP date."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return _bounded_wait(float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return _bounded_wait(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return _bounded_wait((when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


# A hint past this is no hint (a year; "1e999" would be infinite, and no status can carry that).
_MAX_RETRY_AFTER_SECONDS = 365 * 24 * 3600.0


def _bounded_wait(seconds: float) -> float | None:
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), _MAX_RETRY_AFTER_SECONDS)


def classify(exc: BaseException, *, partial: bool = False) -> LLMError:
    """Groq client, HTTP and decoding errors as one LLMError."""
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, groq.RateLimitError):
        return LLMError("rate_limited", f"the LLM is rate limited: {exc.message}",
                        retry_after=_retry_after(exc.response.headers), partial=partial)
    if isinstance(exc, groq.APITimeoutError) or isinstance(exc, (TimeoutError, asyncio.TimeoutError, httpx.TimeoutException)):
        return LLMError("timeout", "the LLM did not answer in time", partial=partial)
    if isinstance(exc, groq.APIStatusError):
        status = exc.status_code
        if status >= 500:
            return LLMError("unavailable", f"the LLM failed with HTTP {status}",
                            retry_after=_retry_after(exc.response.headers), partial=partial)
        if status in (401, 403):
            return LLMError("auth", f"the LLM refused the API key (HTTP {status}): {exc.message}", partial=partial)
        if status == 404:
            return LLMError("model_missing", f"the LLM does not know the model (HTTP 404): {exc.message}",
                            partial=partial)
        return LLMError("rejected", f"the LLM rejected the request (HTTP {status}): {exc.message}",
                        partial=partial)
    if isinstance(exc, (groq.APIConnectionError, httpx.TransportError)):
        return LLMError("unavailable", f"the LLM connection failed: {exc}", partial=partial)
    if isinstance(exc, (json.JSONDecodeError, groq.APIError, httpx.HTTPError, ValueError, KeyError, TypeError,
                        AttributeError)):
        return LLMError("bad_response", f"the LLM sent an unreadable answer: {exc}", partial=partial)
    raise exc


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""      # "stop"; "length": cut at max_tokens


# A wait that ends this close to a limit ended because of it.
_LIMIT_SLACK = 0.005


class Deadline:
    """When a call must end, in event-loop time. A call shared by several callers ends at the latest
    of their deadlines: a caller that joins it pushes the deadline later (`extend`), and the waits
    under way (`within`) follow. `capped` is a view with a limit of its own (one attempt's timeout)."""

    def __init__(self, at: float, *, cap: float = math.inf, root: Deadline | None = None) -> None:
        self._root = root or self
        self.cap = cap
        if root is None:
            self._at = at
            self._waits: dict[asyncio.Timeout, float] = {}
            self._followers: list[Callable[[float], None]] = []

    @property
    def callers_at(self) -> float:
        """The callers' deadline, without this view's cap."""
        return self._root._at

    @property
    def at(self) -> float:
        return min(self._root._at, self.cap)

    def capped(self, limit: float) -> Deadline:
        return Deadline(0.0, cap=min(self.cap, limit), root=self._root)

    def extend(self, at: float) -> None:
        root = self._root
        if at <= root._at:
            return
        root._at = at
        for wait, cap in list(root._waits.items()):
            try:
                wait.reschedule(min(cap, at))
            except RuntimeError:
                pass  # it expired already
        for follower in list(root._followers):
            follower(at)

    def follow(self, follower: Callable[[float], None]) -> Callable[[], None]:
        """Calls `follower(the new deadline)` each time it is pushed later, until the returned
        function is called."""
        followers = self._root._followers
        followers.append(follower)
        return lambda: followers.remove(follower) if follower in followers else None

    def within(self, cap: float = math.inf) -> _Within:
        """`async with`: TimeoutError at this deadline or at `cap`, whichever comes first."""
        return _Within(self._root, min(self.cap, cap))



class _Within:
    """A wait bounded by the callers' deadline and `cap`. `fired`: when it timed out (the deadline it
    had then: a caller joining afterwards may move the root's later, and must not make the callers'
    deadline look like a stall)."""

    __slots__ = ("_root", "cap", "_timeout", "fired")

    def __init__(self, root: Deadline, cap: float) -> None:
        self._root = root
        self.cap = cap
        self.fired = math.inf

    async def __aenter__(self) -> _Within:
        self._timeout = asyncio.timeout_at(min(self.cap, self._root._at))
        await self._timeout.__aenter__()
        self._root._waits[self._timeout] = self.cap
        return self

    async def __aexit__(self, *exc) -> bool | None:
        self._root._waits.pop(self._timeout, None)
        if self._timeout.expired():
            self.fired = self._timeout.when() or math.inf   # no reschedule passes an expired timeout
        return await self._timeout.__aexit__(*exc)


def as_deadline(deadline: float | Deadline) -> Deadline:
    return deadline if isinstance(deadline, Deadline) else Deadline(deadline)


class GroqClient:
    """Streaming chat completions through the official `groq` package (AsyncGroq).

    The client's own retries are off: retries, timeouts and fallback are decided by the caller,
    which knows the request's deadline. A model that sends no first piece within
    `first_token_seconds`, or no next piece within `idle_seconds`, has stalled (0: no such limit).
    """

    def __init__(self, api_key: str, base_url: str = "", *, temperature: float = 0.2,
                 max_connections: int = 200, first_token_seconds: float = 5.0, idle_seconds: float = 5.0) -> None:
        self._client = groq.AsyncGroq(
            api_key=api_key,
            base_url=base_url or None,
            max_retries=0,
            http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=max_connections,
                                                              max_keepalive_connections=max_connections)),
        )
        self._temperature = temperature
        self._first_token = first_token_seconds if first_token_seconds > 0 else math.inf
        self._idle = idle_seconds if idle_seconds > 0 else math.inf

    async def close(self) -> None:
        await self._client.close()

    @staticmethod
    def _timed_out(deadline: Deadline, wait: _Within, stalled: str, produced: bool) -> LLMError:
        """Which limit a wait that timed out hit: the callers' deadline (it fired before its cap: the
        deadline was the nearer then), the attempt's own limit, or a stall."""
        if wait.fired < wait.cap - _LIMIT_SLACK:
            return LLMError("deadline", "the caller's deadline passed while the LLM answered", partial=produced)
        if wait.fired >= deadline.cap - _LIMIT_SLACK:
            return LLMError("timeout", "the LLM did not answer in time", partial=produced)
        return LLMError("stalled", stalled, partial=produced)

    async def stream(
        self, model: str, messages: list[dict], *, max_tokens: int, deadline: float | Deadline
    ) -> AsyncIterator[str | Usage]:
        """Text pieces as the model produces them, then the Usage. Raises LLMError; `deadline`
        (event-loop time) bounds the whole call. Leaving the iteration early (a cancelled client)
        closes the HTTP stream, which stops the generation. An answer with no text, or one the
        model's content filter stopped, is no answer (LLMError).

        The client's raw streaming response is read as server-sent events with json.loads: the
        typed stream builds a pydantic model per chunk, which cost ~5x the CPU of the whole turn."""
        loop = asyncio.get_running_loop()
        deadline = as_deadline(deadline)
        first_by = loop.time() + self._first_token
        limit = deadline.cap if deadline.cap < math.inf else deadline.at
        wait = deadline.within(first_by)
        try:
            async with wait:
                manager = self._client.chat.completions.with_streaming_response.create(
                    model=model, messages=messages, stream=True, max_tokens=max_tokens,  # type: ignore[arg-type]
                    temperature=self._temperature, timeout=max(0.01, limit - loop.time()),
                )
                response = await manager.__aenter__()
        except TimeoutError:
            raise self._timed_out(deadline, wait, "the LLM sent nothing in time", False) from None
        except Exception as exc:  # noqa: BLE001 - classified below
            raise classify(exc) from exc
        produced = False
        finish = ""
        usage = Usage()
        lines = response.iter_lines().__aiter__()
        try:
            while True:
                # The wait never spans a yield: it bounds the wait for the next line only.
                wait = deadline.within(loop.time() + self._idle if produced else first_by)
                try:
                    async with wait:
                        try:
                            line = await lines.__anext__()
                        except StopAsyncIteration:
                            raise LLMError("bad_response", "the LLM stream ended without [DONE]",
                                           partial=produced) from None
                except TimeoutError:
                    raise self._timed_out(deadline, wait, "the LLM stream stalled", produced) from None
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    # Read to the end of the body, so the connection goes back to the pool; the answer
                    # is complete whatever happens there (a body that does not end is closed below).
                    with contextlib.suppress(TimeoutError):
                        async with deadline.within(loop.time() + self._idle):
                            async for _ in lines:
                                pass
                    break
                chunk = json.loads(data)
                if chunk.get("error"):
                    raise LLMError("unavailable", f"the LLM reported an error: {chunk['error']}", partial=produced)
                found = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
                if found:
                    usage = Usage(found.get("prompt_tokens") or 0, found.get("completion_tokens") or 0)
                for choice in chunk.get("choices") or ():
                    finish = choice.get("finish_reason") or finish
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        produced = True
                        yield content
        except Exception as exc:  # noqa: BLE001
            raise classify(exc, partial=produced) from exc
        finally:
            await manager.__aexit__(None, None, None)
        if finish == "content_filter":
            raise LLMError("filtered", "the LLM's content filter stopped the answer", partial=produced)
        if not produced:
            raise LLMError("bad_response", f"the LLM sent an empty answer (finish_reason {finish or 'none'})")
        usage.finish_reason = finish
        yield usage
