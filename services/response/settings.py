"""Settings of the response service (over the shared `CommonSettings`)."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from services.common.settings import CommonSettings


class ResponseSettings(CommonSettings):
    """The LLM and its resilience, the answer cache, sessions, the event outbox and the extractive answerer."""

    # Search (the response service's calls to it).
    search_timeout_seconds: float = 2.0

    # Answering.
    groq_api_key: str = Field(default="", validation_alias=AliasChoices("GROQ_API_KEY", "PARLEY_GROQ_API_KEY"),
                              repr=False)   # out of the settings' repr, as the other secrets
    groq_base_url: str = ""
    llm_small_model: str = "llama-3.1-8b-instant"
    llm_large_model: str = "llama-3.3-70b-versatile"
    extractive_max_sentences: int = 3
    # Model routing (services/response/routing.py): the large model for long, multi-question or
    # low-confidence messages; the small one otherwise.
    llm_large_min_chars: int = 200
    llm_large_below_score: float = 0.1
    llm_prompt_token_budget: int = 3000        # passages + history + question, estimated tokens
    llm_max_completion_tokens: int = 512
    llm_temperature: float = 0.2
    # Resilience around the LLM: per-attempt timeout (within the client's deadline), retries
    # with jitter on 429/5xx honouring Retry-After, a circuit breaker per model, fallback chain.
    llm_timeout_seconds: float = 20.0
    # A stream that stalls is the model's failure (the next model answers) long before that timeout:
    # no first piece of text within this long of the request (0: no limit) ...
    llm_first_token_timeout_seconds: float = 5.0
    # ... or no next piece within this long of the last one (0: no limit).
    llm_idle_timeout_seconds: float = 5.0
    llm_max_attempts: int = 2                  # per model, before falling back to the next one
    llm_max_retry_wait_seconds: float = 2.0    # a longer Retry-After falls back instead of waiting
    llm_breaker_failures: int = 5              # consecutive failures that open a model's breaker
    llm_breaker_reset_seconds: float = 30.0    # open breaker: time before one trial call
    llm_fallback_extractive: bool = True       # last resort; false: LLM failures become gRPC errors
    # USD per million (prompt, completion) tokens, for the ChatTurn's estimated cost.
    llm_prices: dict[str, tuple[float, float]] = {
        "llama-3.1-8b-instant": (0.05, 0.08),
        "llama-3.3-70b-versatile": (0.59, 0.79),
    }
    # Turns that arrive within this long of each other while others are in flight share one Redis
    # round trip for their admission (and their events one outbox write): under load that halves the
    # CPU of a cached turn; a lone turn never waits. 0: no wait.
    admission_linger_seconds: float = 0.002
    # Answer cache and sessions (Redis).
    answer_cache_ttl_seconds: int = 3600
    answer_cache_pointer_ttl_seconds: int = 30  # key -> (id, knowledge version), also invalidated by events
    answer_cache_local_seconds: float = 2.0     # in-process copy of hot cache hits (0: off)
    session_history_turns: int = 6              # recent turns kept per session (and sent to the LLM)
    session_ttl_seconds: int = 1800
    feedback_window_seconds: int = 7 * 24 * 3600  # how long a request id accepts feedback
    # How long Redis keeps a turn's record (what SubmitFeedback checks first; at most the window). A
    # turn past it is found in PostgreSQL's `conversations`, where the stream worker stored it: a week
    # of records at 10 turns/s was ~2 GB of Redis.
    turn_record_seconds: int = 24 * 3600

    # Event outbox and degraded dependencies (answers never wait on Kafka; Redis is optional).
    outbox_dir: str = ".local/outbox"           # one SQLite file per service and port; keep it on a volume
    outbox_max_events: int = 200_000            # when full, new events are dropped and counted
    outbox_max_bytes: int = 1 << 30             # full at this many bytes of events too: keep it below the volume's space
    outbox_max_memory_events: int = 10_000      # held in memory (and sent from there) while the file refuses writes
    outbox_batch: int = 500                     # events per delivery round
    outbox_synchronous: str = "NORMAL"          # NORMAL: survives a process crash; FULL: fsync every append
    redis_retry_seconds: float = 1.0            # after a Redis error, skip Redis this long (answer uncached)

    # Hybrid ranking and the answer decision (services/search/strategy.py) and the extractive answerer's
    # sentence choice (services/response/extractive.py). Chosen on the dev split of the help-site evaluation
    # (bench/eval_tune.py over `make bench ARGS="--only search-eval"`); see README "How the thresholds were chosen".
    # (The ranking and answer-decision thresholds are in services/search/settings.py.)
    extractive_min_similarity: float = 0.28   # sentence cosine from which the extractive answer quotes it
    #   (0.28 chosen with unknown_min_support once the dev split had four sites; the history before that:)
    #   (0.24, 0.26 and answer_min_support 0.15: bench/eval_tune.py on the dev split of bench/eval_dev.py run
    #   with permissive thresholds, after the sentence vectors; the most unanswerable questions caught
    #   with answerable→NO_ANSWER at or below 0.05, the widest margins of the same outcome; answer_min_support is
    #   0.21 since the passages' covered share joined the support, the other two kept)
    extractive_passages: int = 5              # passages whose sentences are embedded for an extractive answer
    #   (5, not 3: the fact asked for sat in the 4th or 5th passage for 12% of the dev questions)
