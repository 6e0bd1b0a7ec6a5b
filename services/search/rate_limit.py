"""Per-key rate limits: the token buckets of services/common/product_keys.py (Redis, per process when
Redis is down). They are charged where a tenant's call enters: the response service, before its answer
cache (services/response/admission.py), so cached answers count too; Plan is an internal call and is
not charged a second time."""

from services.common.product_keys import RateLimiter, Verdict, retry_after_text

__all__ = ["RateLimiter", "Verdict", "retry_after_text"]
