"""Pages of a document are written in the order they were crawled, whatever the order they reach the
indexer in: after a rebalance, a partition's former owner may write a page late, after the new owner
wrote a newer one (services/search/indexer.py `_in_order`). Here the older page comes after the newer
one on the topic, as such a late write reaches PostgreSQL after the newer one."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.common.pb.parley.v1 import events_pb2
from tests.conftest import make_key
from tests.search.test_indexer import chunks_by_document, hand_over, page

pytestmark = pytest.mark.integration

NOW = datetime.now(timezone.utc)


def crawled(p: events_pb2.KnowledgePage, seconds: float, old_document: str = "") -> events_pb2.KnowledgePage:
    """The page as crawled `seconds` from now (its occurred_at)."""
    p.occurred_at.FromDatetime(NOW + timedelta(seconds=seconds))
    p.old_document = old_document
    return p


async def _version(pg, key_id: str) -> int:
    return await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key_id)


async def test_a_page_crawled_before_the_one_written_changes_nothing(services, search, admin, pg, settings):
    key = await make_key(search, admin, "page-order", faq=[], docs=[])
    doc = "https://shop.example/order/returns.html"
    await hand_over(settings, crawled(page(key.id, doc, "Returns are accepted within 60 days."), 0))
    version = await _version(pg, key.id)
    await hand_over(settings, crawled(page(key.id, doc, "Returns are accepted within 30 days."), -60))
    assert await chunks_by_document(pg, key.id) == {doc: ["Returns are accepted within 60 days."]}
    assert await _version(pg, key.id) == version, "nothing changed, so the answer caches stay"

    await hand_over(settings, crawled(page(key.id, doc, removed=True), 1))
    await hand_over(settings, crawled(page(key.id, doc, "Returns are accepted within 30 days."), -30))
    assert doc not in await chunks_by_document(pg, key.id), "a page removed since came back"

    await hand_over(settings, crawled(page(key.id, doc, "Returns are accepted within 90 days."), 2))
    assert await chunks_by_document(pg, key.id) == {doc: ["Returns are accepted within 90 days."]}


async def test_a_page_crawled_before_its_document_moved_does_not_bring_it_back(services, search, admin, pg,
                                                                                settings):
    key = await make_key(search, admin, "page-order-moved", faq=[], docs=[])
    old, new = "https://shop.example/order/shipping.html", "https://shop.example/order/delivery.html"
    await hand_over(settings, crawled(page(key.id, new, "We deliver in two days."), 0, old_document=old))
    await hand_over(settings, crawled(page(key.id, old, "We ship in five days."), -60))
    assert await chunks_by_document(pg, key.id) == {new: ["We deliver in two days."]}
