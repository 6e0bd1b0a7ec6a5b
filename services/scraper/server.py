"""ScraperService servicer. Crawling is not built yet: every RPC answers UNIMPLEMENTED, plainly."""

from __future__ import annotations

from services.common.errors import Unimplemented
from services.common.pb.parley.v1 import scraper_pb2_grpc


class ScraperServicer(scraper_pb2_grpc.ScraperServiceServicer):
    async def StartCrawl(self, request, context):
        raise Unimplemented("crawling is not available yet")

    async def GetCrawl(self, request, context):
        raise Unimplemented("crawling is not available yet")

    async def WatchCrawl(self, request, context):
        raise Unimplemented("crawling is not available yet")
        yield  # pragma: no cover - makes this an async generator

    async def Fetch(self, request, context):
        raise Unimplemented("page fetching is not available yet")
