"""Where the crawler may connect: addresses refused (private, loopback, link-local, metadata, reserved,
and IPv4 ones inside IPv6), checked at connect time for every fetch by the transport below, and early
for StartCrawl."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

import httpcore
import httpx

from services.common.errors import InvalidArgument, PermissionDenied

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

logger = logging.getLogger(__name__)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class BlockedAddress(PermissionDenied):
    """The URL's host resolves to an address Parley does not fetch from."""


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
            addresses = [host.strip("[]")] if is_ip(host) else await self._resolve(host, port)
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


def is_ip(host: str) -> bool:
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


async def check_host(policy: AddressPolicy, url: str, resolve: Resolver = system_resolve) -> None:
    """Early refusal (StartCrawl): the URL's host resolves to an address the policy refuses.
    Not a substitute for the connect-time check, which every fetch still goes through."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = [host] if is_ip(host) else await resolve(host, 0)
    except (OSError, UnicodeError) as exc:   # UnicodeError: not a valid host name (a label over 63 bytes)
        raise InvalidArgument(f"cannot resolve {host}: {exc}") from None
    for address in addresses:
        policy.check(host, address)
