"""Product keys: unguessable secrets of which only a hash is stored."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.common.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, Unauthenticated

_KEY_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{1,62}$")


@dataclass(frozen=True)
class ProductKey:
    id: str
    name: str
    knowledge_version: int
    created_at: datetime
    revoked: bool
    website: str = ""


def new_secret() -> str:
    return "pk_" + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def check_admin(token: str | None, expected: str) -> None:
    if not token:
        raise Unauthenticated("admin token missing: send it in the x-parley-admin-token metadata header")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise PermissionDenied("admin token is not valid")


def _row_to_key(row: asyncpg.Record) -> ProductKey:
    return ProductKey(
        id=row["id"],
        name=row["name"],
        knowledge_version=row["knowledge_version"],
        created_at=row["created_at"],
        revoked=row["revoked_at"] is not None,
        website=row["website"],
    )


_COLUMNS = "id, name, knowledge_version, created_at, revoked_at, website"


async def create_key(
    pool: asyncpg.Pool, *, name: str, key_id: str = "", instructions: str = "", website: str = ""
) -> tuple[ProductKey, str]:
    """Create a key; returns it with its secret, which is not stored and cannot be shown again."""
    name = name.strip()
    if not name:
        raise InvalidArgument("name is required")
    key_id = key_id.strip() or "key_" + secrets.token_hex(6)
    if not _KEY_ID.match(key_id):
        raise InvalidArgument("id must be 2-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit")
    secret = new_secret()
    try:
        row = await pool.fetchrow(
            f"INSERT INTO product_keys (id, name, key_hash, instructions, website) VALUES ($1, $2, $3, $4, $5)"
            f" RETURNING {_COLUMNS}",
            key_id, name, hash_secret(secret), instructions, website,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"product key id {key_id!r} exists already") from None
    return _row_to_key(row), secret


async def list_keys(pool: asyncpg.Pool) -> list[ProductKey]:
    rows = await pool.fetch(f"SELECT {_COLUMNS} FROM product_keys ORDER BY created_at, id")
    return [_row_to_key(r) for r in rows]


async def revoke_key(pool: asyncpg.Pool, key_id: str) -> ProductKey:
    row = await pool.fetchrow(
        f"UPDATE product_keys SET revoked_at = coalesce(revoked_at, now()), knowledge_version = knowledge_version + 1"
        f" WHERE id = $1 RETURNING {_COLUMNS}",
        key_id,
    )
    if row is None:
        raise NotFound(f"no product key with id {key_id!r}")
    return _row_to_key(row)


def require_key(secret: str) -> bytes:
    if not secret.strip():
        raise Unauthenticated("product key missing")
    return hash_secret(secret.strip())
