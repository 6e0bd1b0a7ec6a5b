"""Per-key rate limits: the token buckets of services/common/product_keys.py (Redis, per process when
Redis is down). They are charged where a tenant's call enters: the response service, before its answer
cache (services/response/admission.py), so cached answers count too; and Plan when a tenant calls it
itself (a bucket of its own per key, services/search/planner.py). Plan from the response service, with
the admin token in its metadata, is not charged a second time."""

from services.common.product_keys import RateLimiter, Verdict, retry_after_text

__all__ = ["RateLimiter", "Verdict", "retry_after_text"]
