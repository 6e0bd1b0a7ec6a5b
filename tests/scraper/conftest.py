"""Fixtures of the scraper tests: the sample site on 127.0.0.1, the scraper stub, a key to crawl into."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deploy.local.sample_site.server import SampleSite
from services.common.grpc_server import channel
from services.common.pb.parley.v1 import scraper_pb2_grpc
from services.common.pb.parley.v1 import search_pb2
from tests.conftest import RUN_ID, TestKey, make_key


@pytest.fixture(scope="session")
async def sample_site() -> AsyncIterator[SampleSite]:
    site = SampleSite(slow_seconds=1.0)
    await site.start()
    yield site
    await site.stop()


@pytest.fixture(scope="session")
async def scraper(services, settings) -> AsyncIterator[scraper_pb2_grpc.ScraperServiceStub]:
    async with channel(settings.scraper_addr) as ch:
        yield scraper_pb2_grpc.ScraperServiceStub(ch)


@pytest.fixture(scope="session")
async def site_key(search, admin) -> TestKey:
    """A key whose knowledge is only what the crawler writes."""
    return await make_key(search, admin, "site", faq=[], docs=[])


@pytest.fixture(scope="session")
async def web_key(search, admin, sample_site) -> TestKey:
    """A key whose website is the sample site: Fetch reads that host for it, and only that host."""
    reply = await search.CreateProductKey(search_pb2.CreateProductKeyRequest(
        name="Test web", id=f"t-{RUN_ID}-fetch-site", website=sample_site.base_url + "/"), metadata=admin, timeout=10)
    return TestKey(reply.key.id, reply.product_key)
