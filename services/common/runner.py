"""Process entry point shared by the services: settings, logging, the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import uvloop

from services.common.logs import configure_logging
from services.common.settings import SettingsT, get_settings


def run_service(name: str, main: Callable[[SettingsT], Awaitable[None]],
                settings_class: type[SettingsT]) -> None:
    """Reads the service's own settings class, configures logging and runs `main` on the chosen loop."""
    settings = get_settings(settings_class)
    configure_logging(settings.log_level, settings.log_json, service=name)
    # uvloop: the gRPC, Redis and Kafka I/O of a service costs less CPU per call than on the standard loop.
    factory = uvloop.new_event_loop if settings.event_loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(settings))
