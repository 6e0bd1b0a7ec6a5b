"""A misspelt word of a message read as the key's own word before retrieval ("swiss acount" -> "account").

Customers misspell ("acount", "recieve", "subscripton"). The model splits such a word into pieces
that mean little, the full-text arm finds no chunk holding it, and the decision counts it as a thing
the knowledge never names, which can answer NO_ANSWER to a question the pages answer. So before
retrieval, a word that is neither English nor in the key's knowledge is read as the key's word
nearest to it in spelling, when one is near enough:

- **suspect**: 4 letters or more, not an English word (Zipf frequency below `ENGLISH_ZIPF` in
  wordfreq's English list), no apostrophe, no capital after its first letter (codes, "CHF", "iDEAL");
- **not the key's**: the key's vocabulary (the words of its chunks: titles, FAQ questions, content)
  does not hold it, so product and brand names of the key are kept;
- **near**: one edit (insertion, deletion, substitution or transposition of two neighbours) for a
  word of up to 7 letters, two from 8; the same first letter, so "xero" is never read as "zero";
- of several, the fewest edits, then the fewest letters inserted or deleted ("mony": "money" before
  "many"), then the word the key uses most.

An English word is never changed ("police" stays, whatever the key says of its policy), nor a word
with nothing near it (a brand the key never names stays unknown to the decision). The vocabulary is
read from PostgreSQL the first time a key's message has a suspect word, from at most
`VOCABULARY_CHUNKS` of its chunks, read again in the background after its knowledge changed (at most
every `REFRESH_SECONDS`), and kept for the most recently used keys.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections import OrderedDict
from typing import NamedTuple

import asyncpg
from rapidfuzz import process
from rapidfuzz.distance import OSA, Indel

logger = logging.getLogger(__name__)

ENGLISH_ZIPF = 3.0          # ~28k English words; "recieve" (2.75), "adress" (2.39) are below it
MIN_LENGTH = 4
LONG_WORD = 8               # from this length, two edits
VOCABULARY_CHUNKS = 5000    # a larger key's vocabulary comes from this many of its chunks
VOCABULARY_WORDS = 50_000   # the key's most frequent words at most
MAX_WORDS = 500_000         # words of all the keys kept (least recently used keys dropped first)
REFRESH_SECONDS = 10.0      # a key's vocabulary is read again at most this often

_WORD = re.compile(r"[A-Za-z]+(?:['\u2019][A-Za-z]+)*")      # with its apostrophes, straight or curly

# The key's words, from up to $2 of its chunks: PostgreSQL's 'simple' parser (lower case, no stemming).
_VOCABULARY = """
SELECT word, nentry FROM ts_stat(format(
    'SELECT to_tsvector(''simple'', coalesce(title, '''') || '' '' || coalesce(question, '''') || '' '' || content)
     FROM knowledge_chunks WHERE product_key_id = %L LIMIT %s', $1::text, $2::int))
WHERE length(word) >= $3 AND word ~ '^[a-z]+$'
ORDER BY nentry DESC, word
LIMIT $4
"""


@functools.cache
def english_words() -> frozenset[str]:
    """The English words at or above ENGLISH_ZIPF (wordfreq's large list). Its caches of the whole list
    (~25 MB) are dropped once the set is made."""
    import wordfreq

    floor = 10 ** (ENGLISH_ZIPF - 9)        # Zipf frequency z is a frequency of 10**(z - 9)
    words = frozenset(w for w, f in wordfreq.get_frequency_dict("en", wordlist="large").items()
                      if f >= floor and w.isascii() and w.isalpha())
    wordfreq.get_frequency_dict.cache_clear()
    wordfreq.get_frequency_list.cache_clear()
    return words


def suspects(text: str) -> list[re.Match]:
    """The words of the text that may be misspelt: long enough, plain, and not English."""
    english = english_words()
    return [m for m in _WORD.finditer(text)
            if len(w := m.group()) >= MIN_LENGTH and w.isalpha() and w[1:].islower() and w.lower() not in english]


class Vocabulary:
    """A key's words with how many of its chunks hold each, by first letter for the nearest-word search."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self._by_initial: dict[str, list[str]] = {}
        for word in counts:
            self._by_initial.setdefault(word[0], []).append(word)

    def __len__(self) -> int:
        return len(self.counts)

    def nearest(self, word: str) -> str | None:
        """The key's word that a misspelt `word` (lower case) stands for, or None."""
        if word in self.counts:
            return None
        limit = 1 if len(word) < LONG_WORD else 2
        found = process.extract(word, self._by_initial.get(word[0], ()), scorer=OSA.distance,
                                score_cutoff=limit, limit=None)
        if not found:
            return None
        return min(found, key=lambda f: (f[1], Indel.distance(word, f[0]), -self.counts[f[0]], f[0]))[0]


def corrected(text: str, vocabulary: Vocabulary, found: list[re.Match] | None = None
              ) -> tuple[str, list[tuple[str, str]]]:
    """The text with its misspelt words read as the key's, and [(word, read as)]."""
    changes: list[tuple[str, str]] = []
    out: list[str] = []
    end = 0
    for m in suspects(text) if found is None else found:
        word = m.group()
        near = vocabulary.nearest(word.lower())
        if near is None:
            continue
        if word[0].isupper():
            near = near.capitalize()
        out += [text[end:m.start()], near]
        end = m.end()
        changes.append((word, near))
    return ("".join(out) + text[end:], changes) if changes else (text, [])


class _Held(NamedTuple):
    version: int
    vocabulary: Vocabulary
    read_at: float          # when its load started (monotonic)


class Vocabularies:
    """Each key's vocabulary, one load per key at a time, least recently used keys dropped beyond
    MAX_WORDS words. A key's first load is awaited; a newer knowledge version is read in the background,
    at most every REFRESH_SECONDS, while the vocabulary held serves (a crawl changes the version with
    every page, and a word or two more or less changes few readings)."""

    def __init__(self, pool: asyncpg.Pool, max_words: int = MAX_WORDS, refresh_seconds: float = REFRESH_SECONDS
                 ) -> None:
        self._pool = pool
        self.max_words = max_words
        self.refresh_seconds = refresh_seconds
        self._keys: OrderedDict[str, _Held] = OrderedDict()
        self.words = 0
        self._loading: dict[str, asyncio.Task] = {}
        self.loads = 0

    def held(self, key_id: str) -> _Held | None:
        return self._keys.get(key_id)

    async def of(self, key_id: str, version: int) -> Vocabulary:
        held = self._keys.get(key_id)
        if held is None:
            return await asyncio.shield(self._load_under_way(key_id, version))
        self._keys.move_to_end(key_id)
        if held.version < version and time.monotonic() - held.read_at >= self.refresh_seconds:
            self._load_under_way(key_id, version)
        return held.vocabulary

    async def correct(self, key_id: str, version: int, text: str) -> tuple[str, list[tuple[str, str]]]:
        """The text as searched: its misspelt words read as the key's (see the module's docstring)."""
        found = suspects(text)
        if not found:
            return text, []
        return corrected(text, await self.of(key_id, version), found)

    def correct_now(self, key_id: str, text: str) -> str:
        """The corrected text if the key's vocabulary is at hand, else the text as it is."""
        held = self._keys.get(key_id)
        return corrected(text, held.vocabulary)[0] if held is not None else text

    def _load_under_way(self, key_id: str, version: int) -> asyncio.Task:
        task = self._loading.get(key_id)
        if task is None:
            task = self._loading[key_id] = asyncio.get_running_loop().create_task(self._load(key_id, version))
            task.add_done_callback(functools.partial(self._loaded, key_id))
        return task

    def _loaded(self, key_id: str, task: asyncio.Task) -> None:
        self._loading.pop(key_id, None)
        if not task.cancelled() and task.exception() is not None:     # a refresh nobody awaits is logged
            logger.warning("could not read the vocabulary of key %s: %s", key_id, task.exception())

    async def _load(self, key_id: str, version: int) -> Vocabulary:
        started = time.monotonic()
        rows = await self._pool.fetch(_VOCABULARY, key_id, VOCABULARY_CHUNKS, MIN_LENGTH, VOCABULARY_WORDS)
        vocabulary = Vocabulary({r["word"]: r["nentry"] for r in rows})
        self.loads += 1
        held = self._keys.pop(key_id, None)
        self.words += len(vocabulary) - (len(held.vocabulary) if held is not None else 0)
        self._keys[key_id] = _Held(version, vocabulary, started)
        while len(self._keys) > 1 and self.words > self.max_words:
            self.words -= len(self._keys.popitem(last=False)[1].vocabulary)
        return vocabulary
