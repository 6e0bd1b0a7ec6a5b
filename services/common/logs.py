"""Logging set-up: stdlib `logging` rendered as JSON lines (or readable text) through structlog."""

from __future__ import annotations

import logging
import sys
import time

import structlog


def configure_logging(level: str = "INFO", json: bool = True, service: str = "") -> None:
    """Route every stdlib logger through one structlog formatter on stderr."""
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        shared.append(_add_service(service))
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at info (the LLM's, the crawler's): one line per call.
    for noisy in ("aiokafka", "kafka", "faust", "mode", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # While a broker recovers, aiokafka says the same thing many times a second (a heartbeat failing,
    # the coordinator marked dead, a partition without its leader): each kind of line once in a while.
    handler.addFilter(RepeatFilter(("aiokafka",)))


class EveryFewSeconds:
    """Says when a repeated message is due again (at most once per `seconds`), and how many were
    held back meanwhile."""

    def __init__(self, seconds: float = 5.0) -> None:
        self._seconds, self._next, self._held = seconds, 0.0, 0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return False
        self._next = now + self._seconds
        return True

    def more(self) -> str:
        held, self._held = self._held, 0
        return f" ({held} more like it since the last)" if held else ""


class RepeatFilter(logging.Filter):
    """Lets through each kind of line (logger and message template) of the `loggers` (and their
    children) at most once per `seconds`, saying how many were held back since; other loggers' lines
    pass untouched. Kinds are bounded: past `kinds`, the oldest is forgotten."""

    def __init__(self, loggers: tuple[str, ...], seconds: float = 5.0, kinds: int = 1000) -> None:
        super().__init__()
        self._loggers, self._seconds, self._kinds = loggers, seconds, kinds
        self._clocks: dict[tuple[str, str], EveryFewSeconds] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not any(record.name == n or record.name.startswith(n + ".") for n in self._loggers):
            return True
        kind = (record.name, str(record.msg))
        clock = self._clocks.get(kind)
        if clock is None:
            if len(self._clocks) >= self._kinds:
                del self._clocks[next(iter(self._clocks))]
            clock = self._clocks[kind] = EveryFewSeconds(self._seconds)
        if not clock.due():
            return False
        more = clock.more()
        if more:
            record.msg = f"{record.msg}{more.replace('%', '%%')}"
        return True


def _add_service(service: str):
    def processor(_logger, _name, event_dict):
        event_dict.setdefault("service", service)
        return event_dict

    return processor
