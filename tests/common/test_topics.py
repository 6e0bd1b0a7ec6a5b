"""The topics the project creates carry their configuration (retention, cleanup, message size): a
broker's defaults would decide how long turns can be replayed."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.common.settings import TOPIC_CONFIGS
from services.common.topics import create_all_topics


async def test_created_topics_carry_their_configuration(stack, settings):
    ours = settings.model_copy(update={"topic_namespace": f".cfg-{uuid.uuid4().hex[:6]}"})
    await create_all_topics(ours)
    admin = AIOKafkaAdminClient(bootstrap_servers=ours.kafka_bootstrap)
    await admin.start()
    try:
        names = {ours.topic(key): key for key in TOPIC_CONFIGS}
        found = {name: await _described(admin, name, bool) for name in names}   # a topic just made is known soon
        await admin.delete_topics(list(names))
    finally:
        await admin.close()
    for name, key in names.items():
        for config, value in TOPIC_CONFIGS[key].items():
            assert found[name][config] == value, (name, config, found[name].get(config))


async def test_an_existing_topic_is_brought_to_its_configuration_and_keeps_its_other_settings(stack, settings):
    """A topic made before its configuration (an older release, a broker's auto-creation): `parley
    migrate` sets what TOPIC_CONFIGS says, and an operator's own override of another setting stays."""
    ours = settings.model_copy(update={"topic_namespace": f".old-{uuid.uuid4().hex[:6]}"})
    turns = ours.topic("chat_turns")
    admin = AIOKafkaAdminClient(bootstrap_servers=ours.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(turns, 1, 1, topic_configs={"retention.ms": "3600000",
                                                                        "min.compaction.lag.ms": "12345"})])
        await _described(admin, turns, lambda found: found.get("retention.ms") == "3600000")   # made, and known
        await create_all_topics(ours)
        # The broker applies an accepted change a moment later.
        found = await _described(admin, turns, lambda found: found.get("retention.ms") not in (None, "3600000"))
        await admin.delete_topics([ours.topic(key) for key in TOPIC_CONFIGS])
    finally:
        await admin.close()
    for config, value in TOPIC_CONFIGS["chat_turns"].items():
        assert found[config] == value, (config, found[config])
    assert found["min.compaction.lag.ms"] == "12345"


async def _described(admin: AIOKafkaAdminClient, topic: str, ready) -> dict[str, str]:
    """The topic's configuration once `ready(configuration)` (a topic just made may not be described yet)."""
    found: dict[str, str] = {}
    for _ in range(200):
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        found = {entry[0]: entry[1] for entry in response.resources[0][4]}
        if ready(found):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{topic}: {found}")
