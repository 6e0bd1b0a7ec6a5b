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


# An escape sequence that has not ended yet: ESC alone, a CSI without its final byte, an OSC without
# its terminator (or with half of ST, its ESC).
_UNFINISHED_ESCAPE = re.compile("\x1b(?:\\[[0-?]*[ -/]*|\\][^\x07\x1b]*\x1b?)?")


class StorableStream:
    """`storable` over text that arrives in pieces (an LLM's stream): what is fed comes out clean, and
    an escape sequence cut between two pieces is held back until it ends, so no part of it (`[31m`)
    gets through. `flush` at the end gives what is held, cleaned."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, piece: str) -> str:
        text = self._held + piece
        self._held = ""
        esc = text.find("\x1b")
        while esc != -1:
            if _UNFINISHED_ESCAPE.fullmatch(text, esc):
                self._held, text = text[esc:], text[:esc]
                break
            esc = text.find("\x1b", esc + 1)
        return storable(text)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return storable(text)


# Letters and symbols that render as nothing: the Hangul fillers and the blank Braille pattern.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def is_blank(text: str) -> bool:
    """Whether `text` shows nothing: only white space, controls and format characters (zero-width
    spaces and joiners, the byte-order mark, bidi marks), marks with no character to sit on
    (variation selectors, the combining grapheme joiner, stray accents) and the blank fillers, which
    a reader cannot tell from empty."""
    return all(ch.isspace() or ch in _INVISIBLE
               or unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me") for ch in text)


# Prose punctuation: what ends or breaks up a sentence, quotes and brackets. A question does not
# change with it ("hours?", "hours"); symbols and the marks that name things stay ("C#" and "C++",
# "50%", "👍" and "👎" are different questions). Written so that Python's `re` and PostgreSQL's
# regular expressions read it alike.
PROSE_PUNCTUATION = ("[!\"'(),\\-.:;?\\[\\]{}\u00a1\u00bf\u00ab\u00bb\u2018-\u201f\u2039\u203a"
                     "\u2010-\u2015\u2026\u00b7\u3001\u3002\u300c-\u3011\u3014\u3015]")
