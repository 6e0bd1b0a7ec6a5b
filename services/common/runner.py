"""Process entry point shared by the services: settings, logging, the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from services.common.logs import configure_logging
from services.common.settings import Settings, get_settings


def run_service(name: str, main: Callable[[Settings], Awaitable[None]]) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json, service=name)
    asyncio.run(main(settings))
