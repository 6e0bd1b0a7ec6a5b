"""A message's content terms: lower-cased words, stop words dropped, light suffixes stripped."""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOP = frozenset(
    """a an and are as at be but by can could do does did for from had has have how i if in into is it its
    me my of on or our please should so than that the their them then there these they this to was we were
    what when where which who why will with would you your yours about any tell know want need""".split()
)


def stem(word: str) -> str:
    """A light suffix stripper: enough for "bake", "baked" and "baking" to meet."""
    for suffix in ("ing", "edly", "ed", "ies", "es", "s", "ly"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


def content_terms(text: str) -> set[str]:
    return {stem(w) for w in (m.lower() for m in _WORD.findall(text)) if w not in _STOP and len(w) > 1}
