"""Whether a URL's host can be asked for at all: a DNS name or an IP address. One rule for the search
service's checks of a key's website and a document's url and for the scraper's Fetch."""

from __future__ import annotations

import ipaddress
import re

import idna

MAX_HOST_CHARS = 253
MAX_LABEL_CHARS = 63
_LABEL = re.compile(r"[a-z0-9_-]+")          # ASCII labels as resolvers take them (an underscore too)
_NUMBER = re.compile(r"[0-9]+|0x[0-9a-f]*")  # a last label browsers read as part of an IPv4 address


def false_a_label(host: str) -> str:
    """The first label of `host` that starts as an internationalized name's ASCII form ("xn--") and is
    none under IDNA 2008 ("xn--zz", an emoji's "xn--ls8h"); "" when there is none. The HTTP client
    decodes such a host to send it, and fails on it."""
    for label in host.split("."):
        if label[:4].lower() == "xn--":
            try:
                idna.ulabel(label)
            except (idna.IDNAError, UnicodeError):
                return label
    return ""


def host_problem(host: str) -> str:
    """Why `host` (urlsplit's hostname: lower case, IPv6 without brackets) can be neither a DNS name
    nor an IP address; "" when it can be one. An internationalized name is taken as browsers and the
    scraper map it (UTS 46, non-transitional)."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.strip("[]"))
            return ""
        except ValueError:
            return "the host is no IPv6 address"
    if not host.isascii():
        try:
            mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
            host = ".".join(label if label.isascii() else idna.alabel(label).decode("ascii")
                            for label in mapped.split("."))
        except (idna.IDNAError, UnicodeError):
            return "the host is no internationalized domain name"
    name = host.removesuffix(".")        # the root's dot of a fully qualified name
    if len(name) > MAX_HOST_CHARS:
        return f"the host name is {len(name)} characters long; the limit is {MAX_HOST_CHARS}"
    labels = name.split(".")
    if not all(labels):
        return "the host name has an empty label"
    if longest := max((label for label in labels if len(label) > MAX_LABEL_CHARS), key=len, default=""):
        return f"a label of the host name is {len(longest)} characters long; the limit is {MAX_LABEL_CHARS}"
    if not all(_LABEL.fullmatch(label) for label in labels):
        return ("the host name holds a character no host name has (letters, digits, '-' and '_' in "
                "dot-separated labels)")
    if label := false_a_label(name):
        return f"the label {label!r} is written as an internationalized name's ASCII form but is none"
    if _NUMBER.fullmatch(labels[-1]):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            return "the host ends in a number but is no IPv4 address (four numbers of 0 to 255)"
    return ""
