"""The web strategy: one page of the key's website through ScraperService.Fetch, as passages.

Any failure (the scraper missing, UNIMPLEMENTED, a timeout, an empty page) gives no passages, so
the turn degrades to NO_ANSWER instead of failing.
"""

from __future__ import annotations

import logging

import grpc

from services.common.chunking import chunk_text
from services.common.pb.parley.v1 import common_pb2, scraper_pb2, scraper_pb2_grpc

logger = logging.getLogger(__name__)


class WebPages:
    def __init__(self, stub: scraper_pb2_grpc.ScraperServiceStub, max_passages: int = 5) -> None:
        self._stub = stub
        self._max_passages = max_passages

    async def passages(self, url: str, key_id: str, timeout: float, secret: str = "") -> list[common_pb2.Passage]:
        """The page's passages; `secret` is the tenant's product key (Fetch reads only its website)."""
        if not url or timeout <= 0:
            return []
        try:
            page = await self._stub.Fetch(scraper_pb2.FetchRequest(url=url, product_key_id=key_id, product_key=secret), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            logger.warning("web strategy: Fetch %s failed (%s: %s); no answer", url, exc.code().name, exc.details())
            return []
        chunks = chunk_text(page.text)[: self._max_passages]
        return [
            common_pb2.Passage(id=f"web-{i + 1}", kind="page", title=page.title, text=text, url=page.url or url,
                               score=1.0 / (i + 1))
            for i, text in enumerate(chunks)
        ]
