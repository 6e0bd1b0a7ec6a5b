"""Which topics exist, and creating them with the configured partition count and their configuration."""

from __future__ import annotations

from services.common.kafka import ensure_topics
from services.common.settings import TOPIC_CONFIGS, TOPICS, CommonSettings


def all_topics(settings: CommonSettings) -> list[str]:
    return [settings.topic(name) for name in TOPICS]


async def create_all_topics(settings: CommonSettings) -> None:
    await ensure_topics(settings.kafka_bootstrap, all_topics(settings), settings.topic_partitions,
                        settings.topic_replication,
                        configs={settings.topic(name): config for name, config in TOPIC_CONFIGS.items()})
