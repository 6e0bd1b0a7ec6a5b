"""One chat turn: answer cache, plan with the search service, route, answer (single-flight), publish the ChatTurn."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import aclosing
from dataclasses import dataclass

from prometheus_client import Counter

from services.common.errors import (RETRY_AFTER_TRAILER, DeadlineExceeded, InvalidArgument, NotFound, ParleyError,
                                    Unauthenticated, Unavailable, as_unavailable)
from services.common.kafka import EventProducer, event_id_age, new_event_id, now_timestamp
from services.common.outbox import Outbox
from services.common.pb.parley.v1 import common_pb2, events_pb2, response_pb2, search_pb2
from services.response.settings import ResponseSettings
from services.common.text import is_blank, storable
from services.response import routing
from services.response.admission import Admission
from services.response.cache import Pointer, RequestRecord, ResponseStore, question_hash, secret_hash
from services.response.extractive import ExtractiveAnswerer
from services.response.llm import RESTART, Answer, AnswerRequest, Deadline, GroqClient, PassageText, Restart
from services.response.resilience import ResilientLLM
from services.response.search_client import DownstreamError, SearchClient
from services.response.singleflight import SingleFlight
from services.response.stored_turns import any_turn_stored, stored_turn
from services.response.web import WebPages

logger = logging.getLogger(__name__)
# A rated turn younger than this that neither Redis nor PostgreSQL holds yet is UNAVAILABLE (retry),
# not NOT_FOUND: its record is written in the background by the replica that answered it. As much
# ahead is allowed for the clock of the replica that made its id.
RECENT_TURN_SECONDS = 10.0
# How long a stopping engine waits for its turns' last writes (see ChatEngine.drain).
DRAIN_SECONDS = 5.0
LAST_KNOWN_ANSWERS = Counter("parley_response_last_known_answers_total",
                             "Turns answered from the cache's last-known knowledge version while search could not plan.")

DEFAULT_DEADLINE_SECONDS = 60.0
# The caller's deadline is measured when the call is taken up, a moment after its clock started:
# a cancellation this close to it is the deadline's.
DEADLINE_SLACK_SECONDS = 0.01
REQUEST_ID_TRAILER = "x-parley-request-id"   # on errors: the id of the failed turn (its ChatTurn event)
HIT, MISS, BYPASS, SHARED = (common_pb2.CACHE_STATUS_HIT, common_pb2.CACHE_STATUS_MISS,
                             common_pb2.CACHE_STATUS_BYPASS, common_pb2.CACHE_STATUS_SHARED)
_GROUNDED = ("KNOWLEDGE", "WEB")
_FEEDBACK_NAMESPACE = uuid.UUID("6f1d2c1e-4a53-4c1b-9d0e-7c6a1f0b9e21")


async def _faq_answer(text: str, passages: list[common_pb2.Passage]) -> AsyncIterator[str | Answer]:
    """The stored FAQ answer, citing the FAQ entry (the first passage of an FAQ plan)."""
    first = passages[0].id if passages else ""
    yield text
    yield Answer(text, "faq", [first] if first else [])


# What of a message or session id is cleaned at most: the rest of one this long is refused (its length
# is checked on what was sent), and cleaning a 4 MiB message whole held the loop for 0.3 s of every
# such call, before its key was even checked.
MAX_CLEANED_CHARS = 65_536


def _storable_request(request: response_pb2.ChatRequest) -> response_pb2.ChatRequest:
    """The request with text every store accepts (no NUL, no lone surrogate): made so at the edge,
    before it is planned, cached or put in an event."""
    message = storable(request.message[:MAX_CLEANED_CHARS])
    session_id = storable(request.session_id[:MAX_CLEANED_CHARS])
    if message is request.message and session_id is request.session_id:
        return request
    clean = response_pb2.ChatRequest()
    clean.CopyFrom(request)
    clean.message, clean.session_id = message, session_id
    return clean


# A session id names a Redis list and goes into every ChatTurn: a client's id, not a payload.
MAX_SESSION_ID_CHARS = 256
# Request ids are 32 hex digits (new_event_id); a longer one names no turn, and echoed in the error's
# message it would pass gRPC's metadata limit (the caller got RESOURCE_EXHAUSTED, not an answer).
MAX_REQUEST_ID_CHARS = 64


def validate_chat(request: response_pb2.ChatRequest, max_chars: int, sent: tuple[int, int] | None = None) -> None:
    """`sent`: the lengths of the message and session id as sent, when `request` holds them cleaned."""
    message_chars, session_chars = sent or (len(request.message), len(request.session_id))
    if not request.product_key.strip():
        raise Unauthenticated("product key missing")
    if message_chars > max_chars:
        raise InvalidArgument(f"message has {message_chars} characters; the limit is {max_chars}")
    if is_blank(request.message):  # zero-width spaces, a BOM or joiners alone show nothing either
        raise InvalidArgument("message is empty")
    if session_chars > MAX_SESSION_ID_CHARS:
        raise InvalidArgument(f"session id has {session_chars} characters; the limit is {MAX_SESSION_ID_CHARS}")


@dataclass
class _Cached:
    """An answer another process produced while we waited on its single-flight lock."""

    value: bytes


@dataclass
class _Begun:
    """What a turn knows after admission and the answer cache's lookup."""

    key_hash: str
    qhash: str
    history: tuple
    cacheable: bool
    pointer: Pointer | None
    cached: bytes | None


@dataclass
class TurnState:
    """What is known about a turn so far; a failed turn is reported with it."""

    request: response_pb2.ChatRequest
    request_id: str
    start: float
    key_id: str = ""
    key_version: int = 0          # the knowledge version of the key's record admission read
    strategy: int = common_pb2.STRATEGY_UNSPECIFIED
    model: str = ""
    cache_status: int = common_pb2.CACHE_STATUS_UNSPECIFIED
    search_ms: float = 0.0
    ttft_ms: float = 0.0
    llm_ms: float = 0.0
    sent: tuple[int, int] = (0, 0)  # characters of the message and session id as sent
    reported: bool = False        # its ChatTurn is out: closing the stream afterwards is no failure
    deadline: float | None = None  # perf_counter() time of the caller's deadline, if it set one

    def ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000.0

    def cancelled_code(self) -> str:
        """Why a cancelled turn ended: the caller's deadline passed, or the caller went away."""
        if self.deadline is not None and time.perf_counter() >= self.deadline - DEADLINE_SLACK_SECONDS:
            return "DEADLINE_EXCEEDED"
        return "CANCELLED"


def _new_state(request: response_pb2.ChatRequest, timeout: float | None) -> TurnState:
    start = time.perf_counter()
    return TurnState(_storable_request(request), new_event_id(), start,
                     sent=(len(request.message), len(request.session_id)),
                     deadline=start + timeout if timeout is not None else None)


def estimate_cost(prices: dict[str, tuple[float, float]], model: str, prompt: int, completion: int) -> float:
    price_in, price_out = prices.get(model, (0.0, 0.0))
    return (prompt * price_in + completion * price_out) / 1_000_000


class _LockTerm:
    """Keeps a single-flight lock's time to live at its flight's deadline as joining callers push
    it later (left at the first caller's deadline, the lock would let another replica start the same
    answer while this one still runs): one extension at a time, each to the latest deadline."""

    def __init__(self, store: ResponseStore, lock, spawn: Callable[[Coroutine], asyncio.Task]) -> None:
        self._store, self._lock, self._spawn = store, lock, spawn
        self._wanted = self._set = 0.0
        self._task: asyncio.Task | None = None

    def push(self, at: float) -> None:
        self._wanted = at
        if self._task is None or self._task.done():
            self._task = self._spawn(self._extend())

    async def _extend(self) -> None:
        loop = asyncio.get_running_loop()
        while self._set < self._wanted:
            self._set = self._wanted
            await self._store.extend_lock(self._lock, self._set - loop.time())


class ChatEngine:
    """Everything a chat turn does, shared by Chat and ChatStream."""

    admission: Admission | None = None  # product key and rate limit, before the cache (admission.py)

    def __init__(
        self,
        settings: ResponseSettings,
        search: SearchClient,
        store: ResponseStore,
        producer: EventProducer | Outbox,
        extractive: ExtractiveAnswerer,
        llm: ResilientLLM | None = None,
        web: WebPages | None = None,
    ) -> None:
        self._settings = settings
        self._search = search
        self._store = store
        self._producer = producer
        self._extractive = extractive
        self.llm = llm
        self.web = web
        self.flights = SingleFlight()
        self._background: set[asyncio.Task] = set()
        self.in_flight = 0   # turns under way (Chat and ChatStream): admission's sign of load

    # --- helpers ------------------------------------------------------------------------

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _quietly(self, coro, what: str) -> None:
        try:
            await coro
        except Exception:  # noqa: BLE001 - a side effect must not fail the turn
            logger.exception("%s failed", what)

    async def drain(self, seconds: float = DRAIN_SECONDS) -> None:
        """Waits, `seconds` at most, for the turns still ending (a turn the server cut at its grace
        cleans up after that) and the background writes (pointers, lock releases, events of failed
        turns), those started meanwhile included; then flushes the store's pending writes."""
        try:
            async with asyncio.timeout(seconds):
                while self._background or self.in_flight:
                    if self._background:
                        await asyncio.gather(*self._background, return_exceptions=True)
                    else:
                        await asyncio.sleep(0.01)
        except TimeoutError:
            logger.warning("stopping with %d turn(s) and %d background write(s) not finished in %.0f s",
                           self.in_flight, len(self._background), seconds)
        await self._store.flush()

    # --- the turn -----------------------------------------------------------------------

    async def turn(
        self, request: response_pb2.ChatRequest, *, timeout: float | None = None
    ) -> AsyncIterator[str | Restart | response_pb2.ChatResponse]:
        """Yields answer pieces as they are produced (RESTART when a fallback starts over), then
        the complete ChatResponse. Every turn whose key is known emits a ChatTurn, also failures."""
        state = _new_state(request, timeout)
        self.in_flight += 1
        try:
            begun = await self._begin(state)
            items = (self._from_cache(state, begun.key_hash, begun.cached, HIT) if begun.cached is not None
                     else self._answer(state, begun, timeout))
            async for item in items:
                yield item
        except BaseException as exc:
            self._failed(state, exc)
            raise
        finally:
            self.in_flight -= 1

    async def chat(self, request: response_pb2.ChatRequest, *, timeout: float | None = None) -> response_pb2.ChatResponse:
        """The turn's ChatResponse. A cache hit is answered without the async generators of `turn`
        (they cost a tenth of a cached Chat's CPU in the service)."""
        state = _new_state(request, timeout)
        self.in_flight += 1
        try:
            begun = await self._begin(state)
            if begun.cached is not None:
                return await self._hit(state, begun.key_hash, begun.cached, HIT)
            async with aclosing(self._answer(state, begun, timeout)) as items:
                async for item in items:
                    if isinstance(item, response_pb2.ChatResponse):
                        return item
        except BaseException as exc:
            self._failed(state, exc)
            raise
        finally:
            self.in_flight -= 1
        raise AssertionError("a turn always ends with a ChatResponse")

    def _failed(self, state: TurnState, exc: BaseException) -> None:
        """The ChatTurn of a turn that failed (or was cancelled), unless it is out already."""
        if isinstance(exc, ParleyError):
            if REQUEST_ID_TRAILER not in exc.trailers:
                # A new dict: the callers of a shared answer each get a copy of its error, and the
                # copies share the original's trailers.
                exc.trailers = {**exc.trailers, REQUEST_ID_TRAILER: state.request_id}
            self._fail(state, exc.code)
        elif isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            self._fail(state, state.cancelled_code())
        elif isinstance(exc, Exception):
            # The interceptor maps a dependency's connection error to UNAVAILABLE: the event says the same.
            self._fail(state, "UNAVAILABLE" if as_unavailable(exc) is not None else "INTERNAL")

    async def _begin(self, state: TurnState) -> _Begun:
        """Validation, admission (key and rate limit) and the answer cache's lookup."""
        request = state.request
        validate_chat(request, self._settings.max_message_chars, state.sent)
        if self.admission is not None:
            admitted = await self.admission.admit(request.product_key)
            state.key_id, state.key_version = admitted.id, admitted.knowledge_version
        key_hash = secret_hash(request.product_key)
        qhash = question_hash(request.message)
        history = ()
        if request.session_id and routing.is_follow_up(request.message):
            # A session belongs to the key, not to its secret: it goes on after a rotation.
            history = await self._store.history(state.key_id or key_hash, request.session_id)
        # A follow-up answered with the session's turns depends on the session: never cached.
        cacheable = not request.no_cache and not history
        pointer, cached = None, None
        if cacheable:
            pointer, cached = await self._store.lookup(key_hash, qhash)
            if pointer is not None:
                state.key_id = pointer.key_id
        return _Begun(key_hash, qhash, history, cacheable, pointer, cached)

    async def _answer(self, state: TurnState, begun: _Begun,
                      timeout: float | None) -> AsyncIterator[str | Restart | response_pb2.ChatResponse]:
        """A turn the answer cache did not answer: plan, route, answer (single-flight), publish."""
        settings = self._settings
        request = state.request
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else DEFAULT_DEADLINE_SECONDS) - 0.02
        key_hash, qhash, history, cacheable, pointer = (begun.key_hash, begun.qhash, begun.history, begun.cacheable,
                                                        begun.pointer)

        left = deadline - loop.time()
        try:
            plan = await self._search.plan(request.product_key, request.message, request.session_id,
                                           max(0.05, min(settings.search_timeout_seconds, left)),
                                           callers=left <= settings.search_timeout_seconds)
        except DownstreamError as exc:
            # The search service cannot plan (PostgreSQL away, search down): a question answered
            # before is answered from the knowledge version the secret last pointed at.
            # Only a version at least the one the key's record says (read from PostgreSQL within the
            # key cache's TTL): a knowledge change whose event was missed is not answered from before it.
            pointer, cached = ((await self._store.last_known(key_hash, qhash))
                               if cacheable and exc.code == "UNAVAILABLE" else (None, None))
            if cached is None or pointer.key_id != state.key_id or pointer.version < state.key_version:
                raise
            LAST_KNOWN_ANSWERS.inc()
            async for item in self._from_cache(state, key_hash, cached, HIT):
                yield item
            return
        state.key_id = plan.product_key_id
        state.search_ms = state.ms()
        version = plan.knowledge_version
        if pointer is None or pointer.key_id != plan.product_key_id or pointer.version != version:
            self._spawn(self._store.set_pointer(key_hash, plan.product_key_id, version))
            if cacheable:
                cached = await self._store.get_answer(plan.product_key_id, version, qhash)
                if cached is not None:
                    async for item in self._from_cache(state, key_hash, cached, HIT):
                        yield item
                    return

        strategy = common_pb2.Strategy.Name(plan.strategy).removeprefix("STRATEGY_")
        passages = list(plan.passages)
        keep = cacheable
        if strategy == "WEB":
            passages = await self._web_passages(plan, deadline, request.product_key)
            state.search_ms = state.ms()
            keep = keep and bool(passages)  # a page that could not be fetched now may be fetched later
        if (strategy in _GROUNDED and not passages) or (strategy == "DIRECT" and self.llm is None):
            strategy = "NO_ANSWER"  # e.g. the web page could not be fetched; no LLM to answer directly
        state.strategy = common_pb2.Strategy.Value("STRATEGY_" + strategy)
        route = routing.route(
            request.message, strategy, plan.top_score, llm_enabled=self.llm is not None,
            small=settings.llm_small_model, large=settings.llm_large_model,
            large_min_chars=settings.llm_large_min_chars, large_below_score=settings.llm_large_below_score,
            with_history=bool(history),
        )
        answer_request = AnswerRequest(
            message=request.message, key_name=plan.key_name, instructions=plan.instructions, strategy=strategy,
            passages=[PassageText(p.id, p.kind, p.title, p.text, p.score) for p in passages],
            history=history,
        )

        flight_key = (ResponseStore.answer_key(plan.product_key_id, version, qhash) if cacheable
                      else f"alone:{state.request_id}")

        def work(shared: Deadline) -> AsyncIterator:
            # A shared answer runs apart from any one caller, to the latest of its callers' deadlines.
            return self._produce(plan, passages, strategy, route, answer_request, shared, qhash if keep else "")

        llm_start = time.perf_counter()
        answer: Answer | None = None
        status = BYPASS
        state.cache_status = MISS if cacheable else BYPASS
        # Either way the answer is produced in a task of its own, at its own pace: a ChatStream caller
        # that stops reading (grants no flow-control window) does not hold the LLM's stream open, and
        # with it a connection of the LLM client's pool, for as long as its call lasts.
        items = self.flights.run(flight_key, work, deadline)
        async with aclosing(items):
            async for leader, item in items:
                if isinstance(item, str):
                    if not state.ttft_ms:
                        state.ttft_ms = (time.perf_counter() - llm_start) * 1000
                    yield item
                elif isinstance(item, Restart):
                    yield RESTART
                elif isinstance(item, _Cached):
                    state.llm_ms = (time.perf_counter() - llm_start) * 1000
                    async for out in self._from_cache(state, key_hash, item.value, SHARED):
                        yield out
                    return
                elif isinstance(item, Answer):
                    answer = item
                    if cacheable:
                        status = MISS if leader else SHARED
        assert answer is not None, "a produced answer always ends with an Answer"
        answered_ms = (time.perf_counter() - llm_start) * 1000
        if not state.ttft_ms:
            state.ttft_ms = answered_ms     # its caller's first token, whoever wrote it
        if route.backend == "llm" or (route.backend == "extractive" and strategy in _GROUNDED):
            state.llm_ms = answered_ms
        # else a stored FAQ answer or a canned reply (no answer, small talk): no model wrote it, and the
        # LLM stage's latency counts only the turns where it ran.
        response = self._response(plan, passages, strategy, answer)
        response.request_id = state.request_id
        response.cache_status = status
        if status == SHARED:
            response.usage.Clear()  # the tokens were spent (and counted) once, by the leader
        response.timings.CopyFrom(common_pb2.Timings(
            search_ms=state.search_ms, ttft_ms=state.ttft_ms, llm_ms=state.llm_ms, total_ms=state.ms()))
        await self._finish(state, key_hash, response)
        yield response

    async def _web_passages(self, plan: search_pb2.PlanResponse, deadline: float,
                            secret: str) -> list[common_pb2.Passage]:
        if self.web is None:
            return []
        budget = min(self._settings.search_timeout_seconds, deadline - asyncio.get_running_loop().time())
        return await self.web.passages(plan.fetch_url or plan.website, plan.product_key_id, budget, secret)

    def _response(self, plan: search_pb2.PlanResponse, passages: list[common_pb2.Passage], strategy: str,
                  answer: Answer) -> response_pb2.ChatResponse:
        if strategy in _GROUNDED and not answer.cited:
            strategy = "NO_ANSWER"  # the passages did not hold an answer after all
        by_id = {p.id: p for p in passages}
        return response_pb2.ChatResponse(
            answer=answer.text,
            sources=[by_id[i] for i in answer.cited if i in by_id],
            strategy=common_pb2.Strategy.Value("STRATEGY_" + strategy),
            model=answer.model,
            usage=common_pb2.TokenUsage(prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens),
            reasons=plan.reasons,
        )

    async def _produce(
        self, plan: search_pb2.PlanResponse, passages: list[common_pb2.Passage], strategy: str,
        route: routing.Route, request: AnswerRequest, deadline: Deadline, qhash: str,
    ) -> AsyncIterator:
        """The answer's pieces and the Answer; with qhash, across processes too (a Redis lock),
        and the answer is cached before the flight ends. An answer the model cut at max_tokens is
        given but not cached, as a degraded one."""
        lock = None
        stop_following = None
        try:
            if qhash:
                name = ResponseStore.answer_key(plan.product_key_id, plan.knowledge_version, qhash)
                loop = asyncio.get_running_loop()
                while lock is None and loop.time() < deadline.at:
                    lock = await self._try_lock(name, max(1.0, deadline.at - loop.time()))
                    if lock is None:
                        # Another process is answering the same question: wait for its answer. If its
                        # lock goes without one (it failed, or its answer was not cacheable), try for the
                        # lock again, so that of the waiters one answers and the others keep waiting.
                        cached = await self._wait_for_answer(plan, qhash, name, deadline)
                        if cached is not None:
                            yield _Cached(cached)
                            return
                if lock is not None:
                    term = _LockTerm(self._store, lock, self._spawn)
                    stop_following = deadline.follow(term.push)
                    term.push(deadline.at)      # callers who joined while the lock was being taken
                    # Double-check: an identical flight may have ended between our lookup and the lock.
                    cached = await self._store.get_answer(plan.product_key_id, plan.knowledge_version, qhash)
                    if cached is not None:
                        yield _Cached(cached)
                        return
            if route.backend == "faq":
                source = _faq_answer(plan.faq_answer, passages)
            elif route.backend == "llm" and self.llm is not None:
                source = self.llm.stream(request, route.models, deadline)
            else:
                source = self._extractive.stream(request)
            async for item in source:
                if isinstance(item, Answer) and qhash and not item.degraded and not item.truncated:
                    await self._store.put_answer(plan.product_key_id, plan.knowledge_version, qhash,
                                                 self._response(plan, passages, strategy, item).SerializeToString())
                yield item
        finally:
            # From the moment the lock is ours, whatever ends the flight (its last caller leaving
            # cancels it) releases the lock: left to its TTL, other replicas would wait on it until
            # their deadline. Shielded, so that a second cancellation does not stop the release.
            if stop_following is not None:
                stop_following()
            if lock is not None:
                await asyncio.shield(self._spawn(self._store.unlock(lock)))

    async def _try_lock(self, name: str, ttl_seconds: float):
        """The store's try_lock, run to its end even when the flight is cancelled meanwhile: a lock
        that Redis granted as the flight was cancelled is released, not left to its TTL."""
        taking = self._spawn(self._store.try_lock(name, ttl_seconds))
        try:
            return await asyncio.shield(taking)
        except asyncio.CancelledError:
            taking.add_done_callback(self._unlock_late)
            raise

    def _unlock_late(self, taking: asyncio.Task) -> None:
        if not taking.cancelled() and taking.exception() is None and taking.result() is not None:
            self._spawn(self._store.unlock(taking.result()))

    async def _wait_for_answer(self, plan: search_pb2.PlanResponse, qhash: str, name: str,
                               deadline: Deadline) -> bytes | None:
        """The answer another process caches under its lock `name`; None once the lock is gone
        without one, or at the deadline."""
        loop = asyncio.get_running_loop()
        while loop.time() < deadline.at:
            await asyncio.sleep(0.02)
            cached = await self._store.get_answer(plan.product_key_id, plan.knowledge_version, qhash)
            if cached is not None:
                return cached
            if not await self._store.locked(name):
                return None
        return None

    async def _from_cache(
        self, state: TurnState, key_hash: str, cached: bytes, status: int
    ) -> AsyncIterator[str | response_pb2.ChatResponse]:
        response = await self._hit(state, key_hash, cached, status)
        yield response.answer
        yield response

    async def _hit(self, state: TurnState, key_hash: str, cached: bytes, status: int) -> response_pb2.ChatResponse:
        """The cached answer as this turn's response, its turn recorded and its ChatTurn out."""
        response = response_pb2.ChatResponse.FromString(cached)
        response.request_id = state.request_id
        response.cache_status = status
        response.usage.Clear()  # no tokens spent for this turn
        response.timings.CopyFrom(common_pb2.Timings(search_ms=state.search_ms, llm_ms=state.llm_ms,
                                                     total_ms=state.ms()))
        await self._finish(state, key_hash, response)
        return response

    async def _finish(self, state: TurnState, key_hash: str, response: response_pb2.ChatResponse) -> None:
        if state.deadline is not None and time.perf_counter() >= state.deadline:
            # The caller stopped waiting before the answer was ready: it never receives it, so the
            # turn is no answer (recorded DEADLINE_EXCEEDED), and it cannot be rated.
            raise DeadlineExceeded("the answer was ready only after the caller's deadline")
        request = state.request
        record = RequestRecord(key_hash, state.key_id, request.session_id, request.message)
        self._store.record_turn(state.request_id, record, response.answer)
        state.reported = True
        await self._emit(state, response, "")

    def _fail(self, state: TurnState, code: str) -> None:
        if not state.key_id or state.reported:
            return  # no key, no tenant to report the turn to (e.g. an unknown product key)
        response = response_pb2.ChatResponse(
            request_id=state.request_id, strategy=state.strategy, cache_status=state.cache_status,
            timings=common_pb2.Timings(search_ms=state.search_ms, ttft_ms=state.ttft_ms, llm_ms=state.llm_ms,
                                       total_ms=state.ms()),
        )
        self._spawn(self._quietly(self._emit(state, response, code), "failed turn event"))

    async def _emit(self, state: TurnState, response: response_pb2.ChatResponse, error_code: str) -> None:
        request = state.request
        usage = response.usage
        event = events_pb2.ChatTurn(
            event_id=new_event_id(),
            occurred_at=now_timestamp(),
            product_key_id=state.key_id,
            session_id=storable(request.session_id),
            request_id=state.request_id,
            message=storable(request.message),
            answer=storable(response.answer),
            strategy=response.strategy,
            model=response.model,
            cache_status=response.cache_status,
            timings=response.timings,
            usage=usage,
            cost_usd=estimate_cost(self._settings.llm_prices, response.model, usage.prompt_tokens,
                                   usage.completion_tokens),
            source_ids=[s.id for s in response.sources],
            error_code=error_code,
            trace_id=state.request_id,
        )
        # False when the outbox refused the event (full, or its file unwritable with its memory bound
        # reached): counted and logged there. The answer is given all the same: it is worth more
        # than its record, and answers never wait on the event's way to Kafka.
        await self._producer.publish(self._settings.topic("chat_turns"), state.key_id, event,
                                     trace_id=state.request_id)

    # --- feedback -----------------------------------------------------------------------

    async def feedback(self, product_key: str, request_id: str, rating: int, comment: str) -> str:
        if not product_key.strip():
            raise Unauthenticated("product key missing")
        # A malformed rating is refused before it costs its caller a token of the key's bucket.
        if rating not in (1, -1):
            raise InvalidArgument(f"rating must be +1 or -1, not {rating}")
        if len(comment) > self._settings.max_message_chars:
            raise InvalidArgument(f"comment has {len(comment)} characters; the limit is {self._settings.max_message_chars}")
        request_id = request_id.strip()
        if not request_id:
            raise InvalidArgument("request_id is required: the request id of the chat turn rated")
        if len(request_id) > MAX_REQUEST_ID_CHARS:
            raise InvalidArgument(f"request id has {len(request_id)} characters; the limit is {MAX_REQUEST_ID_CHARS}")
        key_id = ""
        if self.admission is not None:
            # A revoked or rotated-away secret is refused, and a rating takes a token of the key's
            # bucket as a chat turn does: each one accepted is an event in the process's outbox and
            # may be a lookup on the PostgreSQL pool every tenant's key checks share.
            key_id = (await self.admission.admit(product_key)).id
        if storable(request_id) != request_id:
            # No turn's id holds a control character (ids are made here): none to look for.
            raise NotFound(f"no chat turn with request id {request_id!r} for this product key")
        record = await self._rated_turn(product_key, key_id, request_id)
        # The turn belongs to the key, not to one of its secrets: feedback sent with the secret a
        # rotation gave is the same key's (the key's id, known from its validation, is compared).
        age = event_id_age(request_id)
        if (record is None and age is not None and -RECENT_TURN_SECONDS < age < RECENT_TURN_SECONDS
                and key_id and self.admission is not None
                and not await any_turn_stored(await self.admission.pool(), request_id)):
            # A turn of a moment ago that is stored nowhere: the replica that answered it may not have
            # written its record yet (it does in the background, batched), nor the worker stored it.
            raise Unavailable(f"no chat turn with request id {request_id!r} is recorded yet; retry shortly",
                              trailers={RETRY_AFTER_TRAILER: "1"})
        if record is None or (record.key_id != key_id if key_id else record.key_hash != secret_hash(product_key)):
            raise NotFound(f"no chat turn with request id {request_id!r} for this product key")
        event = events_pb2.Feedback(
            event_id=feedback_event_id(request_id, rating), occurred_at=now_timestamp(),
            product_key_id=record.key_id, request_id=storable(request_id), rating=rating, comment=storable(comment),
            message=storable(record.message),
        )
        # Feedback is nothing but its event: one the outbox refused is not acknowledged. A retry has the
        # same event id, so it is recorded once whichever attempt gets through. The hint is 5 s: an
        # outbox that refuses is full (Kafka away for long) or cannot write its file.
        if await self._producer.publish(self._settings.topic("feedback"), record.key_id, event,
                                        trace_id=request_id) is False:
            raise Unavailable("feedback not recorded: the event outbox cannot take it now; retry shortly",
                              trailers={RETRY_AFTER_TRAILER: "5"})
        return event.event_id

    async def _rated_turn(self, product_key: str, key_id: str, request_id: str) -> RequestRecord | None:
        """The turn's record in Redis or, when Redis lost it (restarted empty, flushed, evicted) or
        cannot be read, as the analytics stream worker stored it. UNAVAILABLE when the one that could
        not be asked may hold it."""
        try:
            record = await self._store.request(request_id)
        except Unavailable as redis_away:
            record, unknown = None, redis_away
        else:
            unknown = None
        if record is None and key_id and self.admission is not None:
            record = await stored_turn(await self.admission.pool(), request_id, key_id, secret_hash(product_key),
                                       self._settings.feedback_window_seconds)
        if record is None and unknown is not None:
            raise unknown
        return record


def feedback_event_id(request_id: str, rating: int) -> str:
    """One event id per turn and rating: feedback submitted again (a client retry, a second vote,
    a changed comment) has the same id, so the stream worker stores and counts at most one
    up-vote and one down-vote per turn (its insert skips a known event_id)."""
    return uuid.uuid5(_FEEDBACK_NAMESPACE, f"{request_id.strip()}\x1f{rating}").hex


def build_engine(settings: ResponseSettings, search: SearchClient, store: ResponseStore, producer: EventProducer | Outbox,
                 web: WebPages | None = None) -> ChatEngine:
    """The engine as the settings describe it: Groq when GROQ_API_KEY is set, else extractive only."""
    extractive = ExtractiveAnswerer(settings.extractive_max_sentences, min_similarity=settings.extractive_min_similarity,
                                    passages=settings.extractive_passages)
    llm = None
    if settings.groq_api_key:
        llm = ResilientLLM(
            GroqClient(settings.groq_api_key, settings.groq_base_url, temperature=settings.llm_temperature,
                       first_token_seconds=settings.llm_first_token_timeout_seconds,
                       idle_seconds=settings.llm_idle_timeout_seconds),
            extractive,
            timeout_seconds=settings.llm_timeout_seconds,
            max_attempts=settings.llm_max_attempts,
            max_retry_wait_seconds=settings.llm_max_retry_wait_seconds,
            breaker_failures=settings.llm_breaker_failures,
            breaker_reset_seconds=settings.llm_breaker_reset_seconds,
            fallback_extractive=settings.llm_fallback_extractive,
            prompt_token_budget=settings.llm_prompt_token_budget,
            max_completion_tokens=settings.llm_max_completion_tokens,
        )
    return ChatEngine(settings, search, store, producer, extractive, llm, web)


def build_store(settings: ResponseSettings, client) -> ResponseStore:
    return ResponseStore(
        client, answer_ttl=settings.answer_cache_ttl_seconds, pointer_ttl=settings.answer_cache_pointer_ttl_seconds,
        session_turns=settings.session_history_turns, session_ttl=settings.session_ttl_seconds,
        request_ttl=min(settings.turn_record_seconds, settings.feedback_window_seconds),
        local_seconds=settings.answer_cache_local_seconds,
        retry_seconds=settings.redis_retry_seconds,
    )
