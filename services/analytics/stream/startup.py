"""Holds the worker's start until a Kafka broker answers.

Faust's producer and the consumers give up when no broker answers while they start, so a worker
started during a Kafka outage (or before the broker in a fresh cluster) would exit and crash-loop.
This service is started before them and returns only once a broker has answered a metadata request;
/healthz (started before it) answers meanwhile and says what the worker waits for, and a stop
signal ends the wait.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaClient
from mode import Service

from services.analytics.stream.progress import Progress

logger = logging.getLogger(__name__)


class KafkaReachable(Service):
    def __init__(self, bootstrap: str, progress: Progress, retry_seconds: float = 2.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self._bootstrap = bootstrap
        self._progress = progress
        self._retry_seconds = retry_seconds

    async def on_start(self) -> None:
        attempts = 0
        while not self.should_stop:
            if await self._answers():
                if attempts:
                    logger.info("Kafka at %s answers after %d attempt(s); starting", self._bootstrap, attempts + 1)
                self._progress.waiting_for = ""
                return
            attempts += 1
            self._progress.waiting_for = f"Kafka at {self._bootstrap}"
            if attempts == 1 or attempts % 30 == 0:
                logger.warning("Kafka at %s does not answer; waiting before starting (attempt %d)",
                               self._bootstrap, attempts)
            await self.sleep(self._retry_seconds)

    async def _answers(self) -> bool:
        client = AIOKafkaClient(bootstrap_servers=self._bootstrap, request_timeout_ms=5000)
        try:
            await client.bootstrap()
            return True
        except Exception as exc:  # noqa: BLE001 - any failure to reach a broker means: not yet
            logger.debug("bootstrap of %s failed: %s", self._bootstrap, exc)
            return False
        finally:
            await client.close()
