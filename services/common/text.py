"""Text made storable at the edge: what PostgreSQL `text` (and UTF-8 encoders) refuse is dropped,
and so is what only a terminal or a text renderer acts on (control characters, escape sequences,
bidi overrides), which would otherwise reach an analyst's `psql`, a log line or an answer."""

from __future__ import annotations

import re
import unicodedata

# NUL is refused by PostgreSQL text columns (one such turn used to fail a whole metrics batch);
# lone surrogates cannot be encoded as UTF-8 at all. Terminal escape sequences (CSI `ESC [ … final`,
# OSC `ESC ] … BEL|ST`) go whole, before the lone controls; C0 and C1 controls go except tab, line
# feed and carriage return; the bidi embeddings, overrides and isolates (U+202A–U+202E,
# U+2066–U+2069) can make text read other than it is stored ("Trojan source").
_UNSTORABLE = re.compile(
    "\x1b\\[[0-?]*[ -/]*[@-~]"                  # CSI
    "|\x1b\\][^\x07\x1b]*(?:\x07|\x1b\\\\)?"    # OSC, ended by BEL or ST (or cut short)
    "|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"    # C0 and C1 controls but \t \n \r
    "|[\u202a-\u202e\u2066-\u2069]"             # bidi embeddings, overrides, isolates
    "|[\ud800-\udfff]"                          # lone surrogates
)


def storable(text: str) -> str:
    """`text` without NUL and other control characters, terminal escape sequences, bidi overrides
    and lone surrogates; unchanged (the same object) when clean."""
    if not _UNSTORABLE.search(text):
        return text
    return _UNSTORABLE.sub("", text)


def is_blank(text: str) -> bool:
    """Whether `text` shows nothing: only white space, controls and format characters (zero-width
    spaces and joiners, the byte-order mark, bidi marks), which a reader cannot tell from empty."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp") for ch in text)
