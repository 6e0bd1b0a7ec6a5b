"""How the indexer groups a Kafka fetch into model calls (no stack needed)."""

from __future__ import annotations


def test_the_indexer_embeds_a_large_fetch_in_runs_of_at_most_64_chunks():
    from types import SimpleNamespace

    from services.common.pb.parley.v1 import events_pb2
    from services.search.indexer import BATCH_CHUNKS, batches

    def record(chunks: int) -> SimpleNamespace:
        page = events_pb2.KnowledgePage(product_key_id="k", document="d", chunks=[f"c{i}" for i in range(chunks)])
        return SimpleNamespace(value=page.SerializeToString())

    records = [record(10) for _ in range(32)] + [record(100), record(3)]
    runs = batches(records)
    assert [r for run in runs for r in run] == records                  # all of them, in order
    assert [len(run) for run in runs] == [6, 6, 6, 6, 6, 2, 1, 1]
    assert all(sum(len(events_pb2.KnowledgePage.FromString(r.value).chunks) for r in run) <= BATCH_CHUNKS
               for run in runs if len(run) > 1)
    assert batches([]) == []
