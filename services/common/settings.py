"""One place for every setting; read once at start from `PARLEY_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

# Base topic names; `PARLEY_TOPIC_NAMESPACE` is appended to each (tests use it to stay apart).
TOPICS = {
    "chat_turns": "parley.chat.turns.v1",
    "feedback": "parley.feedback.v1",
    "crawl_requests": "parley.crawl.requests.v1",
    "knowledge_updated": "parley.knowledge.updated.v1",
    "metrics_minutely": "parley.metrics.minutely.v1",
    "deadletter": "parley.deadletter.v1",
    # One owner of knowledge: crawled pages handed to the search service's indexer.
    "knowledge_pages": "parley.knowledge.pages.v1",
}


class Settings(BaseSettings):
    """Every endpoint, port, threshold and limit of Parley."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore")

    # Endpoints of the real components.
    kafka_bootstrap: str = "127.0.0.1:19092"
    postgres_dsn: str = "postgresql://parley:parley@127.0.0.1:15432/parley"
    redis_url: str = "redis://127.0.0.1:16379/0"

    # Where the services listen (bind) and where clients find them (addr).
    grpc_bind_host: str = "127.0.0.1"
    search_addr: str = "127.0.0.1:50051"
    response_addr: str = "127.0.0.1:50052"
    scraper_addr: str = "127.0.0.1:50053"
    analytics_addr: str = "127.0.0.1:50054"
    search_metrics_port: int = 9101
    response_metrics_port: int = 9102
    scraper_metrics_port: int = 9103
    analytics_metrics_port: int = 9104
    worker_metrics_port: int = 9105
    crawler_metrics_port: int = 9106
    grpc_max_message_bytes: int = 4 * 1024 * 1024
    shutdown_grace_seconds: float = 20.0

    # Kafka topics.
    topic_namespace: str = ""
    topic_partitions: int = 4
    topic_replication: int = 1

    # Admin RPCs (product keys, knowledge). Production must set its own via a Secret.
    admin_token: str = "parley-dev-admin-token"

    # Search.
    max_message_chars: int = 4000
    max_passages: int = 5
    knowledge_min_score: float = 0.4      # share of the question's terms a passage must contain
    faq_min_score: float = 0.6            # FAQ question match above which its stored answer is used
    search_candidates: int = 20           # per retrieval arm, before fusion
    key_cache_ttl_seconds: float = 30.0   # product-key cache in Redis (bound on staleness)
    rate_limit_per_second: float = 20.0   # per-key token bucket defaults (product_keys.settings overrides)
    rate_limit_burst: int = 40
    search_timeout_seconds: float = 2.0

    # Answering.
    groq_api_key: str = Field(default="", validation_alias=AliasChoices("GROQ_API_KEY", "PARLEY_GROQ_API_KEY"))
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
    # Answer cache and sessions (Redis).
    answer_cache_ttl_seconds: int = 3600
    answer_cache_pointer_ttl_seconds: int = 30  # key -> (id, knowledge version), also invalidated by events
    answer_cache_local_seconds: float = 2.0     # in-process copy of hot cache hits (0: off)
    session_history_turns: int = 6              # recent turns kept per session (and sent to the LLM)
    session_ttl_seconds: int = 1800
    feedback_window_seconds: int = 7 * 24 * 3600  # how long a request id accepts feedback

    # Web scraping (crawler and Fetch).
    scraper_user_agent: str = "ParleyBot/0.1 (+https://github.com/parley/parley; crawler of customer-support knowledge)"
    scraper_allow_networks: str = ""        # comma-separated CIDRs let through the private-address refusal
    scraper_host_concurrency: int = 2       # requests in flight per host
    scraper_host_delay_seconds: float = 0.25  # between request starts per host (robots Crawl-delay wins if longer)
    scraper_job_concurrency: int = 8        # pages in flight per crawl job
    scraper_max_jobs: int = 4               # crawl jobs in flight per worker process
    scraper_max_redirects: int = 5
    scraper_max_page_bytes: int = 2_000_000
    scraper_timeout_seconds: float = 10.0
    scraper_fetch_cache_seconds: int = 600  # TTL of Fetch results in Redis
    scraper_group_id: str = "parley-crawler"

    # Stream processor.
    worker_app_id: str = "parley-analytics"
    stream_batch_size: int = 1000
    worker_stall_seconds: float = 60.0           # liveness: messages waiting and no progress this long
    worker_lag_interval_seconds: float = 5.0
    worker_session_timeout_seconds: float = 10.0
    minutely_publish_interval_seconds: float = 5.0

    # Stream processor: its own consumer of the hot topics, retries, event loop.
    stream_fetch_max_bytes: int = 64 * 1024 * 1024        # one fetch across partitions
    stream_partition_fetch_bytes: int = 8 * 1024 * 1024    # per partition and fetch
    stream_retry_max_seconds: float = 5.0                  # longest wait between two tries of a batch
    stream_uvloop: bool = True                             # uvloop as the worker's event loop

    # Logging.
    log_level: str = "INFO"
    log_json: bool = True

    # Tenant authentication (product keys outside the search service, Redis-down fallback).
    key_local_cache_seconds: float = 3.0   # without Redis: a key record kept in process (bound on a rotation missed)

    # Crawl job leases (one worker per job, also across a rebalance).
    scraper_job_lease_seconds: float = 15.0   # renewed every third of it; a dead worker's job waits this long

    # Event outbox and degraded dependencies (answers never wait on Kafka; Redis is optional).
    outbox_dir: str = ".local/outbox"           # one SQLite file per service and port; keep it on a volume
    outbox_max_events: int = 200_000            # when full, new events are dropped and counted
    outbox_batch: int = 500                     # events per delivery round
    outbox_synchronous: str = "NORMAL"          # NORMAL: survives a process crash; FULL: fsync every append
    redis_retry_seconds: float = 1.0            # after a Redis error, skip Redis this long (answer uncached)

    # Dense retrieval (services/search/dense.py, vector_index.py, indexer.py)
    dense_retrieval: bool = True                  # dense candidates in Plan (the model loads at start)
    dense_candidates: int = 20                    # nearest chunks per message
    vector_index_max_bytes: int = 256 * 1024 * 1024   # loaded keys' vectors per search process (LRU)
    indexer_group: str = "parley-search-indexer"  # consumer group of the knowledge pages topic
    indexer_metrics_port: int = 9111

    # Event loop of the asyncio services: uvloop serves the cached chat path faster (bench "chat");
    # "asyncio" is the standard loop, kept for comparison and for debugging.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    # Hybrid ranking and the answer decision (services/search/strategy.py) and the extractive answerer's
    # sentence choice (services/response/llm.py). Chosen on the dev split of the help-site evaluation
    # (bench/eval_tune.py over `make bench ARGS="--only search-eval"`); see README "How the thresholds were chosen".
    lexical_weight: float = 0.1               # lexical relevance added to the dense score in the ranking
    answer_min_dense: float = 0.24            # best passage score from which the knowledge answers at all
    passage_min_dense: float = 0.24           # score a passage needs to be returned with a KNOWLEDGE answer
    faq_min_dense: float = 0.80               # FAQ entry cosine from which its stored answer is used
    faq_min_margin: float = 0.10              # ... or by which it stands above every passage that is no FAQ entry
    #   (the demo set, tests/search/eval_demo.json: questions written for an FAQ entry had it first by
    #   0.05-0.55 above the best page passage, questions about the pages had an FAQ entry first once, by 0.02)
    extractive_min_similarity: float = 0.26   # sentence cosine from which the extractive answer quotes it
    #   (0.24, 0.26 and answer_min_support 0.15: bench/eval_tune.py on the dev split of bench/eval_dev.py run
    #   with permissive thresholds, after the sentence vectors; the most unanswerable questions caught
    #   with answerable→NO_ANSWER at or below 0.05, the widest margins of the same outcome)
    extractive_passages: int = 5              # passages whose sentences are embedded for an extractive answer
    #   (5, not 3: the fact asked for sat in the 4th or 5th passage for 12% of the dev questions)

    # NO_ANSWER by the support of the answer (services/search/strategy.py support()): how far the best
    # passage stands above the 10 best (peak) plus known_weight times the share of the message's terms
    # that the key's knowledge contains. Chosen with answer_min_dense and extractive_min_similarity.
    answer_min_support: float = 0.15
    known_weight: float = 0.2     # the middle of the dev plateau (0.15-0.3 caught as many unanswerable questions)

    # Stream processor: its garbage collector (services/analytics/stream/__main__.py).
    stream_gc_threshold: int = 50_000   # first-generation threshold; 0: Python's own (700), nothing frozen

    def topic(self, name: str) -> str:
        """The full topic name for one of `TOPICS`."""
        return TOPICS[name] + self.topic_namespace


class SettingsError(SystemExit):
    """A missing or malformed setting: stops the process with a message naming it."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"PARLEY_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
