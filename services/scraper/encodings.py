"""What a fetched document's bytes say: its text, decoded as a browser would, whether it is binary, and
whether text served as plain is an HTML document."""

from __future__ import annotations

import codecs
import re

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


# A document served as text/plain that is an HTML document all the same (a misconfigured server): read as
# HTML, not indexed as markup. Only an unmistakable start counts: a doctype or an <html> tag, after white
# space and comments.
_HTML_START = re.compile(r"<(?:!doctype\s+html|html[\s>])", re.IGNORECASE)


def looks_like_html(text: str) -> bool:
    """Whether `text` starts as an HTML document (within its first 4 KiB; comments skipped by search,
    not by a pattern that could backtrack)."""
    head, at = text[:4096], 0
    while True:
        at = len(head) - len(head[at:].lstrip(" \t\r\n\f\ufeff"))
        if not head.startswith("<!--", at):
            return bool(_HTML_START.match(head, at))
        end = head.find("-->", at + 4)
        if end < 0:
            return False
        at = end + 3
