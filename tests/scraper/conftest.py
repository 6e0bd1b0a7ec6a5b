"""Fixtures of the scraper tests: the sample site on 127.0.0.1, the scraper stub, a key to crawl into."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deploy.local.sample_site.server import SampleSite
from services.common.grpc_server import channel
from services.common.pb.parley.v1 import scraper_pb2_grpc
from tests.conftest import TestKey, make_key


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
