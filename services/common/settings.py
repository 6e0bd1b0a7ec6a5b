"""One place for every setting; read once at start from `PARLEY_*` environment variables."""

from __future__ import annotations

from functools import lru_cache

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
    knowledge_min_score: float = 0.01
    search_timeout_seconds: float = 2.0

    # Answering.
    groq_api_key: str = Field(default="", validation_alias=AliasChoices("GROQ_API_KEY", "PARLEY_GROQ_API_KEY"))
    groq_base_url: str = ""
    llm_small_model: str = "llama-3.1-8b-instant"
    llm_large_model: str = "llama-3.3-70b-versatile"
    extractive_max_sentences: int = 3

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
    stream_batch_within_seconds: float = 0.5

    # Logging.
    log_level: str = "INFO"
    log_json: bool = True

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
