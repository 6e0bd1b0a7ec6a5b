"""The topics the project creates carry their configuration (retention, cleanup, message size): a
broker's defaults would decide how long turns can be replayed."""

from __future__ import annotations

import uuid

from aiokafka.admin import AIOKafkaAdminClient
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
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
        found: dict[str, dict[str, str]] = {}
        for response in responses:
            for _code, _message, _type, name, entries in response.resources:
                found[name] = {entry[0]: entry[1] for entry in entries}
        await admin.delete_topics(list(names))
    finally:
        await admin.close()
    for name, key in names.items():
        for config, value in TOPIC_CONFIGS[key].items():
            assert found[name][config] == value, (name, config, found[name].get(config))
