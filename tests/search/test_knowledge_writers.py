"""Two writers of one key's knowledge at once (a crawl's page and an admin's AddFaq, or two admin
writes): they queue on the key's row instead of deadlocking on the version bump (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from services.common.errors import FailedPrecondition
from services.common.knowledge_store import NewChunk
from services.search import keys
from services.search.indexing import Indexing
from tests.conftest import RUN_ID


async def _holding_up(pg: asyncpg.Pool, conn: asyncpg.Connection) -> bool:
    """Whether another transaction waits for a lock `conn`'s transaction holds."""
    return await pg.fetchval("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))",
                             conn.get_server_pid())


async def test_two_writers_of_one_key_both_land_without_a_deadlock(pg):
    key, _ = await keys.create_key(pg, name="Test writers", key_id=f"t-{RUN_ID}-writers-{uuid.uuid4().hex[:4]}")
    indexing = Indexing(pg)
    checked: set[str] = set()

    def require_then_meet(name: str, other: str):
        """The key's check in the write's transaction, then a meeting point: each writer goes on once
        the other has passed its check too, or is held up in it by this one's lock."""
        async def require(conn: asyncpg.Connection, key_id: str) -> None:
            await keys.require_live(conn, key_id)
            checked.add(name)
            async with asyncio.timeout(30):
                while other not in checked and not await _holding_up(pg, conn):
                    await asyncio.sleep(0.01)
        return require

    before = await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key.id)
    page, faq = await asyncio.gather(
        indexing.write(key.id, "page", "https://help.example.com/charging", "Charging", "https://help.example.com/charging",
                       [NewChunk("A full charge takes four hours.")], replace={"https://help.example.com/charging"},
                       require=require_then_meet("page", "faq")),
        indexing.write(key.id, "faq", "How heavy is it?", "", "", [NewChunk("It weighs 2 kg.", "How heavy is it?")],
                       replace={"How heavy is it?"}, require=require_then_meet("faq", "page")),
    )
    assert {page[2], faq[2]} == {before + 1, before + 2}
    stored = await pg.fetch("SELECT kind, content FROM knowledge_chunks WHERE product_key_id = $1 ORDER BY kind", key.id)
    assert [(r["kind"], r["content"]) for r in stored] == [("faq", "It weighs 2 kg."),
                                                           ("page", "A full charge takes four hours.")]
    assert len(page[0]) == len(faq[0]) == 1


async def test_a_revocation_waits_for_a_write_under_way_and_refuses_the_writes_after_it(pg):
    key, _ = await keys.create_key(pg, name="Test writer", key_id=f"t-{RUN_ID}-revwriter-{uuid.uuid4().hex[:4]}")
    indexing = Indexing(pg)
    revocation: list[asyncio.Task] = []

    async def require_then_revoke(conn: asyncpg.Connection, key_id: str) -> None:
        await keys.require_live(conn, key_id)

        async def nothing(_: bytes) -> None:
            return None

        revocation.append(asyncio.ensure_future(keys.revoke_key(pg, key_id, nothing)))
        async with asyncio.timeout(30):      # until the revocation waits for this write's lock
            while not await _holding_up(pg, conn):
                await asyncio.sleep(0.01)
        assert not revocation[0].done()

    ids, _, version = await indexing.write(key.id, "faq", "Is it waterproof?", "", "",
                                           [NewChunk("Yes, to one metre.", "Is it waterproof?")],
                                           replace={"Is it waterproof?"}, require=require_then_revoke)
    revoked, _, _ = await revocation[0]
    assert len(ids) == 1 and revoked.revoked and revoked.knowledge_version == version + 1
    with pytest.raises(FailedPrecondition):
        await indexing.write(key.id, "faq", "Is it light?", "", "", [NewChunk("Yes.", "Is it light?")],
                             replace={"Is it light?"}, require=keys.require_live)
