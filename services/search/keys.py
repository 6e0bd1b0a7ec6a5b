"""Product keys: unguessable secrets of which only a hash is stored; their settings; rotation and revocation."""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from services.common.product_keys import KeyRecord, hash_secret, key_change, require_key, validate_key
from services.common.text import is_blank, storable
from services.search.urls import website_problem

__all__ = ["KeyRecord", "hash_secret", "require_key", "validate_key"]  # shared with the other services

# Called with the hash of a secret that is about to stop working, while its row is locked: the
# cache tombstone goes in before PostgreSQL changes, so no replica can cache the old record again.
# The change runs within product_keys.key_change, which lifts the tombstone if it does not commit.
BeforeChange = Callable[[bytes], Awaitable[None]]

_KEY_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{1,62}$")
# Settings a key may override (product_keys.settings jsonb); anything else is rejected.
SETTING_TYPES = {"rate_limit_per_second": float, "rate_limit_burst": int, "allow_direct": bool}
# Bounds of the numeric ones (0 still means the service default). Below 0.01/s a bucket takes years to
# refill and its expiry in Redis gets absurd (1e-17/s overflowed it); a million a second and a burst of
# a million are what the benchmarks set to be never limited, and no tenant needs more.
SETTING_BOUNDS = {"rate_limit_per_second": (0.01, 1_000_000.0), "rate_limit_burst": (1, 1_000_000)}
# A key's name is shown in lists and answers' metadata; its instructions go into every prompt of the key.
MAX_NAME_CHARS = 200
MAX_INSTRUCTIONS_CHARS = 10_000
MAX_WEBSITE_CHARS = 2_000


@dataclass(frozen=True)
class ProductKey:
    id: str
    name: str
    knowledge_version: int
    created_at: datetime
    revoked: bool
    website: str = ""
    settings: dict = field(default_factory=dict)
    ts_config: str = "english"
    rotated_at: datetime | None = None


def new_secret() -> str:
    return "pk_" + secrets.token_urlsafe(32)


def clean_settings(settings: dict) -> dict:
    """Only known settings with values of the right type and within SETTING_BOUNDS; zero/false values
    mean the service default."""
    cleaned = {}
    for name, value in settings.items():
        kind = SETTING_TYPES.get(name)
        if kind is None:
            raise InvalidArgument(f"unknown key setting {name!r}; known: {', '.join(SETTING_TYPES)}")
        if kind is not bool and (isinstance(value, bool) or not isinstance(value, (int, float))
                                 or not math.isfinite(value) or value < 0):
            raise InvalidArgument(f"key setting {name} must be a non-negative number")
        if value and name in SETTING_BOUNDS:
            low, high = SETTING_BOUNDS[name]
            if not low <= value <= high or (kind is int and value != int(value)):
                whole = " whole" if kind is int else ""
                raise InvalidArgument(f"key setting {name} must be 0 (the service default) or a{whole} number "
                                      f"from {low:g} to {high:,.0f}; got {value:g}")
        if value:
            cleaned[name] = kind(value)
    return cleaned


def _row_to_key(row: asyncpg.Record) -> ProductKey:
    return ProductKey(
        id=row["id"],
        name=row["name"],
        knowledge_version=row["knowledge_version"],
        created_at=row["created_at"],
        revoked=row["revoked_at"] is not None,
        website=row["website"],
        settings=json.loads(row["settings"]) if isinstance(row["settings"], str) else dict(row["settings"]),
        ts_config=row["ts_config"],
        rotated_at=row["rotated_at"],
    )


_COLUMNS = "id, name, knowledge_version, created_at, revoked_at, website, settings, ts_config::text AS ts_config, rotated_at"


async def create_key(
    pool: asyncpg.Pool, *, name: str, key_id: str = "", instructions: str = "", website: str = "",
    settings: dict | None = None, ts_config: str = "",
) -> tuple[ProductKey, str]:
    """Create a key; returns it with its secret, which is not stored and cannot be shown again."""
    name = storable(name).strip()
    if is_blank(name):
        raise InvalidArgument("name is required")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidArgument(f"name has {len(name)} characters; the limit is {MAX_NAME_CHARS}")
    instructions = storable(instructions).strip()
    if len(instructions) > MAX_INSTRUCTIONS_CHARS:
        raise InvalidArgument(
            f"instructions have {len(instructions)} characters; the limit is {MAX_INSTRUCTIONS_CHARS}")
    key_id = key_id.strip() or "key_" + secrets.token_hex(6)
    if not _KEY_ID.match(key_id):
        raise InvalidArgument("id must be 2-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit")
    ts_config = ts_config.strip() or "english"
    if len(ts_config) > 63 or not ts_config.isprintable():
        raise InvalidArgument("text_search_config must be the name of a text search configuration (e.g. english)")
    website = website.strip()
    if len(website) > MAX_WEBSITE_CHARS:
        raise InvalidArgument(f"website has {len(website)} characters; the limit is {MAX_WEBSITE_CHARS}")
    problem = website_problem(website)
    if problem:
        raise InvalidArgument(problem)
    if not await pool.fetchval("SELECT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = $1)", ts_config):
        raise InvalidArgument(f"unknown text search configuration {ts_config!r} (e.g. english, simple, german)")
    secret = new_secret()
    try:
        row = await pool.fetchrow(
            "INSERT INTO product_keys (id, name, key_hash, instructions, website, settings, ts_config)"
            f" VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::regconfig) RETURNING {_COLUMNS}",
            key_id, name, hash_secret(secret), instructions, website,
            json.dumps(clean_settings(settings or {})), ts_config,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"product key id {key_id!r} exists already") from None
    return _row_to_key(row), secret


def _no_key(key_id: str) -> NotFound:
    shown = key_id if len(key_id) <= 100 else key_id[:100] + "…"
    return NotFound(f"no product key with id {shown!r}")


def is_key_id(key_id: str) -> bool:
    """Whether a product key can have this id (the form CreateProductKey allows)."""
    return bool(_KEY_ID.fullmatch(key_id))


async def require_live(conn: asyncpg.Pool | asyncpg.Connection, key_id: str, *, revoked_too: bool = False) -> None:
    """The key exists and is not revoked (`revoked_too`: or is), or NOT_FOUND / FAILED_PRECONDITION. In a transaction, the
    row stays locked until it ends, so a revocation (FOR UPDATE) cannot slip in before its writes commit.
    FOR NO KEY UPDATE, the lock the write's version bump takes anyway: writers of one key queue here.
    Share-locked, two writers each held the row and waited on the bump for the other's lock to go
    (a deadlock PostgreSQL broke by failing one). Readers take no lock, and the chunks' foreign-key
    checks (FOR KEY SHARE) do not conflict with it."""
    revoked = await conn.fetchrow(
        "SELECT revoked_at IS NOT NULL AS revoked FROM product_keys WHERE id = $1 FOR NO KEY UPDATE",
        key_id) if _KEY_ID.fullmatch(key_id) else None
    if revoked is None:
        raise _no_key(key_id)
    if revoked["revoked"] and not revoked_too:
        raise FailedPrecondition(f"the key is revoked ({key_id!r}); its knowledge can no longer change")


async def list_keys(pool: asyncpg.Pool) -> list[ProductKey]:
    rows = await pool.fetch(f"SELECT {_COLUMNS} FROM product_keys ORDER BY created_at, id")
    return [_row_to_key(r) for r in rows]


async def revoke_key(pool: asyncpg.Pool, key_id: str, before_change: BeforeChange) -> tuple[ProductKey, bytes, bool]:
    """Revokes the key; returns it with the hash of the secret that stopped working and whether this
    call revoked it. A key revoked already is returned as it is: a revocation sent again (a retry
    after a lost reply) bumps no version and announces nothing, and keeps the first revocation's time;
    its tombstone was written by that first revocation, which could not commit without it."""
    # key_change outermost: it looks at PostgreSQL once the transaction has ended (see there).
    async with key_change(pool), pool.acquire() as conn, conn.transaction():
        old = await conn.fetchrow(f"SELECT key_hash, {_COLUMNS} FROM product_keys WHERE id = $1 FOR UPDATE",
                                  key_id) if _KEY_ID.fullmatch(key_id) else None
        if old is None:
            raise _no_key(key_id)
        if old["revoked_at"] is not None:
            return _row_to_key(old), bytes(old["key_hash"]), False
        await before_change(bytes(old["key_hash"]))
        row = await conn.fetchrow(
            "UPDATE product_keys SET revoked_at = now(),"
            f" knowledge_version = knowledge_version + 1 WHERE id = $1 RETURNING {_COLUMNS}",
            key_id,
        )
    return _row_to_key(row), bytes(old["key_hash"]), True


async def rotate_key(pool: asyncpg.Pool, key_id: str, before_change: BeforeChange) -> tuple[ProductKey, str, bytes]:
    """A new secret for the key (its knowledge stays); returns the key, the new secret and the old hash."""
    secret = new_secret()
    async with key_change(pool), pool.acquire() as conn, conn.transaction():
        old = await conn.fetchrow("SELECT key_hash, revoked_at FROM product_keys WHERE id = $1 FOR UPDATE",
                                  key_id) if _KEY_ID.fullmatch(key_id) else None
        if old is None:
            raise _no_key(key_id)
        if old["revoked_at"] is not None:
            raise FailedPrecondition(f"the key is revoked ({key_id!r}); create a new key instead")
        await before_change(bytes(old["key_hash"]))
        row = await conn.fetchrow(
            f"UPDATE product_keys SET key_hash = $2, rotated_at = now() WHERE id = $1 RETURNING {_COLUMNS}",
            key_id, hash_secret(secret),
        )
    return _row_to_key(row), secret, bytes(old["key_hash"])


async def key_hash_of(pool: asyncpg.Pool, key_id: str) -> bytes | None:
    value = await pool.fetchval("SELECT key_hash FROM product_keys WHERE id = $1", key_id)
    return bytes(value) if value is not None else None
