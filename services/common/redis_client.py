"""The Redis client shared by the services, and when to try it while it fails."""

from __future__ import annotations

import logging
import time

import redis.asyncio as redis

logger = logging.getLogger(__name__)

# Redis answers in well under a millisecond; a server that is frozen (stopped, a lost network path)
# answers never. A command that has waited this long fails, so a turn that meets such a Redis still
# fits its deadline (the response service gives search 2 s) on the PostgreSQL path.
SOCKET_TIMEOUT_SECONDS = 0.5


def create_redis(url: str) -> redis.Redis:
    return redis.from_url(url, decode_responses=False, socket_timeout=SOCKET_TIMEOUT_SECONDS,
                          socket_connect_timeout=SOCKET_TIMEOUT_SECONDS, health_check_interval=30)


class RedisHealth:
    """Whether to try Redis (or another `server`) now. After a failure, one call in each
    `retry_seconds` tries it (and waits for it, at most the socket timeout); the others go without it
    until one succeeds. A caller that tried reports the outcome, `ok` or `failed`. One warning per
    outage, naming `without` (what goes on without the server)."""

    def __init__(self, retry_seconds: float, without: str, server: str = "Redis") -> None:
        self._retry = retry_seconds
        self._without = without
        self._server = server
        self._down_until = 0.0
        self.down = False

    def available(self) -> bool:
        now = time.monotonic()
        if now < self._down_until:
            return False
        if self.down:
            self._down_until = now + self._retry   # this call probes; the others wait for its verdict
        return True

    def failed(self, what: str, exc: BaseException) -> None:
        if not self.down:
            logger.warning("%s failed (%s: %r); %s until it is back", self._server, what, exc, self._without)
        self.down = True
        self._down_until = time.monotonic() + self._retry

    def ok(self) -> None:
        if self.down:
            logger.info("%s is back (%s ends)", self._server, self._without)
        self.down = False
        self._down_until = 0.0
