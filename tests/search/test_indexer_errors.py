"""What the indexer does with a page whose indexing fails in a way no retry cures (a bug, a page the
model cannot take): the page is dead-lettered with its error and the pages after it are indexed.
Left to end the consumer, such a page ended every replica that took its partition, at each start."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaTimeoutError

from services.common.pb.parley.v1 import events_pb2
from services.search import indexer as module
from services.search.indexer import PageIndexer
from services.search.settings import SearchSettings

TP = TopicPartition("knowledge-pages", 0)


class _Indexing:
    """Embeds and writes pages in memory; a page whose title is "bad model" fails the model, one whose
    title is "bad write" fails the write, each with an error no retry cures."""

    def __init__(self) -> None:
        self.written: list[str] = []

    async def embeddings_of(self, documents):
        if any(d.title == "bad model" for d in documents):
            raise RuntimeError("the tokenizer cannot take this text")
        return [[b"v"] * len(d.chunks) for d in documents], None

    async def write(self, key_id, kind, document, title, source, chunks, *, replace, vectors, require):
        if title == "bad write":
            raise KeyError("a bug")
        self.written.append(document)
        return None, None, 2


class _Producer:
    async def publish(self, *args, **kwargs) -> None:
        return None


def _page(document: str, title: str) -> bytes:
    return events_pb2.KnowledgePage(product_key_id="k-1", document=document, url=document, title=title,
                                    chunks=[f"The text of {document}."]).SerializeToString()


async def test_a_page_that_fails_for_good_is_dead_lettered_and_the_pages_around_it_are_indexed():
    indexing = _Indexing()
    indexer = PageIndexer(SearchSettings(), indexing, _Producer())
    letters: list[tuple[int, str]] = []

    async def dead_letter(value: bytes, reason: str, tp: TopicPartition, offset: int) -> None:
        letters.append((offset, reason))

    indexer.dead_letter = dead_letter
    await indexer.handle_many([(_page("a", "Help"), TP, 0), (_page("b", "bad model"), TP, 1),
                               (_page("c", "bad write"), TP, 2), (_page("d", "Help"), TP, 3)])
    assert indexing.written == ["a", "d"]
    assert [offset for offset, _ in letters] == [1, 2]
    assert "RuntimeError: the tokenizer cannot take this text" in letters[0][1]
    assert "KeyError" in letters[1][1]


class _Record:
    def __init__(self, partition: int, offset: int, title: str = "Help") -> None:
        self.topic, self.partition, self.offset = TP.topic, partition, offset
        self.value = _page(f"p{partition}-{offset}", title)


class _Consumer:
    """Hands out one fetch of two runs; the first run's commit fails (the group moved on)."""

    def __init__(self, fetch: list[_Record], stop) -> None:
        self.fetch, self.stop = fetch, stop
        self.commits: list[dict] = []
        self.seeks: list[tuple[TopicPartition, int]] = []

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None):
        if not self.fetch:
            self.stop.set()
            return {}
        fetch, self.fetch = self.fetch, []
        return {TP: fetch}

    async def commit(self, offsets: dict) -> None:
        self.commits.append(offsets)
        raise CommitFailedError("the group rebalanced")

    def assignment(self) -> set:
        return {TopicPartition(TP.topic, 1)}      # partition 0 went to another member

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


async def test_after_a_failed_commit_the_runs_collected_after_it_are_left_and_ours_read_again(monkeypatch):
    monkeypatch.setattr(module, "BATCH_CHUNKS", 2)
    stop = asyncio.Event()
    fetch = [_Record(0, 10), _Record(1, 20), _Record(0, 11), _Record(1, 21)]
    consumer = _Consumer(fetch, stop)
    indexing = _Indexing()
    await module._consume(consumer, PageIndexer(SearchSettings(), indexing, _Producer()), stop)
    assert indexing.written == ["p0-10", "p1-20"]          # the first run only
    assert consumer.seeks == [(TopicPartition(TP.topic, 1), 21)]


class _BrokerAway:
    """Fails the first `failures` announcements as a broker timing out would."""

    def __init__(self, failures: int) -> None:
        self.failures, self.published = failures, []

    async def publish(self, topic, key, event, **kwargs) -> None:
        if self.failures:
            self.failures -= 1
            raise KafkaTimeoutError()
        self.published.append(event.url)


async def test_a_page_whose_announcement_the_broker_fails_is_written_and_announced_again_not_dead_lettered():
    """Its write is in PostgreSQL; dead-lettered, it would go unannounced and caches keep the old knowledge."""
    indexing, producer = _Indexing(), _BrokerAway(failures=2)
    indexer = PageIndexer(SearchSettings(), indexing, producer)
    letters: list[int] = []

    async def dead_letter(value: bytes, reason: str, tp: TopicPartition, offset: int) -> None:
        letters.append(offset)

    indexer.dead_letter = dead_letter
    await indexer.handle_many([(_page("a", "Help"), TP, 0)])
    assert letters == [] and producer.published == ["a"] and set(indexing.written) == {"a"}
