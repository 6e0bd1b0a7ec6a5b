"""CPU of reading misspelt words (services/search/spelling.py) per message, in process.

    .venv/bin/python -m bench.spelling_cost

Times the read of a key's vocabulary (its words, and how long `ts_stat` took), then
`Vocabularies.correct` with the key's vocabulary held (what every Plan of a message with a
word that is not English pays; a message of English words pays `suspects` alone) over three sets of
messages: the dev questions of the help-site evaluation against their site's vocabulary, the
scale benchmark's synthetic questions (every one has made-up words) against a synthetic key's, and
English questions. Needs the local PostgreSQL with the dev keys (`python -m bench.eval_dev` made
them) and the synthetic keys (`make bench ARGS="--only search"` made them).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import asyncpg

from bench.eval_sites import discover
from services.search import synthetic
from services.search.spelling import Vocabularies, word_frequencies
from services.settings import Settings


async def _timed(vocabularies: Vocabularies, key_id: str, messages: list[str]) -> tuple[float, float, float, int]:
    started = time.perf_counter()
    vocabulary = await vocabularies.of(key_id, 0)
    read_ms = (time.perf_counter() - started) * 1000 if vocabulary is not None and vocabularies.loads else 0.0
    spent, changed = [], 0
    for _ in range(3):
        spent.clear()
        for message in messages:
            started = time.perf_counter()
            _, read_as = await vocabularies.correct(key_id, 0, message)
            spent.append(time.perf_counter() - started)
            changed += bool(read_as)
    spent.sort()
    return read_ms, statistics.median(spent) * 1e6, spent[int(0.99 * (len(spent) - 1))] * 1e6, changed // 3


async def main() -> None:
    word_frequencies()
    pool = await asyncpg.create_pool(Settings().postgres_dsn, min_size=1, max_size=2)
    vocabularies = Vocabularies(pool, wait=60.0)     # each key's first read is timed whole
    rng = random.Random(3)
    words = synthetic.vocabulary()
    sets = [(f"evaldev-{site.name}", f"dev questions, {site.name}", [q.text for q in site.questions if q.split == "dev"])
            for site in discover() if site.root is not None and any(q.split == "dev" for q in site.questions)]
    sets.append((synthetic.key_id(1), "synthetic questions", [synthetic.sample_question(rng, words) for _ in range(2000)]))
    sets.append(("evaldev-keelcard", "English only", ["How do I reset my password?", "When will my card arrive?"] * 200))
    print(f"{'messages':32}{'n':>6}{'words read':>11}{'in ms':>7}{'median µs':>11}{'p99 µs':>9}{'read otherwise':>16}")
    try:
        for key_id, name, messages in sets:
            fresh = vocabularies.held(key_id) is None
            read_ms, median, p99, changed = await _timed(vocabularies, key_id, messages)
            words = len(vocabularies.held(key_id).vocabulary)
            took = f"{read_ms:7.1f}" if fresh else f"{'':7}"
            print(f"{name:32}{len(messages):6}{words:11}{took}{median:11.1f}{p99:9.1f}{changed:16}")
    finally:
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
