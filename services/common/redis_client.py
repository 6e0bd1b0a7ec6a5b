"""The Redis client shared by the services."""

from __future__ import annotations

import redis.asyncio as redis


def create_redis(url: str) -> redis.Redis:
    return redis.from_url(url, decode_responses=False, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=30)
