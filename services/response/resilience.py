"""Around the LLM: retries with jitter (Retry-After honoured), a circuit breaker per model, and the
fallback chain large -> small -> extractive; failures no fallback can answer become domain errors."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from tenacity.stop import stop_base

from services.common.errors import RETRY_AFTER_TRAILER, DeadlineExceeded, ParleyError, Unavailable
from services.common.text import StorableStream
from services.response.llm import (
    RESTART,
    Answer,
    AnswerRequest,
    Deadline,
    GroqClient,
    LLMError,
    Restart,
    Usage,
    as_deadline,
    cited_ids,
)
from services.response.extractive import ExtractiveAnswerer
from services.response.prompt import build_messages

logger = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed: calls pass. After `failures` consecutive failures: open, calls are refused for
    `reset_seconds`; then half-open: one trial call, whose outcome closes or re-opens it."""

    def __init__(self, failures: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = max(1, failures)
        self._reset = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self._reset:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial = False

    def abandon(self) -> None:
        """The call ended without a verdict (cancelled, client gone): the trial slot is free again,
        or a half-open breaker would refuse every call for good."""
        self._trial = False

    def failure(self) -> None:
        self._failures += 1
        self._trial = False
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at = self._clock()

    def trip(self) -> None:
        """Open now, whatever the count: a failure every call would meet (a refused API key)."""
        self._failures = max(self._failures, self._threshold)
        self._trial = False
        self._opened_at = self._clock()


async def _storable(stream: AsyncIterator[str | Usage]) -> AsyncIterator[str | Usage]:
    """A model's pieces cleaned as the message was (NUL, controls, escape sequences, bidi overrides),
    before they are streamed, cached, kept in the session or put in an event; none empty."""
    clean = StorableStream()
    async for piece in stream:
        if isinstance(piece, Usage):
            yield piece
        elif piece := clean.feed(piece):
            yield piece
    if tail := clean.flush():
        yield tail


class _PastDeadline(stop_base):
    """Stop retrying when the next wait would end after the deadline."""

    def __init__(self, deadline: Deadline, wait: Callable[[RetryCallState], float]) -> None:
        self._deadline = deadline
        self._wait = wait

    def __call__(self, retry_state: RetryCallState) -> bool:
        return asyncio.get_running_loop().time() + self._wait(retry_state) >= self._deadline.at - 0.05


# What the caller is told, by kind of failure: never the provider's own text (it names our
# organisation and quotas); that is logged.
_UNAVAILABLE_MESSAGES = {
    "auth": "the LLM is not available now; retry later",
    "stalled": "the LLM stopped answering; retry later",
    "filtered": "the LLM declined to answer this question",
}


def to_domain_error(errors: list[LLMError]) -> ParleyError:
    """The most telling status for the caller when no backend could answer. The provider's rate
    limit is UNAVAILABLE with its retry-after, not RESOURCE_EXHAUSTED: that status says the caller's
    own key went over its limit (admission.py)."""
    limited = [e for e in errors if e.kind == "rate_limited"]
    if limited:
        after = max((e.retry_after or 0.0) for e in limited)
        trailers = {RETRY_AFTER_TRAILER: f"{max(1, math.ceil(after))}"} if after else {}
        return Unavailable("the LLM is rate limited; retry later", trailers=trailers)
    last = errors[-1] if errors else LLMError("unavailable", "no LLM available")
    if last.kind in ("timeout", "deadline"):
        return DeadlineExceeded("the LLM did not answer within the deadline")
    return Unavailable(_UNAVAILABLE_MESSAGES.get(last.kind, "the LLM could not answer; retry later"))


# Outcomes that show the API key was accepted (the provider read the request and answered it).
_KEY_ACCEPTED = frozenset({"rate_limited", "bad_response", "filtered", "rejected", "model_missing"})


class ResilientLLM:
    """Streams an answer from the first model of the chain that can give one."""

    def __init__(
        self,
        client: GroqClient,
        extractive: ExtractiveAnswerer,
        *,
        timeout_seconds: float,
        max_attempts: int,
        max_retry_wait_seconds: float,
        breaker_failures: int,
        breaker_reset_seconds: float,
        fallback_extractive: bool,
        prompt_token_budget: int,
        max_completion_tokens: int,
    ) -> None:
        self.client = client
        self._extractive = extractive
        self._timeout = timeout_seconds
        self._max_attempts = max(1, max_attempts)
        self._max_retry_wait = max_retry_wait_seconds
        self._breaker_failures = breaker_failures
        self._breaker_reset = breaker_reset_seconds
        self._fallback_extractive = fallback_extractive
        self._budget = prompt_token_budget
        self._max_tokens = max_completion_tokens
        self.breakers: dict[str, CircuitBreaker] = {}
        self._backoff = wait_exponential_jitter(multiplier=0.1, max=1.0, jitter=0.2)
        self.key_refused = ""       # why the provider refused the API key, until it accepts it again

    def breaker(self, model: str) -> CircuitBreaker:
        if model not in self.breakers:
            self.breakers[model] = CircuitBreaker(self._breaker_failures, self._breaker_reset)
            if self.key_refused:
                self.breakers[model].trip()
        return self.breakers[model]

    async def check_key(self) -> None:
        """Health detail: fails while the provider refuses the API key (every model shares it)."""
        if self.key_refused:
            raise RuntimeError(self.key_refused)

    def _refuse_key(self, exc: LLMError) -> None:
        """Every model is called with the one key: open all their breakers, so the platform stops
        calling the provider until a trial after the reset finds the key accepted. Logged once."""
        for breaker in self.breakers.values():
            breaker.trip()
        if not self.key_refused:
            logger.error("the LLM refused the API key; every model's breaker is open and answers fall back "
                         "until a trial call every %.0f s finds it accepted: %s", self._breaker_reset, exc.message)
        self.key_refused = f"the LLM API key is refused: {exc.message}"

    def _accept_key(self) -> None:
        if self.key_refused:
            logger.info("the LLM accepts the API key again")
            self.key_refused = ""

    def _wait(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, LLMError) and exc.retry_after is not None:
            return exc.retry_after
        return self._backoff(retry_state)

    def _retryable(self, exc: BaseException) -> bool:
        if not isinstance(exc, LLMError) or not exc.retryable:
            return False
        # A Retry-After longer than we are willing to wait: the next model answers instead.
        return exc.retry_after is None or exc.retry_after <= self._max_retry_wait

    async def _model_stream(self, model: str, messages: list[dict], deadline: Deadline) -> AsyncIterator[str | Usage]:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts) | _PastDeadline(deadline, self._wait),
            wait=self._wait,
            retry=retry_if_exception(self._retryable),
            reraise=True,
        )
        loop = asyncio.get_running_loop()
        async for attempt in retrying:
            with attempt:
                attempt_deadline = deadline.capped(loop.time() + self._timeout)
                if attempt_deadline.at - loop.time() <= 0.01:
                    # The callers' deadline, not the model: no verdict on it.
                    raise LLMError("deadline", "no time left for the LLM")
                if attempt.retry_state.attempt_number > 1:
                    logger.info("retrying %s (attempt %d)", model, attempt.retry_state.attempt_number)
                async for piece in self.client.stream(model, messages, max_tokens=self._max_tokens,
                                                      deadline=attempt_deadline):
                    yield piece

    def _judge(self, model: str, breaker: CircuitBreaker, exc: LLMError) -> None:
        """What a failed call says about its model (its breaker) and about the API key."""
        if exc.kind == "deadline":
            # The callers' own deadline ended the call: no fault of the model.
            breaker.abandon()
            logger.info("LLM %s: the caller's deadline passed (%s)", model, exc.message)
            return
        if exc.kind == "auth":
            self._refuse_key(exc)
            return
        if exc.kind in ("rejected", "filtered"):
            # The model answered, refusing this request: it is up. A half-open breaker's trial that
            # ends so must free the slot, or no call passes again.
            breaker.success()
        else:
            breaker.failure()
        if exc.kind in _KEY_ACCEPTED:
            self._accept_key()
        logger.warning("LLM %s failed (%s): %s", model, exc.kind, exc.message)

    async def stream(
        self, request: AnswerRequest, models: tuple[str, ...], deadline: float | Deadline
    ) -> AsyncIterator[str | Restart | Answer]:
        """Pieces, RESTART when a model failed mid-answer and the next one starts over, then the Answer.
        `deadline` is event-loop time, or a Deadline that callers joining a shared call extend;
        raises a ParleyError when nothing can answer."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = as_deadline(deadline)
        messages = build_messages(request, self._budget)
        errors: list[LLMError] = []
        restart = False
        for position, model in enumerate(models):
            breaker = self.breaker(model)
            if not breaker.allow():
                errors.append(LLMError("auth" if self.key_refused else "unavailable",
                                       f"{model} is failing (circuit open)"))
                continue
            pieces: list[str] = []
            usage = Usage()
            ttft = 0.0
            try:
                async for piece in _storable(self._model_stream(model, messages, deadline)):
                    if isinstance(piece, Usage):
                        usage = piece
                        continue
                    if not pieces:
                        ttft = (loop.time() - started) * 1000
                        if restart:
                            restart = False
                            yield RESTART
                    pieces.append(piece)
                    yield piece
            except LLMError as exc:
                self._judge(model, breaker, exc)
                errors.append(exc)
                restart = restart or bool(pieces)
                if exc.kind == "deadline":
                    break  # no time for another model either
                continue
            except BaseException:
                breaker.abandon()
                raise
            breaker.success()
            self._accept_key()
            text = "".join(pieces)
            truncated = usage.finish_reason == "length"
            if not usage.completion_tokens:
                usage = Usage(sum(len(m["content"]) for m in messages) // 4 + 1, len(text) // 4 + 1)
            if truncated:
                logger.info("LLM %s stopped at max_tokens (%d): the answer is not cached", model, self._max_tokens)
            yield Answer(text, model, cited_ids(text, request.passages), usage.prompt_tokens,
                         usage.completion_tokens, degraded=position > 0 or bool(errors), ttft_ms=ttft,
                         truncated=truncated)
            return
        if not self._fallback_extractive:
            raise to_domain_error(errors)
        if restart:
            yield RESTART
        async for piece in self._extractive.stream(request):
            if isinstance(piece, Answer):
                piece.degraded = True
            yield piece
