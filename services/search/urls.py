"""What a product key's website and a document's url may be: URLs a browser and a Fetch can use.

A key's website is what Plan offers for STRATEGY_WEB and the scraper fetches; a document's url comes
back to tenants as the source of an answer (Passage.url), where a `javascript:` or `data:` URL would
run in the tenant's page. Both are checked when they are set, and the problem is said in words."""

from __future__ import annotations

import functools
import ipaddress
import re
from urllib.parse import SplitResult, urlsplit

import idna

# The url `parley knowledge add` (and the demo) give a document without a web page: doc:<file name>.
DOCUMENT_PREFIX = "doc:"
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")   # ASCII labels as resolvers take them (an underscore too)
_NUMBER = re.compile(r"[0-9]+|0x[0-9a-f]*")   # a last label browsers read as part of an IPv4 address
MAX_HOST_CHARS = 253


def _shown(url: str) -> str:
    return repr(url if len(url) <= 100 else url[:100] + "…")


def host_problem(host: str) -> str | None:
    """Why `host` (urlsplit's hostname: lower case, IPv6 without brackets) can be neither a DNS name
    nor an IP address, or None when it can be one."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
            return None
        except ValueError:
            return "its host is no IPv6 address"
    if not host.isascii():
        try:       # as browsers and the scraper map an internationalized name (UTS 46, non-transitional)
            mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
            host = ".".join(label if label.isascii() else idna.alabel(label).decode("ascii")
                            for label in mapped.split("."))
        except (idna.IDNAError, UnicodeError):
            return "its host is no internationalized domain name"
    name = host[:-1] if host.endswith(".") else host     # the root's dot of a fully qualified name
    if len(name) > MAX_HOST_CHARS:
        return f"its host has more than {MAX_HOST_CHARS} characters"
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return "its host is no DNS name (letters, digits, '-' and '_' in dot-separated labels of 1 to 63)"
    if _NUMBER.fullmatch(labels[-1]):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            return "its host ends in a number but is no IPv4 address (four numbers of 0 to 255)"
    return None


def _http_parts(url: str) -> tuple[SplitResult | None, str | None]:
    """(the parts of an absolute http(s) URL with a usable host, None) or (None, what is wrong)."""
    if any(c.isspace() or not c.isprintable() for c in url):
        return None, "it holds spaces or control characters (write a space in a URL as %20)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is no number, or out of range, raises ValueError
    except ValueError as exc:
        return None, f"it cannot be read as a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return None, "it is no http(s) URL"
    if not parts.hostname:
        return None, "it has no host"
    if "@" in parts.netloc:
        return None, "it names a user before its host"
    problem = host_problem(parts.hostname)
    return (None, problem) if problem else (parts, None)


@functools.lru_cache(maxsize=4096)
def website_problem(website: str) -> str | None:
    """Why a key's website (as stored: stripped) is refused, or None. Cached: Plan asks of every key's."""
    if not website:
        return None
    _, problem = _http_parts(website)
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
    _, problem = _http_parts(url)
    if problem:
        return (f"the document url must be an http(s) URL whose host can be a DNS name or is an IP address, or "
                f"doc:<name> for a document without a web page; {_shown(url)}: {problem}")
    return None
