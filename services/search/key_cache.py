"""Product-key cache in Redis: lives in services/common/product_keys.py, shared with the services that
authenticate tenants (response, analytics, scraper); see its docstring for the staleness bounds."""

from services.common.product_keys import TOMBSTONE, KeyCache, cache_key

__all__ = ["TOMBSTONE", "KeyCache", "cache_key"]
