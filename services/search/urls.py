"""What a product key's website and a document's url may be: URLs a browser and a Fetch can use.

A key's website is what Plan offers for STRATEGY_WEB and the scraper fetches; a document's url comes
back to tenants as the source of an answer (Passage.url), where a `javascript:` or `data:` URL would
run in the tenant's page. Both are checked when they are set, and the problem is said in words."""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

from services.common.hosts import host_problem

# The url `parley knowledge add` (and the demo) give a document without a web page: doc:<file name>.
DOCUMENT_PREFIX = "doc:"


def _shown(url: str) -> str:
    return repr(url if len(url) <= 100 else url[:100] + "…")


def _http_problem(url: str) -> str | None:
    """What keeps `url` from being an absolute http(s) URL with a usable host, or None."""
    if any(c.isspace() or not c.isprintable() for c in url):
        return "it holds spaces or control characters (write a space in a URL as %20)"
    try:
        parts = urlsplit(url)
        port = parts.port     # a port that is no number, or out of range, raises ValueError
    except ValueError as exc:
        return f"it cannot be read as a URL ({exc})"
    if port == 0:
        return "its port is 0, which no server listens on"
    if parts.scheme not in ("http", "https"):
        return "it is no http(s) URL"
    if not parts.hostname:
        return "it has no host"
    if "@" in parts.netloc:
        return "it names a user before its host"
    return host_problem(parts.hostname) or None


@functools.lru_cache(maxsize=4096)
def website_problem(website: str) -> str | None:
    """Why a key's website (as stored: stripped) is refused, or None. Cached: Plan asks of every key's."""
    if not website:
        return None
    problem = _http_problem(website)
    if problem:
        return (f"website must be an absolute http(s) URL whose host can be a DNS name or is an IP address, "
                f"e.g. https://help.example.com/; {_shown(website)}: {problem}")
    return None


def document_url_problem(url: str) -> str | None:
    """Why a document's url (as stored: through `storable`, stripped) is refused, or None. An http(s)
    URL, doc:<name> for a document without a web page, or none at all."""
    if not url:
        return None
    if url[:len(DOCUMENT_PREFIX)].lower() == DOCUMENT_PREFIX:
        if url[len(DOCUMENT_PREFIX):].strip():
            return None
        return "the document url doc:<name> needs a name, e.g. doc:returns.md"
    problem = _http_problem(url)
    if problem:
        return (f"the document url must be an http(s) URL whose host can be a DNS name or is an IP address, or "
                f"doc:<name> for a document without a web page; {_shown(url)}: {problem}")
    return None
