"""Serves the sample site: `python -m deploy.local.sample_site [--port 8088]`."""

from __future__ import annotations

import argparse
import asyncio
import logging

from deploy.local.sample_site.server import SampleSite

logger = logging.getLogger(__name__)


async def _serve(host: str, port: int) -> None:
    site = SampleSite()
    url = await site.start(host, port)
    logger.warning("sample site on %s (sitemap %s/sitemap.xml)", url, url)
    try:
        await asyncio.Event().wait()
    finally:
        await site.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.sample_site", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        asyncio.run(_serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
