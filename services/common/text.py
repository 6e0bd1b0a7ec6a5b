"""Text made storable at the edge: what PostgreSQL `text` (and UTF-8 encoders) refuse is dropped."""

from __future__ import annotations

import re

# NUL is refused by PostgreSQL text columns (one such turn used to fail a whole metrics batch);
# lone surrogates cannot be encoded as UTF-8 at all.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` without NUL characters and lone surrogates; unchanged (the same object) when clean."""
    if not _UNSTORABLE.search(text):
        return text
    return _UNSTORABLE.sub("", text)
