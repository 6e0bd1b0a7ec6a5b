"""A misspelt word of a message read as the key's own word before retrieval ("swiss acount" -> "account").

Customers misspell ("acount", "recieve", "subscripton"). The model splits such a word into pieces
that mean little, the full-text arm finds no chunk holding it, and the decision counts it as a thing
the knowledge never names, which can answer NO_ANSWER to a question the pages answer. So before
retrieval, a word that is neither English nor in the key's knowledge is read as the key's word
nearest to it in spelling, when one is near enough:

- **a word**: letters only, standing alone (not in a token with a digit, "@", "/" or an inner dot:
  codes, model names, addresses, links; a hyphen parts words);
- **suspect**: 4 letters or more, ASCII, no capital after its first letter (codes, "CHF", "iDEAL"),
  and not an English word (Zipf frequency below `ENGLISH_ZIPF` in wordfreq's English list);
- **not the key's**: the key's vocabulary (the words of its chunks: titles, FAQ questions, content)
  does not hold it, so product and brand names of the key are kept;
- **near**: one edit (insertion, deletion, substitution or transposition of two neighbours) for a
  word of up to 7 letters, two from 8; the same first letter, so "xero" is never read as "zero";
- **much more likely**: the key's word is `MORE_COMMON` more common in English (Zipf) than the word,
  as a typo is much rarer than what it misspells ("recieve" 2.75, "receive" 4.85), or neither is
  English at all (a product name misspelt); so "prorated" is not read as "promoted", nor "rebook" as
  "reboot";
- of several, the fewest edits, then the fewest letters inserted or deleted ("mony": "money" before
  "many"), then the word the key uses most.

At most `MAX_SUSPECTS` distinct words are read per message, and a message whose words are mostly
suspects (another language, a paste of codes) is searched as written. The vocabulary is read from
PostgreSQL the first time a key's message has a suspect word and again once the key's knowledge
version is newer (at most every `REFRESH_SECONDS`); a Plan waits for it at most `READ_WAIT` seconds
(the read goes on, and the message is searched as written meanwhile), and a read that fails leaves
the message as written. Of a key with more than `VOCABULARY_CHUNKS` chunks it reads that many, and a
word it would change is first looked up in the key's full-text index. Least recently used keys are
dropped beyond `MAX_WORDS` words.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
import string
import time
from collections import OrderedDict
from typing import NamedTuple

import asyncpg
from rapidfuzz import process
from rapidfuzz.distance import OSA, Indel

logger = logging.getLogger(__name__)

ENGLISH_ZIPF = 3.0          # ~28k English words; "recieve" (2.75), "adress" (2.39) are below it
MORE_COMMON = 2.0           # Zipf by which the key's word is more common than the word it reads
MIN_LENGTH = 4
LONG_WORD = 8               # from this length, two edits
MAX_SUSPECTS = 8            # distinct words read per message at most
FOREIGN_SHARE = 0.5         # more suspects than this share of the message's words: searched as written
VOCABULARY_CHUNKS = 5000    # a larger key's vocabulary comes from this many of its chunks
VOCABULARY_WORDS = 50_000   # the key's most used words at most
MAX_WORDS = 200_000         # words of all the keys kept (~136 bytes each; least recently used keys dropped)
REFRESH_SECONDS = 1.0       # a key's vocabulary is read again at most this often
READ_WAIT = 0.25            # how long a Plan waits for a key's vocabulary to be read

_TOKEN = re.compile(r"\S+")
_APOSTROPHES = "'\u2019\u2018`\u00b4\u02bc"
_PART = re.compile(rf"[^\W\d_]+(?:[{_APOSTROPHES}][^\W\d_]+)*")
_EDGES = string.punctuation + _APOSTROPHES + "\u201c\u201d\u00ab\u00bb\u2026\u00bf\u00a1"
_NOT_WORDS = frozenset("@/\\_")

# The key's words, from up to $2 of its chunks (the newest): PostgreSQL's 'simple' parser (lower case, no
# stemming). nentry: how often the key uses each.
_VOCABULARY = """
SELECT word, nentry FROM ts_stat(format(
    'SELECT to_tsvector(''simple'', coalesce(title, '''') || '' '' || coalesce(question, '''') || '' '' || content)
     FROM knowledge_chunks WHERE product_key_id = %L ORDER BY id DESC LIMIT %s', $1::text, $2::int))
WHERE length(word) >= $3 AND word ~ '^[a-z]+$'
ORDER BY nentry DESC, word
LIMIT $4
"""
_MORE_CHUNKS = """
SELECT count(*) > $2 FROM (SELECT 1 FROM knowledge_chunks WHERE product_key_id = $1 LIMIT ($2::int + 1)) AS c
"""
# The words some chunk of the key holds (its full-text index; spelling applies to English keys only).
_HELD = """
SELECT w FROM unnest($2::text[]) AS w
WHERE EXISTS (SELECT 1 FROM knowledge_chunks WHERE product_key_id = $1 AND tsv @@ plainto_tsquery('english', w))
"""


@functools.cache
def word_frequencies() -> dict[str, float]:
    """wordfreq's English words (its large list) with their Zipf frequency: log10 of occurrences per
    billion words. Made once (~0.4 s, ~30 MB); its own caches of the list are dropped after."""
    import wordfreq

    zipf = {w: round(math.log10(f) + 9, 2) for w, f in wordfreq.get_frequency_dict("en", wordlist="large").items()
            if w.isascii() and w.isalpha()}
    wordfreq.get_frequency_dict.cache_clear()
    wordfreq.get_frequency_list.cache_clear()
    return zipf


def _words(text: str) -> list[re.Match]:
    """The text's words that spelling may read: see the module's docstring."""
    found = []
    for token in _TOKEN.finditer(text):
        t = token.group()
        core = t.strip(_EDGES)
        if not core or "." in core or any(c.isdigit() or c in _NOT_WORDS for c in t):
            continue
        start = token.start() + len(t) - len(t.lstrip(_EDGES))
        found.extend(_PART.finditer(text, start, start + len(core)))
    return found


def suspects(text: str) -> list[re.Match]:
    """The words of the text that may be misspelt, none if they are most of its words."""
    zipf = word_frequencies()
    words = _words(text)
    found = [m for m in words if len(w := m.group()) >= MIN_LENGTH and w.isascii() and w.isalpha()
             and w[1:].islower() and zipf.get(w.lower(), 0.0) < ENGLISH_ZIPF]
    foreign = len({m.group().lower() for m in found}) >= 3 and len(found) > FOREIGN_SHARE * len(words)
    return [] if foreign else found


class Vocabulary:
    """A key's words with how often it uses each, by first letter for the nearest-word search.
    `complete`: read from all of the key's chunks (else a word missing from it may still be the key's)."""

    def __init__(self, counts: dict[str, int], complete: bool = True) -> None:
        self.counts = counts
        self.complete = complete
        self._by_initial: dict[str, list[str]] = {}
        for word in counts:
            self._by_initial.setdefault(word[0], []).append(word)

    def __len__(self) -> int:
        return len(self.counts)

    def nearest(self, word: str) -> str | None:
        """The key's word that a misspelt `word` (lower case) stands for, or None."""
        if word in self.counts:
            return None
        zipf = word_frequencies()
        own = zipf.get(word, 0.0)
        limit = 1 if len(word) < LONG_WORD else 2
        found = [f for f in process.extract(word, self._by_initial.get(word[0], ()), scorer=OSA.distance,
                                            score_cutoff=limit, limit=None)
                 if zipf.get(f[0], 0.0) - own >= MORE_COMMON or own == zipf.get(f[0], 0.0) == 0.0]
        if not found:
            return None
        return min(found, key=lambda f: (f[1], Indel.distance(word, f[0]), -self.counts[f[0]], f[0]))[0]


def corrected(text: str, vocabulary: Vocabulary, found: list[re.Match] | None = None,
              kept: frozenset[str] = frozenset()) -> tuple[str, list[tuple[str, str]]]:
    """The text with its misspelt words read as the key's, and [(word, read as)] (each word once).
    `kept`: words (lower case) left as they are."""
    changes: dict[str, str | None] = {}
    out: list[str] = []
    end = 0
    for m in suspects(text) if found is None else found:
        word = m.group().lower()
        if word not in changes:
            if len(changes) == MAX_SUSPECTS:
                break
            changes[word] = None if word in kept else vocabulary.nearest(word)
        near = changes[word]
        if near is None:
            continue
        out += [text[end:m.start()], near.capitalize() if m.group()[0].isupper() else near]
        end = m.end()
    read = [(w, r) for w, r in changes.items() if r is not None]
    return ("".join(out) + text[end:], read) if read else (text, [])


class _Held(NamedTuple):
    version: int
    vocabulary: Vocabulary
    read_at: float          # when its read started (monotonic)


class Vocabularies:
    """Each key's vocabulary, one read per key at a time, least recently used keys dropped beyond
    MAX_WORDS words (see the module's docstring for when a key's is read)."""

    def __init__(self, pool: asyncpg.Pool, max_words: int = MAX_WORDS, refresh_seconds: float = REFRESH_SECONDS,
                 wait: float = READ_WAIT) -> None:
        self._pool = pool
        self.max_words = max_words
        self.refresh_seconds = refresh_seconds
        self.wait = wait
        self._keys: OrderedDict[str, _Held] = OrderedDict()
        self.words = 0
        self._loading: dict[str, asyncio.Task] = {}
        self._failed: dict[str, float] = {}      # when a key's last read failed (monotonic)
        self.loads = 0

    def held(self, key_id: str) -> _Held | None:
        return self._keys.get(key_id)

    async def of(self, key_id: str, version: int) -> Vocabulary | None:
        """The key's vocabulary at `version` if it can be had within `wait` seconds, else the one held
        (None: none yet)."""
        held = self._keys.get(key_id)
        if held is not None:
            self._keys.move_to_end(key_id)
            if held.version >= version:
                return held.vocabulary
        last = max(held.read_at if held is not None else -math.inf, self._failed.get(key_id, -math.inf))
        if key_id in self._loading or time.monotonic() - last >= self.refresh_seconds:
            try:
                return await asyncio.wait_for(asyncio.shield(self._load_under_way(key_id, version)), self.wait)
            except Exception:   # noqa: BLE001 - the read goes on, or failed (logged by _loaded): searched as written
                pass
        return held.vocabulary if held is not None else None

    async def correct(self, key_id: str, version: int, text: str) -> tuple[str, list[tuple[str, str]]]:
        """The text as searched: its misspelt words read as the key's (see the module's docstring)."""
        found = suspects(text)
        if not found:
            return text, []
        vocabulary = await self.of(key_id, version)
        if vocabulary is None:
            return text, []
        spelt, read = corrected(text, vocabulary, found)
        if read and not vocabulary.complete:
            held = await self._pool.fetch(_HELD, key_id, [w for w, _ in read])
            if held:
                spelt, read = corrected(text, vocabulary, found, frozenset(r["w"] for r in held))
        return spelt, read

    def spelt_now(self, key_id: str, text: str) -> str | None:
        """The text as `correct` would search it, when that is known without waiting (the vocabulary is
        held and complete, or the text has no suspect word), else None."""
        found = suspects(text)
        if not found:
            return text
        held = self._keys.get(key_id)
        return corrected(text, held.vocabulary, found)[0] if held is not None and held.vocabulary.complete else None

    def _load_under_way(self, key_id: str, version: int) -> asyncio.Task:
        task = self._loading.get(key_id)
        if task is None:
            task = self._loading[key_id] = asyncio.get_running_loop().create_task(self._load(key_id, version))
            task.add_done_callback(functools.partial(self._loaded, key_id))
        return task

    def _loaded(self, key_id: str, task: asyncio.Task) -> None:
        self._loading.pop(key_id, None)
        if not task.cancelled() and task.exception() is not None:
            self._failed[key_id] = time.monotonic()
            logger.warning("could not read the vocabulary of key %s: %s", key_id, task.exception())

    async def _load(self, key_id: str, version: int) -> Vocabulary:
        started = time.monotonic()
        rows = await self._pool.fetch(_VOCABULARY, key_id, VOCABULARY_CHUNKS, MIN_LENGTH, VOCABULARY_WORDS)
        more = len(rows) == VOCABULARY_WORDS or await self._pool.fetchval(_MORE_CHUNKS, key_id, VOCABULARY_CHUNKS)
        vocabulary = Vocabulary({r["word"]: r["nentry"] for r in rows}, complete=not more)
        self.loads += 1
        self._failed.pop(key_id, None)
        held = self._keys.pop(key_id, None)
        self.words += len(vocabulary) - (len(held.vocabulary) if held is not None else 0)
        self._keys[key_id] = _Held(version, vocabulary, started)
        while len(self._keys) > 1 and self.words > self.max_words:
            self.words -= len(self._keys.popitem(last=False)[1].vocabulary)
        return vocabulary
