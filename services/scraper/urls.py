"""URLs as the crawler keeps them: one spelling per page (normalised escapes, dot segments resolved, an
ASCII host), bounded in length, and the site a URL belongs to."""

from __future__ import annotations

import re
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import idna

from services.common.errors import InvalidArgument
from services.common.hosts import false_a_label, host_problem

# Longer links, redirect targets and sitemap entries are not followed: a URL names a page in btree
# indexes (crawl pages, knowledge documents), whose rows hold at most about 2.7 kB.
MAX_URL_CHARS = 2048


def normalize_url(url: str, base: str = "") -> str:
    """Absolute http(s) URL without fragment, lower-case scheme and host, no default port, no dot
    segments, percent-escapes in one spelling (`_normal_escapes`), at most MAX_URL_CHARS long; ''
    otherwise. Query strings and trailing slashes are kept: they can name different pages."""
    try:
        parts = urlsplit(urljoin(base, url.strip()) if base else url.strip())
    except ValueError:
        return ""
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return ""
    host = ascii_host(parts.hostname)
    if not host:
        return ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return ""
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    try:
        path = remove_dot_segments(_normal_escapes(parts.path or "/"))
        query = _normal_escapes(parts.query)
    except UnicodeEncodeError:   # a lone surrogate: no URL names it
        return ""
    normal = urlunsplit((scheme, netloc, path, query, ""))
    return normal if len(normal) <= MAX_URL_CHARS else ""


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
# Characters a URL cannot hold as they are: what is not ASCII (an IRI's letters), controls, space, and
# those browsers escape in a path or query (WHATWG URL's percent-encode sets).
_UNSAFE = re.compile(r'[^\x21-\x7e]|["<>`{}]')


def _normal_escapes(part: str) -> str:
    """A path or query in one spelling (RFC 3986 6.2.2): unsafe characters percent-encoded as UTF-8,
    escapes of unreserved characters decoded (%7E is ~), the others' hex digits upper-case (%c3%a9 is
    %C3%A9). Reserved characters keep their escapes: /a%2Fb is not /a/b, nor ?q=%26 ?q=&."""
    part = _UNSAFE.sub(lambda m: quote(m.group(), safe=""), part)
    if "%" not in part:
        return part
    return _ESCAPE.sub(lambda m: ch if (ch := chr(int(m.group(1), 16))) in _UNRESERVED else m.group().upper(), part)


def remove_dot_segments(path: str) -> str:
    """An absolute path without its "." and ".." segments (RFC 3986 5.2.4), as the server resolves it:
    robots.txt is matched, and pages told apart, by the path that is requested."""
    if "." not in path:
        return path
    segments = path.split("/")
    out: list[str] = []
    for n, segment in enumerate(segments):
        if segment in (".", ".."):
            if segment == ".." and len(out) > 1:
                out.pop()
            if n == len(segments) - 1:
                out.append("")   # "/a/b/.." is the directory "/a/"
            continue
        out.append(segment)
    return "/".join(out) if out != [""] else "/"


def ascii_host(host: str) -> str:
    """A host name lower-cased, an internationalized one in its ASCII (punycode) form, as browsers map it
    (UTS 46, non-transitional), so that both spellings name one site; '' when it cannot be encoded.
    ASCII names are left as they are: IDNA's rules would refuse names that resolve (an underscore); but
    not one with a label that only looks like such an ASCII form ("xn--zz"): '' too."""
    host = host.lower()
    if host.isascii():
        return "" if false_a_label(host) else host
    try:
        mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
        return ".".join(label if label.isascii() else idna.alabel(label).decode("ascii")
                        for label in mapped.split("."))
    except (idna.IDNAError, UnicodeError):
        return ""


def site_of(url: str) -> str:
    """The site of a URL, what a crawl's scope and Fetch's website are made of: its host and port, the
    scheme's default port left out (http 80, https 443), so http://x/ and https://x/ are one site and
    http://x:8000/ another; '' when it is no http(s) URL."""
    normal = normalize_url(url)
    return urlsplit(normal).netloc if normal else ""


def require_url(url: str) -> str:
    normal = normalize_url(url)
    if not normal:
        try:
            problem = host_problem((urlsplit(url.strip()).hostname or "").lower())
        except ValueError:
            problem = ""
        raise InvalidArgument(f"not an http(s) URL: {url!r}" + (f" ({problem})" if problem else ""))
    return normal
