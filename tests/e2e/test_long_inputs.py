"""Inputs far past every limit, through the real services: the caller gets the status that names the
problem, with a message that fits gRPC's metadata (an error that echoed a 100 kB id passed the
client's metadata limit, and the caller got RESOURCE_EXHAUSTED instead)."""

from __future__ import annotations

import grpc
import pytest

from services.common.grpc_server import MAX_STATUS_MESSAGE_CHARS, channel
from services.common.pb.parley.v1 import response_pb2, scraper_pb2, scraper_pb2_grpc
from tests.conftest import rpc_error

pytestmark = pytest.mark.integration

LONG = 100_000


async def _refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return rpc_error(info)


async def test_ids_and_urls_far_past_their_limits_get_their_status_with_a_short_message(
        services, settings, admin, key_a):
    async with channel(settings.scraper_addr) as ch:
        scraper = scraper_pb2_grpc.ScraperServiceStub(ch)
        for call, code in [
            (scraper.GetCrawl(scraper_pb2.GetCrawlRequest(job_id="j" * LONG), metadata=admin, timeout=10),
             grpc.StatusCode.NOT_FOUND),
            (scraper.GetCrawl(scraper_pb2.GetCrawlRequest(job_id="😀" * LONG), metadata=admin, timeout=10),
             grpc.StatusCode.NOT_FOUND),
            (scraper.StartCrawl(scraper_pb2.StartCrawlRequest(product_key_id="k" * LONG,
                                                              seed_urls=["http://127.0.0.1:9/"]),
                                metadata=admin, timeout=10), None),
            (scraper.Fetch(scraper_pb2.FetchRequest(url="http://a.example/" + "x" * LONG, product_key=key_a.secret),
                           timeout=10), None),
        ]:
            error = await _refused(call)
            assert error.code() in ((code,) if code else (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                                          grpc.StatusCode.PERMISSION_DENIED)), error
            assert len(error.details()) <= MAX_STATUS_MESSAGE_CHARS


async def test_a_chat_message_of_megabytes_is_invalid_naming_its_length(response, key_a):
    message = "\x01" * 4_000_000     # all of it control characters, cleaned away if it were read
    error = await _refused(response.Chat(response_pb2.ChatRequest(product_key=key_a.secret, message=message),
                                         timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "4000000 characters" in error.details()


async def test_start_crawl_checks_the_key_before_looking_up_any_host(services, settings, admin):
    """A crawl for a key that does not exist is NOT_FOUND at once, whatever its seeds name."""
    async with channel(settings.scraper_addr) as ch:
        scraper = scraper_pb2_grpc.ScraperServiceStub(ch)
        error = await _refused(scraper.StartCrawl(scraper_pb2.StartCrawlRequest(
            product_key_id="no-such-key", seed_urls=["http://host-that-does-not-resolve.invalid/"]),
            metadata=admin, timeout=10))
        assert error.code() == grpc.StatusCode.NOT_FOUND, error
