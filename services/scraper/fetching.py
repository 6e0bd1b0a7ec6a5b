"""Polite, safe HTTP fetching: address checks at connect time, redirects, size and type limits, robots.txt."""

from __future__ import annotations

import asyncio
import codecs
import functools
import ipaddress
import zlib
import logging
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import httpcore
import httpx
import idna
from protego import Protego

from services.common.errors import InvalidArgument, PermissionDenied

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

INDEXABLE_TYPES = ("text/html", "application/xhtml+xml", "text/plain")
BINARY_TYPE = "application/octet-stream"
ROBOTS_TTL_SECONDS = 600.0
ROBOTS_UNREACHABLE_TTL_SECONDS = 30.0   # an unreachable robots.txt disallows for this long, then is asked again
ROBOTS_MAX_BYTES = 500 * 1024           # RFC 9309 2.5: parsers must read at least the first 500 KiB
# Origins a Fetcher keeps politeness gates and robots.txt for: the scraper API's lives as long as its
# process, and a Fetch with the admin token may name any host.
MAX_ORIGINS = 1_000
# A 429 or 503 that says when to come back (Retry-After) is asked again then, this many times at most,
# waiting this long at most, and always within the request's deadline.
RETRY_STATUSES = (429, 503)
MAX_RETRIES = 2
MAX_RETRY_AFTER_SECONDS = 30.0
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class BlockedAddress(PermissionDenied):
    """The URL's host resolves to an address Parley does not fetch from."""


class FetchFailed(Exception):
    """A fetch that produced no usable response (network error, redirect loop, too large, ...)."""

    def __init__(self, reason: str, kind: str = "failed", response: Response | None = None,
                 permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind            # failed | too_large | robots | off_site
        self.response = response    # status and headers, when the origin answered
        self.permanent = permanent  # robots, off_site: every redirect that led there was permanent (301, 308)


def parse_networks(spec: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """`PARLEY_SCRAPER_ALLOW_NETWORKS`: comma-separated addresses or CIDRs."""
    return [ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()]


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address leads to: IPv4-mapped (::ffff:0:0/96), 6to4 (2002::/16), Teredo
    (2001::/32: server and client), NAT64 (64:ff9b::/96). Each must pass the IPv4 checks as well."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def denied_reason(ip: IPAddress) -> str:
    """Why an address is refused, or '' when it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        for inner in embedded_ipv4(ip):
            reason = denied_reason(inner)
            if reason:
                return f"{reason} (embedded in {ip})"
        if ip.ipv4_mapped is not None:
            return ""
    if ip in _METADATA:
        return "a cloud metadata address"
    for attr, what in (
        ("is_loopback", "a loopback address"), ("is_link_local", "a link-local address"),
        ("is_private", "a private address"), ("is_multicast", "a multicast address"),
        ("is_reserved", "a reserved address"), ("is_unspecified", "an unspecified address"),
        ("is_site_local", "a site-local address"),     # fec0::/10: deprecated, still routed inside some networks
    ):
        if getattr(ip, attr, False):
            return what
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "a shared (carrier-grade NAT) address"
    return ""


class AddressPolicy:
    """Refuses private, loopback, link-local, metadata and other non-public addresses unless allow-listed."""

    def __init__(self, allow: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()) -> None:
        self.allow = list(allow)

    def check(self, host: str, address: str) -> IPAddress:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if any(ip in net for net in self.allow):
            return ip
        reason = denied_reason(ip)
        if reason:
            # The caller learns why the host is refused, not which internal address it resolves to.
            logger.warning("refused to fetch from %s: %s is %s", host, ip, reason)
            raise BlockedAddress(f"refused to fetch from {host}: it resolves to {reason.split(' (embedded')[0]}")
        return ip


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, checks every address, and connects to a checked address only,
    so a name that resolves differently later (DNS rebinding) cannot slip a private address in."""

    def __init__(self, policy: AddressPolicy, resolve: Resolver = system_resolve) -> None:
        self._policy = policy
        self._resolve = resolve
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            addresses = [host.strip("[]")] if _is_ip(host) else await self._resolve(host, port)
        except (OSError, UnicodeError) as exc:   # UnicodeError: not a valid host name (a label over 63 bytes)
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
        checked = [self._policy.check(host, a) for a in addresses]
        last: Exception | None = None
        for ip in checked:
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, *args, **kwargs):  # pragma: no cover - never used
        raise httpcore.ConnectError("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """Loading the CA bundle takes tens of milliseconds: once per process, shared by every Fetcher."""
    return httpx.create_ssl_context()


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over the guarded network backend (no proxies from the environment)."""

    def __init__(self, policy: AddressPolicy, resolve: Resolver = system_resolve, max_connections: int = 100) -> None:
        # Not super().__init__(): it would build a pool (and load the CA bundle) only to be replaced.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections // 2,
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(policy, resolve),
        )


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
    ASCII names are left as they are: IDNA's rules would refuse names that resolve (an underscore)."""
    host = host.lower()
    if host.isascii():
        return host
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
        raise InvalidArgument(f"not an http(s) URL: {url!r}")
    return normal


PERMANENT_REDIRECTS = (301, 308)


class Redirect(NamedTuple):
    url: str          # normalised
    status: int


@dataclass
class Response:
    url: str                      # final URL after redirects
    status: int
    headers: httpx.Headers
    body: bytes = b""
    content_type: str = ""
    redirects: list[str] = field(default_factory=list)
    permanent: bool = True        # every redirect that led here (if any) was permanent (301, 308)

    @property
    def text(self) -> str:
        return decode_document(self.body, self.headers.get("content-type", ""))


# The encoding of a document as a browser finds it (WHATWG Encoding, "decode"; HTML, "determining the
# character encoding"), short of its full label table: a byte order mark, then the Content-Type's
# charset, then (HTML) a <meta> charset in the first 1024 bytes, then UTF-8 if the bytes are valid
# UTF-8, else windows-1252. Labels browsers read as windows-1252 (latin1, ascii) are read so too: an
# "ISO-8859-1" page's curly quotes and dashes (bytes 0x80-0x9F) are windows-1252's.
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_AS_WINDOWS_1252 = {"iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "us-ascii", "ascii", "ansi_x3.4-1968",
                    "cp819", "ibm819", "iso-ir-100", "iso_8859-1", "x-cp1252", "cp1252"}
_NOT_DOCUMENT_ENCODINGS = {"undefined", "idna", "punycode"}
_META_CHARSET = re.compile(rb"""<meta\b[^>]*?\bcharset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
# WHATWG Encoding's labels of UTF-16 that Python's codecs do not know.
_UTF16_ALIASES = {"unicode": "utf-16-le", "unicodefeff": "utf-16-le", "ucs-2": "utf-16-le", "csunicode": "utf-16-le",
                  "iso-10646-ucs-2": "utf-16-le", "unicodefffe": "utf-16-be"}


def _encoding(label: str, *, in_meta: bool = False) -> str | None:
    """The Python codec of a charset label, None when unknown."""
    label = label.strip().strip("\"'").strip().lower()
    if not label:
        return None
    if label in _AS_WINDOWS_1252:
        return "cp1252"
    try:
        info = codecs.lookup(_UTF16_ALIASES.get(label, label))
    except (LookupError, ValueError):
        return None
    if info.name.startswith("utf-16"):
        # In a <meta>, a UTF-16 label means UTF-8: bytes in UTF-16 could not have been read to find it.
        # A bare "utf-16" is little-endian (WHATWG); Python's codec would take the machine's byte order.
        return "utf-8" if in_meta else ("utf-16-le" if info.name == "utf-16" else info.name)
    # Not a text encoding a page can be in (base64, rot13, zlib: bytes-to-bytes or str-to-str codecs;
    # "undefined"; idna and punycode, which are for host names; UTF-32, which browsers do not read).
    if (not getattr(info, "_is_text_encoding", True) or info.name in _NOT_DOCUMENT_ENCODINGS
            or info.name.startswith("utf-32")):
        return None
    return info.name


def _header_encoding(content_type: str) -> str | None:
    """The codec of the Content-Type's charset parameter, None when there is none it names."""
    for part in content_type.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "charset" and (encoding := _encoding(value)):
            return encoding
    return None


def decode_document(body: bytes, content_type: str) -> str:
    """`body` as text, in the encoding a browser would use (see above); undecodable bytes become U+FFFD."""
    for bom, encoding in _BOMS:
        if body.startswith(bom):
            return body[len(bom):].decode(encoding, errors="replace")
    if encoding := _header_encoding(content_type):
        return _decode(body, encoding)
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime in ("", "text/html", "application/xhtml+xml"):
        for match in _META_CHARSET.finditer(body[:1024]):
            encoding = _encoding(match.group(1).decode("ascii"), in_meta=True)
            if encoding:
                return _decode(body, encoding)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("cp1252", errors="replace")


def _decode(body: bytes, encoding: str) -> str:
    try:
        return body.decode(encoding, errors="replace")
    except (UnicodeError, LookupError):   # a codec that fails whatever the error handler says
        return body.decode("cp1252", errors="replace")


# The first bytes of PDF, PNG, GIF, JPEG, ZIP (and so DOCX, XLSX, EPUB) and gzip files.
_BINARY_SIGNATURES = (b"%PDF-", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"PK\x03\x04", b"\x1f\x8b")


def looks_binary(body: bytes, content_type: str) -> bool:
    """Whether a body labelled as text is a file of another kind (a PDF or an image served as text/html):
    a known signature, or a NUL byte in its first 1024 bytes, which no text but UTF-16 has (WHATWG MIME
    Sniffing's binary data bytes, reduced to the one that matters)."""
    if body.startswith(_BINARY_SIGNATURES):
        return True
    if body.startswith((b"\xff\xfe", b"\xfe\xff")) or (_header_encoding(content_type) or "").startswith("utf-16"):
        return False
    return b"\x00" in body[:1024]


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """How long a response's Retry-After asks to wait (RFC 9110 10.2.3: delta-seconds or an HTTP-date,
    counted from the response's Date when it has one, for the origin's clock may not be ours); None when
    it has none or one that is negative or unreadable."""
    value = headers.get("retry-after", "").strip()
    if value.isascii() and value.isdigit():
        return float(int(value)) if len(value) <= 9 else 1e9   # far longer than any wait is allowed anyway
    when = _http_date(value)
    if when is None:
        return None
    seconds = (when - (_http_date(headers.get("date", "")) or datetime.now(timezone.utc))).total_seconds()
    return seconds if seconds >= 0 else None


def _http_date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)   # "-0000": GMT all the same


class HostGate:
    """Per-host politeness: at most `concurrency` requests in flight and `delay` between their starts."""

    def __init__(self, concurrency: int, delay: float) -> None:
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self.delay = delay
        self._next = 0.0
        self._lock = asyncio.Lock()
        self._users = 0   # requests in flight or waiting

    def idle(self) -> bool:
        """Nothing in flight or waiting, and no delay or hold pending: forgetting it loses nothing."""
        return self._users == 0 and self._next <= time.monotonic()

    async def __aenter__(self) -> None:
        self._users += 1
        try:
            await self._sem.acquire()
        except BaseException:
            self._users -= 1
            raise
        try:
            async with self._lock:
                # Again after sleeping: a hold may have come in meanwhile.
                while (wait := self._next - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                self._next = time.monotonic() + self.delay
        except BaseException:
            # Cancelled while waiting its turn (the caller's deadline): __aexit__ never runs, and a slot
            # kept here would be the site's for good (the scraper API keeps its Fetcher for its life).
            await self.__aexit__()
            raise

    def hold(self, seconds: float) -> None:
        """No request starts for `seconds` (the host asked, with Retry-After)."""
        self._next = max(self._next, time.monotonic() + seconds)

    async def __aexit__(self, *exc) -> None:
        self._sem.release()
        self._users -= 1


class Fetcher:
    """One HTTP client for a crawl job or the Fetch RPC: safe addresses, polite per host, bounded."""

    def __init__(
        self,
        *,
        user_agent: str,
        policy: AddressPolicy,
        max_bytes: int = 2_000_000,
        max_redirects: int = 5,
        timeout: float = 10.0,
        request_seconds: float = 30.0,
        host_concurrency: int = 2,
        host_delay: float = 0.25,
        resolve: Resolver = system_resolve,
        deadline_covers_wait: bool = True,
        gates: dict[str, HostGate] | None = None,
    ) -> None:
        """request_seconds bounds each request, retries included, and with deadline_covers_wait also its
        wait for a turn at the site (its slots, its delay or a Retry-After hold): a Fetch, whose caller
        waits, never waits longer. A crawl's requests queue behind the site's Crawl-delay for as long as
        it takes (deadline_covers_wait=False), bounded by the job's own time limit. `gates`: the sites'
        politeness gates, shared with other fetchers (a worker's crawl jobs of one site take turns)."""
        self.user_agent = user_agent
        self.policy = policy
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.request_seconds = request_seconds
        self.host_concurrency = host_concurrency
        self.host_delay = host_delay
        self.deadline_covers_wait = deadline_covers_wait
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(policy, resolve),
            headers={"User-Agent": user_agent, "Accept-Encoding": "gzip", "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5"},
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
        )
        self._gates: dict[str, HostGate] = {} if gates is None else gates
        self._robots: dict[str, tuple[float, Protego | None, str]] = {}   # origin -> (expiry, rules, problem)
        self._robots_lock: dict[str, asyncio.Lock] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def gate(self, url: str) -> HostGate:
        origin = _origin(url)
        gate = self._gates.get(origin)
        if gate is None:
            if len(self._gates) >= MAX_ORIGINS:
                for idle in [o for o, g in self._gates.items() if g.idle()]:   # in place: it may be shared
                    del self._gates[idle]
            gate = self._gates[origin] = HostGate(self.host_concurrency, self.host_delay)
        return gate

    async def get(
        self, url: str, *, headers: dict[str, str] | None = None, accept: Collection[str] | None = INDEXABLE_TYPES,
        obey_robots: bool = False, hosts: Collection[str] | None = None, max_bytes: int | None = None,
        cut: bool = False,
    ) -> Response:
        """GET with redirects followed by hand (each hop connects through the address check), a redirect
        limit and loop detection, and the body read only up to max_bytes and only for accepted types
        (None: any). A response of another type comes back with an empty body, and so does a binary
        file labelled as text, as application/octet-stream (unless that is accepted). With obey_robots,
        every redirect target is checked against its own site's robots.txt (the caller checked the first
        URL); with hosts (sites, as `site_of` names them: host and port), a redirect off them is not
        followed. max_bytes replaces the fetcher's page size limit for this request (sitemaps are
        larger); with cut, a larger body is cut there instead of failing. A 429 or 503 with Retry-After
        is asked again when it says (see `_request`)."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        seen: list[str] = []
        current = require_url(url)
        permanent = True
        while True:
            if current in seen:
                raise FetchFailed(f"redirect loop at {current}")
            if seen and hosts is not None and site_of(current) not in hosts:
                raise FetchFailed(f"{seen[-1]} redirects off the site, to {current}", "off_site", permanent=permanent)
            if seen and obey_robots and not await self.allowed(current):
                raise FetchFailed(f"robots.txt disallows {current} (a redirect from {seen[-1]})", "robots",
                                  permanent=permanent)
            seen.append(current)
            if _is_ip(urlsplit(current).hostname or ""):
                self.policy.check(urlsplit(current).hostname or "", urlsplit(current).hostname or "")
            try:
                got = await self._request(current, _hop_headers(headers, len(seen)), accept, limit, cut)
            except httpx.TimeoutException as exc:
                raise FetchFailed(f"timed out fetching {current}") from exc
            except TimeoutError as exc:
                raise FetchFailed(f"{current} took longer than {self.request_seconds:g} s") from exc
            except httpx.InvalidURL as exc:   # a host name httpx cannot send (spaces, control characters)
                raise FetchFailed(f"cannot fetch {current}: {exc}") from exc
            except httpx.HTTPError as exc:
                raise FetchFailed(f"cannot fetch {current}: {exc.__class__.__name__} {exc}") from exc
            if isinstance(got, Response):
                got.redirects, got.permanent = seen[:-1], permanent
                return got
            if len(seen) > self.max_redirects:
                raise FetchFailed(f"more than {self.max_redirects} redirects from {url}")
            current, permanent = got.url, permanent and got.status in PERMANENT_REDIRECTS

    async def _request(
        self, url: str, headers: dict[str, str] | None, accept: Collection[str] | None, limit: int, cut: bool,
    ) -> Response | Redirect:
        """One hop: its response, or where it redirects to. A 429 or 503 whose Retry-After can be read
        holds the host's gate that long (30 s at most), so none of its requests starts meanwhile, and is
        asked again then, twice at most, if that is before the deadline; otherwise it is the answer."""
        gate = self.gate(url)
        # httpx times each read; this, the whole request, retries included (a page sent a byte every few
        # seconds would otherwise hold its crawl job for good), and the wait for the site's turn unless
        # the fetcher's requests may queue (a crawl's).
        if self.deadline_covers_wait:
            async with asyncio.timeout(self.request_seconds) as deadline, gate:
                return await self._asked(url, headers, accept, limit, cut, gate, deadline)
        async with gate, asyncio.timeout(self.request_seconds) as deadline:
            return await self._asked(url, headers, accept, limit, cut, gate, deadline)

    async def _asked(
        self, url: str, headers: dict[str, str] | None, accept: Collection[str] | None, limit: int, cut: bool,
        gate: HostGate, deadline: asyncio.Timeout,
    ) -> Response | Redirect:
        """The exchanges of one hop, in its turn at the site: asked again after a Retry-After (see _request)."""
        retries = 0
        while True:
            got = await self._exchange(url, headers, accept, limit, cut)
            if not isinstance(got, Response) or got.status not in RETRY_STATUSES:
                return got
            wait = retry_after_seconds(got.headers)
            if wait is None:
                return got
            wait = min(wait, MAX_RETRY_AFTER_SECONDS)
            gate.hold(wait)
            if retries == MAX_RETRIES or asyncio.get_running_loop().time() + wait >= deadline.when():
                return got
            retries += 1
            logger.info("%s answered HTTP %s: asking again in %.3g s", url, got.status, wait)
            await asyncio.sleep(wait)

    async def _exchange(
        self, url: str, headers: dict[str, str] | None, accept: Collection[str] | None, limit: int, cut: bool,
    ) -> Response | Redirect:
        """One request: where it redirects to, or its response with the body of an accepted type."""
        async with self._client.stream("GET", url, headers=headers) as r:
            if r.is_redirect and "location" in r.headers:
                await _drain_small(r)
                nxt = normalize_url(r.headers["location"], url)
                if not nxt:
                    raise FetchFailed(f"redirect to an unsupported URL from {url}")
                return Redirect(nxt, r.status_code)
            ctype = r.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            resp = Response(url, r.status_code, r.headers, content_type=ctype)
            if r.status_code != 200 or (accept is not None and ctype not in accept):
                await _drain_small(r)
                return resp
            resp.body = await _read_body(r, resp, limit, cut)
            if ctype in INDEXABLE_TYPES and looks_binary(resp.body, r.headers.get("content-type", "")):
                resp.content_type = BINARY_TYPE
                if accept is not None and BINARY_TYPE not in accept:
                    resp.body = b""
            return resp

    async def robots(self, url: str) -> Protego | None:
        """The parsed robots.txt of the URL's origin (None: no rules), kept for ROBOTS_TTL_SECONDS."""
        return (await self._robots_entry(url))[1]

    async def robots_problem(self, url: str) -> str:
        """Why the robots.txt of the URL's origin could not be read ('' when it was, or is absent):
        while it cannot, nothing there is fetched."""
        return (await self._robots_entry(url))[2]

    async def _robots_entry(self, url: str) -> tuple[float, Protego | None, str]:
        origin = _origin(url)
        cached = self._robots.get(origin)
        if cached and cached[0] > time.monotonic():
            return cached
        if origin not in self._robots_lock and len(self._robots_lock) >= MAX_ORIGINS:
            self._forget_robots()
        lock = self._robots_lock.setdefault(origin, asyncio.Lock())
        async with lock:
            cached = self._robots.get(origin)
            if not cached or cached[0] <= time.monotonic():
                rules, ttl, problem = await self._load_robots(origin)
                cached = (time.monotonic() + ttl, rules, problem)
                self._robots[origin] = cached
        return cached

    def _forget_robots(self) -> None:
        """Keeps the robots.txt of at most MAX_ORIGINS origins: the expired go first, then the oldest
        half (they are read again when asked); a lock is dropped only when no one holds it."""
        now = time.monotonic()
        kept = {o: e for o, e in self._robots.items() if e[0] > now}
        if len(kept) >= MAX_ORIGINS // 2:
            kept = dict(list(kept.items())[len(kept) - MAX_ORIGINS // 2:])
        self._robots = kept
        self._robots_lock = {o: lock for o, lock in self._robots_lock.items() if lock.locked() or o in kept}

    async def _load_robots(self, origin: str) -> tuple[Protego | None, float, str]:
        """RFC 9309 2.3.1: a robots.txt that is unreachable (network error, timeout) or answers a
        server error means "complete disallow" — asked again after ROBOTS_UNREACHABLE_TTL_SECONDS;
        4xx means "no rules". (rules, seconds to keep them, why it could not be read or '')."""
        try:
            # Whatever its Content-Type says (servers label it text/html, or not at all): it is text.
            r = await self.get(origin + "/robots.txt", accept=None, max_bytes=ROBOTS_MAX_BYTES, cut=True)
        except FetchFailed as exc:
            problem = f"robots.txt of {origin} could not be read ({exc.reason})"
        else:
            if r.status < 500:
                return (_parse_robots(r) if r.status == 200 else None), ROBOTS_TTL_SECONDS, ""
            problem = f"robots.txt of {origin} could not be read (HTTP {r.status})"
        logger.warning("%s; as RFC 9309 asks, nothing there is fetched until it can be", problem)
        return DISALLOW_ALL, ROBOTS_UNREACHABLE_TTL_SECONDS, problem

    async def allowed(self, url: str) -> bool:
        """robots.txt lets the URL be fetched, matched as it is requested (normalised: a URL recorded in
        another spelling, /a/./secret, is requested as /a/secret)."""
        url = normalize_url(url) or url
        rules = await self.robots(url)
        return rules is None or rules.can_fetch(url, self.user_agent)

    async def crawl_delay(self, url: str) -> float:
        rules = await self.robots(url)
        delay = rules.crawl_delay(self.user_agent) if rules is not None else None
        return float(delay) if delay else 0.0


DISALLOW_ALL = Protego.parse("User-agent: *\nDisallow: /\n")


def _parse_robots(r: Response) -> Protego:
    """The rules of a robots.txt; one cut at ROBOTS_MAX_BYTES loses its last line, which the cut may
    have shortened ("Disallow: /a/b" to "Disallow: /", all)."""
    body = r.body.rpartition(b"\n")[0] if len(r.body) >= ROBOTS_MAX_BYTES else r.body
    return Protego.parse(decode_document(body, r.headers.get("content-type", "")))


def _hop_headers(headers: dict[str, str] | None, hop: int) -> dict[str, str] | None:
    """Conditional headers go on the first request; after a redirect only If-None-Match (the stored
    validators are the final response's, and an entity tag cannot match another resource by date)."""
    if not headers or hop == 1:
        return headers
    return {k: v for k, v in headers.items() if k.lower() == "if-none-match"} or None


async def _drain_small(r: httpx.Response, limit: int = 65536) -> None:
    """Reads the small body of a response that is not used (304, redirect, error page), so that its
    connection goes back to the pool instead of being closed; a large or unknown-length one is dropped."""
    declared = r.headers.get("content-length", "")
    if r.status_code in (204, 304) or (declared.isdigit() and int(declared) <= limit):
        await r.aread()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def _read_body(r: httpx.Response, resp: Response, limit: int, cut: bool) -> bytes:
    """The body, at most `limit` bytes: larger fails as too_large, or with cut is cut there (the rest
    is not read)."""
    declared = r.headers.get("content-length", "")
    if not cut and declared.isdigit() and int(declared) > limit:
        raise FetchFailed(f"{resp.url} is {declared} bytes; the limit is {limit}", "too_large", resp)
    body = bytearray()
    async for part in r.aiter_raw():
        body += part
        if len(body) > limit:
            if not cut:
                raise FetchFailed(f"{resp.url} is larger than {limit} bytes", "too_large", resp)
            del body[limit:]
            break
    return _decode_body(bytes(body), r.headers.get("content-encoding", ""), limit, cut)


def _decode_body(body: bytes, encoding: str, limit: int, cut: bool = False) -> bytes:
    """Content-Encoding was read raw (so the size limit applies to what crossed the wire); undo gzip here,
    bounded as well so a small gzip bomb cannot expand without limit."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return gunzip_bounded(body, limit, cut=cut)
    if encoding in ("", "identity"):
        return body
    raise FetchFailed(f"unsupported content encoding {encoding!r}")


def gunzip_bounded(data: bytes, limit: int, *, cut: bool = False) -> bytes:
    """gzip data decompressed, at most `limit` bytes: larger fails as too_large, or with cut is cut there
    (data cut short decompresses as far as it goes)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise FetchFailed(f"the gzip data is corrupt ({exc})") from None
    if len(out) > limit:
        if cut:
            return out[:limit]
        raise FetchFailed(f"decompressed body is larger than {limit} bytes", "too_large")
    return out


def new_fetcher(settings, *, resolve: Resolver = system_resolve, deadline_covers_wait: bool = True,
                gates: dict[str, HostGate] | None = None) -> Fetcher:
    """A Fetcher configured from `PARLEY_SCRAPER_*` settings (see Fetcher for deadline_covers_wait and gates)."""
    return Fetcher(
        user_agent=settings.scraper_user_agent,
        policy=AddressPolicy(parse_networks(settings.scraper_allow_networks)),
        max_bytes=settings.scraper_max_page_bytes,
        max_redirects=settings.scraper_max_redirects,
        timeout=settings.scraper_timeout_seconds,
        request_seconds=settings.scraper_request_seconds,
        host_concurrency=settings.scraper_host_concurrency,
        host_delay=settings.scraper_host_delay_seconds,
        resolve=resolve,
        deadline_covers_wait=deadline_covers_wait,
        gates=gates,
    )


async def check_host(policy: AddressPolicy, url: str, resolve: Resolver = system_resolve) -> None:
    """Early refusal (StartCrawl): the URL's host resolves to an address the policy refuses.
    Not a substitute for the connect-time check, which every fetch still goes through."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = [host] if _is_ip(host) else await resolve(host, 0)
    except (OSError, UnicodeError) as exc:   # UnicodeError: not a valid host name (a label over 63 bytes)
        raise InvalidArgument(f"cannot resolve {host}: {exc}") from None
    for address in addresses:
        policy.check(host, address)
