"""Process entry point shared by the services: settings, logging, the event loop, and starting what
depends on a server that may not be up yet."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import uvloop
from tenacity import (AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, stop_never,
                      wait_exponential)

from services.common.logs import configure_logging
from services.common.settings import SettingsT, get_settings

logger = logging.getLogger(__name__)
T = TypeVar("T")


def exit_after(seconds: float, what: str) -> threading.Timer:
    """Arms a deadline for a process told to stop: if it has not exited `seconds` later (a library
    waiting on the way out for a server that is gone), it is ended there, as a supervisor would end
    it. For processes whose work is replayed or stored with its progress, so ending them loses nothing."""
    def end() -> None:
        logger.error("%s still stopping %.0f s after the signal; exiting now", what, seconds)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - exiting anyway
                pass
        os._exit(0)

    timer = threading.Timer(seconds, end)
    timer.daemon = True
    timer.start()
    return timer


def run_service(name: str, main: Callable[[SettingsT], Awaitable[None]],
                settings_class: type[SettingsT]) -> None:
    """Reads the service's own settings class, configures logging and runs `main` on the chosen loop."""
    settings = get_settings(settings_class)
    configure_logging(settings.log_level, settings.log_json, service=name)
    # uvloop: the gRPC, Redis and Kafka I/O of a service costs less CPU per call than on the standard loop.
    factory = uvloop.new_event_loop if settings.event_loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(settings))


async def when_ready(start: Callable[[], Awaitable[T]], what: str, attempts: int | None = None) -> T:
    """`start()`'s result once it succeeds: a pool, a producer or a consumer whose server may not be up
    yet. Backs off from 0.2 s to 5 s, logging each failure; after `attempts` tries (None: never) the
    last error is raised."""

    def not_ready(state: RetryCallState) -> None:
        logger.warning("%s: dependencies not ready (%s); retrying in %.1fs", what, state.outcome.exception(),
                       state.next_action.sleep if state.next_action else 0.0)

    async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=0.2, max=5.0), reraise=True,
                                       stop=stop_never if attempts is None else stop_after_attempt(attempts),
                                       retry=retry_if_exception_type(Exception), before_sleep=not_ready):
        with attempt:
            return await start()
    raise AssertionError("unreachable: tenacity returns or raises")
