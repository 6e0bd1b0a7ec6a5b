"""Runs the stream processor worker: `python -m services.analytics.stream`."""

from __future__ import annotations

import asyncio

import faust

from services.analytics.stream.app import create_app
from services.common.logs import configure_logging
from services.common.settings import get_settings


def main() -> None:
    settings = get_settings()
    if settings.stream_uvloop:
        import uvloop  # noqa: PLC0415 - only when chosen; the worker's loop is created by faust.Worker below

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app, services = create_app(settings)
    worker = faust.Worker(app, *services, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    configure_logging(settings.log_level, settings.log_json, service="worker")
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
