"""The one indexing path: pages over Kafka -> the search service's indexer -> PostgreSQL with their
embeddings; dense search over the stored vectors, kept current on two replicas; dead letters."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.common.embedding import DIMENSIONS, Embedder
from services.common.kafka import EventProducer
from services.common.knowledge_events import KnowledgeFollower
from services.common.pb.parley.v1 import events_pb2, search_pb2
from services.search import indexer
from services.search.dense import DenseRetrieval
from services.search.retrieval import Chunk
from services.search.vector_index import VectorIndex
from tests.conftest import make_key

pytestmark = pytest.mark.integration


async def hand_over(settings, *pages: events_pb2.KnowledgePage) -> None:
    """Pages onto the topic the scraper writes, then wait for the indexer to take them all."""
    producer = EventProducer(settings.kafka_bootstrap, client_id="test-pages")
    await producer.start()
    try:
        for page in pages:
            await producer.publish(settings.topic("knowledge_pages"), page.product_key_id, page, wait=True)
    finally:
        await producer.stop()
    deadline = asyncio.get_running_loop().time() + 60
    while (left := await indexer.lag(settings)) > 0:
        assert asyncio.get_running_loop().time() < deadline, f"{left} pages not indexed"
        await asyncio.sleep(0.2)


def page(key_id: str, document: str, *chunks: str, removed: bool = False) -> events_pb2.KnowledgePage:
    return events_pb2.KnowledgePage(product_key_id=key_id, document=document, url=document, title="Help",
                                    chunks=list(chunks), removed=removed)


async def chunks_by_document(pg, key_id: str) -> dict[str, list[str]]:
    rows = await pg.fetch("SELECT document, content FROM knowledge_chunks WHERE product_key_id = $1 ORDER BY id", key_id)
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["document"], []).append(r["content"])
    return out


SHARED = "Contact support by email at help@example.com; we answer within one business day."


async def test_a_paragraph_shared_by_two_pages_stays_on_both(services, search, admin, pg, settings):
    key = await make_key(search, admin, "shared-paragraph", faq=[], docs=[])
    a, b = "https://shop.example/a.html", "https://shop.example/b.html"
    await hand_over(settings, page(key.id, a, SHARED, "Page A is about returns."),
                    page(key.id, b, SHARED, "Page B is about shipping."))
    assert (await chunks_by_document(pg, key.id)) == {
        a: [SHARED, "Page A is about returns."], b: [SHARED, "Page B is about shipping."]}
    await hand_over(settings, page(key.id, a, "Page A now only talks about exchanges."))
    after = await chunks_by_document(pg, key.id)
    assert after[b] == [SHARED, "Page B is about shipping."]      # unchanged by A's change
    assert after[a] == ["Page A now only talks about exchanges."]
    await hand_over(settings, page(key.id, b, removed=True))
    assert b not in await chunks_by_document(pg, key.id)


async def test_indexed_chunks_carry_their_embedding_and_replays_change_nothing(services, search, admin, pg, settings):
    key = await make_key(search, admin, "embedded", faq=[], docs=[])
    doc = "https://shop.example/battery.html"
    text = "The battery pack weighs 1.2 kg and charges in three hours."
    await hand_over(settings, page(key.id, doc, text))
    row = await pg.fetchrow("SELECT id, embedding, embedding_model FROM knowledge_chunks WHERE product_key_id = $1",
                            key.id)
    embedder = Embedder.load()
    assert row["embedding_model"] == embedder.model_id
    stored = np.frombuffer(row["embedding"], dtype="<f4")
    assert stored.shape == (DIMENSIONS,)
    np.testing.assert_allclose(stored, embedder.embed([f"Help\n{text}"])[0], atol=1e-5)
    sentences = await pg.fetchval("SELECT sentence_embeddings FROM knowledge_chunks WHERE id = $1", row["id"])
    # the sentence encoded on its own, prefixed with where it stands (PARLEY_EMBEDDING_SENTENCES=apart)
    np.testing.assert_allclose(np.frombuffer(sentences, dtype="<f4").reshape(-1, DIMENSIONS),
                               embedder.embed([f"Help: {text}"]), atol=1e-5)
    version = await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key.id)
    await hand_over(settings, page(key.id, doc, text))             # a replayed message
    again = await pg.fetch("SELECT id FROM knowledge_chunks WHERE product_key_id = $1", key.id)
    assert [r["id"] for r in again] == [row["id"]]                 # the same chunk, not written again
    assert await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key.id) == version
    retitled = page(key.id, doc, text)
    retitled.title = "Battery"                                     # embedded with the passage: written again
    await hand_over(settings, retitled)
    assert await pg.fetchval("SELECT title FROM knowledge_chunks WHERE product_key_id = $1", key.id) == "Battery"
    assert await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key.id) > version


async def test_chunks_without_sentence_vectors_are_embedded_again(search, admin, pg):
    from services.search.indexing import Indexing

    key = await make_key(search, admin, "stale-sentences", faq=[("Is it waterproof?", "Yes, to IPX7.")],
                         docs=[("Care", "Rinse the frame with fresh water. Dry the chain and oil it lightly.")])
    before = {r["id"]: bytes(r["s"]) for r in await pg.fetch(
        "SELECT id, sentence_embeddings AS s FROM knowledge_chunks WHERE product_key_id = $1", key.id)}
    # As written before sentence vectors existed (migration 0011 leaves them NULL).
    await pg.execute("UPDATE knowledge_chunks SET sentence_embeddings = NULL WHERE product_key_id = $1", key.id)
    version = await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key.id)
    versions = await Indexing(pg).reembed_stale()
    assert versions[key.id] > version
    after = {r["id"]: bytes(r["s"]) for r in await pg.fetch(
        "SELECT id, sentence_embeddings AS s FROM knowledge_chunks WHERE product_key_id = $1", key.id)}
    assert after.keys() == before.keys()
    for cid, vectors in after.items():      # the FAQ entry has none; the document's two sentences have one each
        np.testing.assert_allclose(np.frombuffer(vectors, dtype="<f4"), np.frombuffer(before[cid], dtype="<f4"),
                                   atol=1e-5)
    assert sorted(len(v) // (4 * DIMENSIONS) for v in after.values()) == [0, 2]


async def test_chunks_whose_sentences_older_rules_chose_are_embedded_again(search, admin, pg):
    # sentences.RULES is part of the model id: chunks stored under the rules before are stale, and an
    # unchanged page of a crawl does not keep their vectors (known_embeddings looks up the current id).
    from services.common.embedding import model_id
    from services.common.sentences import RULES
    from services.search.indexing import Indexing

    key = await make_key(search, admin, "stale-rules", faq=[],
                         docs=[("Care", "Next-day service is free for Care members. Rinse the frame with water.")])
    current = Embedder.load().model_id
    await pg.execute("UPDATE knowledge_chunks SET embedding_model = $2 WHERE product_key_id = $1", key.id,
                     model_id(rules=RULES - 1))
    # Until then a search reads them (the same model's vectors): no key is left without dense results.
    index = VectorIndex(pg, current, 64 << 20)
    assert len(await index.search(key.id, Embedder.load().embed_one("next-day service"), 5)) == 1
    await pg.execute("UPDATE knowledge_chunks SET embedding_model = 'another-model' WHERE product_key_id = $1", key.id)
    assert await VectorIndex(pg, current, 64 << 20).search(key.id, Embedder.load().embed_one("next-day service"), 5) == []
    await pg.execute("UPDATE knowledge_chunks SET embedding_model = $2 WHERE product_key_id = $1", key.id,
                     model_id(rules=RULES - 1))
    versions = await Indexing(pg).reembed_stale()
    assert key.id in versions
    assert await pg.fetchval("SELECT array_agg(DISTINCT embedding_model) FROM knowledge_chunks "
                             "WHERE product_key_id = $1", key.id) == [current]


async def test_chunks_of_a_revoked_key_are_not_embedded_again(search, admin, pg):
    from services.search.indexing import Indexing

    key = await make_key(search, admin, "stale-revoked", faq=[], docs=[("Care", "Rinse the frame with fresh water.")])
    await search.RevokeProductKey(search_pb2.RevokeProductKeyRequest(id=key.id), metadata=admin, timeout=10)
    await pg.execute("UPDATE knowledge_chunks SET sentence_embeddings = NULL WHERE product_key_id = $1", key.id)
    versions = await Indexing(pg).reembed_stale()
    assert key.id not in versions
    assert await pg.fetchval("SELECT count(*) FROM knowledge_chunks WHERE product_key_id = $1 "
                             "AND sentence_embeddings IS NULL", key.id) == 1


async def test_admin_documents_go_through_the_same_path(search, admin, pg):
    key = await make_key(search, admin, "admin-path", faq=[("How heavy is it?", "It weighs 2 kg.")],
                         docs=[("Pairing", "Open the app and pair the speaker over Bluetooth.")])
    rows = await pg.fetch("SELECT kind, embedding_model, length(embedding) AS n FROM knowledge_chunks"
                          " WHERE product_key_id = $1", key.id)
    assert sorted(r["kind"] for r in rows) == ["document", "faq"]
    assert all(r["embedding_model"] == Embedder.load().model_id and r["n"] == 4 * DIMENSIONS for r in rows)


async def test_two_replicas_see_a_knowledge_change(services, search, admin, pg, settings):
    """Two search replicas, each with its own index and its own follower of knowledge events: after
    a page changes, both find the new passage by meaning and neither the old one."""
    key = await make_key(search, admin, "replicas", faq=[], docs=[])
    doc = "https://shop.example/pairing.html"
    await hand_over(settings, page(key.id, doc, "Returns are accepted within 30 days of delivery."))
    embedder = Embedder.load()
    replicas = [VectorIndex(pg, embedder.model_id, 64 << 20) for _ in range(2)]
    followers = []
    for index in replicas:
        async def forget(event, index=index) -> None:
            index.forget(event.product_key_id, event.knowledge_version)
        follower = KnowledgeFollower(settings.kafka_bootstrap, settings.topic("knowledge_updated"), forget)
        await follower.start()
        followers.append(follower)
    try:
        query = embedder.embed_one("how do I connect it to my phone?")
        for index in replicas:
            (hit,) = await index.search(key.id, query, 5)
            assert "Returns" in await pg.fetchval("SELECT content FROM knowledge_chunks WHERE id = $1", int(hit[0]))
        await hand_over(settings, page(key.id, doc, "Pair the speaker with the app over Bluetooth."))
        await asyncio.sleep(1.0)                                    # the followers' events
        for index in replicas:
            hits = await index.search(key.id, query, 5)             # no version given: the events alone
            contents = [await pg.fetchval("SELECT content FROM knowledge_chunks WHERE id = $1", int(c)) for c, _ in hits]
            assert contents == ["Pair the speaker with the app over Bluetooth."]
            assert hits[0][1] > 0.3
    finally:
        for follower in followers:
            await follower.stop()


async def test_dense_candidates_join_the_lexical_ones(search, admin, pg):
    key = await make_key(search, admin, "dense-plan", faq=[],
                         docs=[("Specifications", "The X200 battery pack weighs 1.2 kilograms."),
                               ("Returns", "Unused items can be sent back within thirty days.")])
    version = await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key.id)
    dense = DenseRetrieval(pg, Embedder.load(), 64 << 20, candidates=5)

    async def no_lexical() -> list:
        return []   # no word of the question is in the passage ("heavy" vs "weighs")

    chunks = await dense.with_lexical(key.id, version, "how heavy is the battery?", no_lexical())
    assert [c.title for c in chunks] == ["Specifications", "Returns"]
    assert chunks[0].dense > chunks[1].dense + 0.2 and chunks[0].score == 0.0
    assert dense.queries.misses == 1
    await dense.hits(key.id, version, "how heavy is the battery?")
    assert dense.queries.hits == 1                                   # the query embedding is cached


async def test_a_slow_lexical_statement_gets_the_same_candidates(search, admin, pg):
    # When the lexical statement outlasts the dense search, the dense hits' rows are read meanwhile:
    # the merged candidates must be those of the sequential path (no duplicate, dense scores kept).
    key = await make_key(search, admin, "dense-slow-lexical", faq=[],
                         docs=[("Specifications", "The X200 battery pack weighs 1.2 kilograms."),
                               ("Returns", "Unused items can be sent back within thirty days.")])
    version = await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key.id)
    row = await pg.fetchrow("SELECT id, kind, title, question, content, url, document FROM knowledge_chunks"
                            " WHERE product_key_id = $1 AND title = 'Returns'", key.id)
    lexical_hit = Chunk(id=str(row["id"]), kind=row["kind"], title=row["title"], question=row["question"],
                        content=row["content"], url=row["url"], score=0.9, document=row["document"])
    dense = DenseRetrieval(pg, Embedder.load(), 64 << 20, candidates=5)
    await dense.hits(key.id, version, "how heavy is the battery?")          # cached: the dense arm is quick

    async def slow_lexical() -> list:
        await asyncio.sleep(0.3)
        return [lexical_hit]

    async def quick_lexical() -> list:
        return [lexical_hit]

    slow = await dense.with_lexical(key.id, version, "how heavy is the battery?", slow_lexical())
    quick = await dense.with_lexical(key.id, version, "how heavy is the battery?", quick_lexical())
    assert [(c.title, c.score) for c in slow] == [("Returns", 0.9), ("Specifications", 0.0)]
    assert slow == quick
    assert slow[1].dense > slow[0].dense + 0.2          # the dense-only passage, scored


async def test_an_undecodable_page_is_dead_lettered(services, settings):
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(settings.topic("knowledge_pages"), b"\xff\xfenot a page", key=b"junk")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(settings.topic("deadletter"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found = None
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while found is None and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    headers = dict(r.headers)
                    if (headers.get("source-topic") == settings.topic("knowledge_pages").encode()
                            and headers.get("source-partition") == str(meta.partition).encode()
                            and headers.get("source-offset") == str(meta.offset).encode()):
                        found = r
    finally:
        await consumer.stop()
    assert found is not None and found.value == b"\xff\xfenot a page"
    # and the indexer went on: its offset is committed once its batch is done (just after the dead letter)
    deadline = asyncio.get_running_loop().time() + 10
    while (left := await indexer.lag(settings)) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    assert left == 0


async def test_pages_postgresql_refuses_are_dead_lettered_and_the_pages_after_them_indexed(
        services, search, admin, pg, settings):
    """A page for a key id no key can have (a NUL in it), one whose document name is too long for its
    index (random text PostgreSQL cannot compress under a btree row's 2.7 kB), and one whose crawl time
    is no time (it ended the indexer, at every start): each would fail again on every replay, so each goes to the dead-letter topic with the reason, and the indexer goes
    on with the next page instead of exiting."""
    rng = random.Random(7)
    key = await make_key(search, admin, "refused-pages", faq=[], docs=[])
    indexer_pid = services.pid("indexer")
    long_name = "https://shop.example/" + "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(1500))
    refused = [page("bad\x00key", "https://shop.example/nul.html", "A page of no key."),
               page(key.id, long_name, "A page whose name is too long to index."),
               page(key.id, "https://shop.example/when.html", "A page crawled at no time a clock can tell.")]
    refused[2].occurred_at.seconds = 10**12      # after year 9999: no Timestamp
    good = page(key.id, "https://shop.example/after.html", "The page after the refused ones is indexed.")
    producer = EventProducer(settings.kafka_bootstrap, client_id="test-pages")
    await producer.start()
    try:
        sent = [await producer.publish(settings.topic("knowledge_pages"), p.product_key_id, p, wait=True)
                for p in refused]
        offsets = {(m.partition, m.offset) for m in sent}
    finally:
        await producer.stop()
    await hand_over(settings, good)
    assert await chunks_by_document(pg, key.id) == {good.document: list(good.chunks)}
    assert services.pid("indexer") == indexer_pid, "the indexer exited"
    consumer = AIOKafkaConsumer(settings.topic("deadletter"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    reasons: dict[tuple[int, int], str] = {}
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(reasons) < len(refused) and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    headers = dict(r.headers)
                    offset = (int(headers.get("source-partition", b"-1")), int(headers.get("source-offset", b"-1")))
                    if headers.get("source-topic") == settings.topic("knowledge_pages").encode() and offset in offsets:
                        reasons[offset] = headers.get("reason", b"").decode()
    finally:
        await consumer.stop()
    assert sorted(reasons) == sorted(offsets), reasons
    assert any("product key id" in r for r in reasons.values()), reasons
    assert any("ProgramLimitExceeded" in r for r in reasons.values()), reasons
    assert any("occurred_at is no time" in r for r in reasons.values()), reasons


async def test_a_second_search_process_answers_from_the_changed_knowledge(services, search, admin, test_env,
                                                                          tmp_path, settings):
    """Two search processes: knowledge changed through one; the other's dense scores follow at once."""
    from services.common.grpc_server import channel, check_serving
    from services.common.pb.parley.v1 import search_pb2, search_pb2_grpc
    from services.launcher import Launcher
    from bench.harness import free_port

    addr = f"127.0.0.1:{free_port()}"
    second = Launcher(tmp_path, env={**test_env, "PARLEY_SEARCH_ADDR": addr,
                                     "PARLEY_SEARCH_METRICS_PORT": str(free_port())})
    second.start(["search"])
    key = await make_key(search, admin, "two-processes", faq=[],
                         docs=[("Returns", "Unused items can be sent back within thirty days.")])
    question = "how do I connect the speaker to my phone?"
    try:
        async with channel(addr) as ch:
            deadline = asyncio.get_running_loop().time() + 90
            while True:
                try:
                    await check_serving(ch, "search")
                    break
                except Exception:  # noqa: BLE001 - still starting
                    assert asyncio.get_running_loop().time() < deadline, "second search process not serving"
                    await asyncio.sleep(0.5)
            other = search_pb2_grpc.SearchServiceStub(ch)
            before = await other.Plan(search_pb2.PlanRequest(product_key=key.secret, message=question), timeout=10)
            assert before.scores["dense"] < 0.3                       # its index is loaded, without the answer
            await search.AddDocument(search_pb2.AddDocumentRequest(
                product_key_id=key.id, title="Pairing",
                text="Pair the speaker with your phone over Bluetooth from the app."), metadata=admin, timeout=10)
            after = await other.Plan(search_pb2.PlanRequest(product_key=key.secret, message=question), timeout=10)
            assert after.scores["dense"] > 0.5
            assert after.knowledge_version > before.knowledge_version
    finally:
        second.stop(["search"])


async def test_no_page_is_lost_when_the_indexer_is_killed(services, search, admin, pg, settings):
    key = await make_key(search, admin, "indexer-crash", faq=[], docs=[])
    pages = [page(key.id, f"https://shop.example/p{i}.html", f"Page {i} explains topic number {i}.",
                  f"A second paragraph of page {i}.") for i in range(30)]
    producer = EventProducer(settings.kafka_bootstrap, client_id="test-pages")
    await producer.start()
    try:
        for p in pages:
            await producer.publish(settings.topic("knowledge_pages"), key.id, p, wait=True)
    finally:
        await producer.stop()
    await asyncio.sleep(0.5)
    services.kill("indexer")                                        # SIGKILL, in the middle of the pages
    services.start(["indexer"])
    await hand_over(settings)                                       # waits for the lag to reach 0
    stored = await chunks_by_document(pg, key.id)
    assert sorted(stored) == sorted(p.document for p in pages)
    assert all(len(chunks) == 2 for chunks in stored.values())      # replayed pages are not doubled


@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["stopped", "killed"])
async def test_no_page_is_lost_when_postgres_restarts_under_the_indexer(services, search, admin, pg, settings, how):
    """PostgreSQL stopped in order (its backends end their queries with 57P01) or SIGKILLed (the
    connections drop) while pages keep coming: the indexer waits for it, does not exit, and every
    page is indexed once, with its chunks not doubled."""
    from tests.analytics.test_stream_faults import _restart_postgres

    key = await make_key(search, admin, f"indexer-pg-{how}", faq=[], docs=[])
    indexer_pid = services.pid("indexer")
    pages = [page(key.id, f"https://shop.example/{how}/p{i}.html", f"Page {i} explains topic number {i}.",
                  f"A second paragraph of page {i}.") for i in range(120)]
    producer = EventProducer(settings.kafka_bootstrap, client_id="test-pages")
    await producer.start()

    async def trickle() -> None:   # pages arriving before, during and after the restart
        for p in pages:
            await producer.publish(settings.topic("knowledge_pages"), key.id, p, wait=True)
            await asyncio.sleep(0.05)

    try:
        sending = asyncio.ensure_future(trickle())
        await asyncio.sleep(1.5)
        await asyncio.to_thread(_restart_postgres, how, 3.0)
        await sending
    finally:
        await producer.stop()
    await hand_over(settings)
    stored = await chunks_by_document(pg, key.id)
    assert sorted(stored) == sorted(p.document for p in pages)
    assert all(len(chunks) == 2 for chunks in stored.values())
    assert services.pid("indexer") == indexer_pid, "the indexer exited"


async def test_a_recently_valid_key_has_its_retrieval_started_while_it_is_validated(search, admin, pg,
                                                                                    redis_client, settings,
                                                                                    monkeypatch):
    # Plan starts the retrieval (query embedding and full-text statement) before validating a key that
    # was valid moments ago, and then uses it instead of starting another. A key never seen valid buys none.
    from services.common.errors import Unauthenticated
    from services.search import retrieval
    from services.search.planner import Planner

    statements = []
    search_statement = retrieval.search

    async def counted_search(*args, **kwargs):
        statements.append(args[1])
        return await search_statement(*args, **kwargs)

    monkeypatch.setattr(retrieval, "search", counted_search)
    key = await make_key(search, admin, "early-retrieval", faq=[],
                         docs=[("Specifications", "The X200 battery pack weighs 1.2 kilograms.")])
    dense = DenseRetrieval(pg, Embedder.load(), 64 << 20, candidates=5)
    planner = Planner(settings, pg, redis_client, dense=dense)
    with pytest.raises(Unauthenticated):
        await planner.plan("pk_never-valid-" + "x" * 24, "how heavy is the battery?")
    assert dense.queries.misses == 0 and statements == []
    first = await planner.plan(key.secret, "how heavy is the battery?")
    assert dense.queries.misses == 1 and statements == [key.id]
    slow = planner.keys.validate

    async def slow_validation(secret):
        assert dense.queries._pending, "the embedding did not start before the key was validated"
        await asyncio.sleep(0.3)
        assert len(statements) == 2, "the full-text statement did not start before the key was validated"
        return await slow(secret)

    planner.keys.validate = slow_validation
    second = await planner.plan(key.secret, "what does the X200 battery weigh?")
    assert dense.queries.misses == 2        # one embedding per message: the early one was awaited
    assert statements == [key.id] * 2       # and one statement: the early one was used
    assert first.decision.scores["dense"] > 0.4 and second.decision.scores["dense"] > 0.4     # the passage was found


async def test_an_early_retrieval_of_older_knowledge_is_not_used(search, admin, pg, redis_client, settings):
    # The key record remembered from the last Plan names the knowledge version the early retrieval reads
    # the key's vectors at; once the knowledge changed, Plan retrieves again at the new version.
    from services.search.planner import Planner

    key = await make_key(search, admin, "early-retrieval-version", faq=[],
                         docs=[("Returns", "Unused items can be sent back within thirty days.")])
    dense = DenseRetrieval(pg, Embedder.load(), 64 << 20, candidates=5)
    planner = Planner(settings, pg, redis_client, dense=dense)
    first = await planner.plan(key.secret, "can I return it?")
    versions = []
    retrieve = planner._retrieve

    async def recorded(record, text, limit):
        versions.append(record.knowledge_version)
        return await retrieve(record, text, limit)

    planner._retrieve = recorded
    await search.AddDocument(search_pb2.AddDocumentRequest(
        product_key_id=key.id, title="Charger", text="The X200 charger outputs 65 watts over USB-C."),
        metadata=admin, timeout=10)
    second = await planner.plan(key.secret, "how much power does the adapter deliver?")
    changed = second.key.knowledge_version
    assert changed > first.key.knowledge_version
    assert versions == [first.key.knowledge_version, changed]      # the early one, then the one used
    assert dense.index.loaded(key.id).version == changed


async def test_an_early_retrieval_for_a_revoked_key_is_dropped(search, admin, pg, redis_client, settings):
    from services.common.errors import Unauthenticated
    from services.search.planner import Planner

    key = await make_key(search, admin, "early-retrieval-revoked", faq=[],
                         docs=[("Returns", "Unused items can be sent back within thirty days.")])
    planner = Planner(settings, pg, redis_client, dense=DenseRetrieval(pg, Embedder.load(), 64 << 20, candidates=5))
    await planner.plan(key.secret, "can I return it?")
    tasks = []
    retrieve_early = planner._retrieve_early

    def recorded(*args):
        early = retrieve_early(*args)
        if early is not None:
            tasks.append(early[1])
        return early

    planner._retrieve_early = recorded
    retrieve = planner._retrieve

    async def slow_retrieve(*args):
        await asyncio.sleep(10)             # still under way when the key is refused
        return await retrieve(*args)

    planner._retrieve = slow_retrieve
    await search.RevokeProductKey(search_pb2.RevokeProductKeyRequest(id=key.id), metadata=admin, timeout=10)
    with pytest.raises(Unauthenticated):
        await planner.plan(key.secret, "how long do I have to return it?")
    (task,) = tasks
    await asyncio.wait([task], timeout=5)
    assert task.cancelled()
    with pytest.raises(Unauthenticated):                            # no longer remembered as valid
        await planner.plan(key.secret, "how long do I have to return it?")
    assert len(tasks) == 1


async def test_pages_of_a_revoked_key_are_dropped_and_the_pages_after_them_indexed(services, search, admin, pg,
                                                                                  settings):
    """A crawl still under way when its key is revoked: its pages change nothing (as AddDocument is
    refused), they are counted and committed past, not retried nor dead-lettered, and the indexer
    goes on with the next key's pages."""
    import httpx

    revoked = await make_key(search, admin, "revoked-crawl", faq=[], docs=[])
    live = await make_key(search, admin, "live-crawl", faq=[], docs=[])
    await hand_over(settings, page(revoked.id, "https://shop.example/kept.html", "Indexed before the revocation."))
    await search.RevokeProductKey(search_pb2.RevokeProductKeyRequest(id=revoked.id), metadata=admin, timeout=10)
    version = await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", revoked.id)
    indexer_pid = services.pid("indexer")
    after = page(live.id, "https://shop.example/after.html", "The page after the revoked key's pages.")
    await hand_over(settings, page(revoked.id, "https://shop.example/late.html", "Written after the revocation."),
                    page(revoked.id, "https://shop.example/kept.html", removed=True), after)
    assert await chunks_by_document(pg, revoked.id) == {
        "https://shop.example/kept.html": ["Indexed before the revocation."]}
    assert await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", revoked.id) == version
    assert await chunks_by_document(pg, live.id) == {after.document: list(after.chunks)}
    assert services.pid("indexer") == indexer_pid, "the indexer exited"
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{settings.indexer_metrics_port}/metrics")).text
    dropped = [line for line in metrics.splitlines()
               if line.startswith("parley_indexer_pages_dropped_total") and 'reason="key_revoked"' in line]
    assert dropped and float(dropped[0].split()[-1]) >= 2, dropped


async def test_reembedding_that_fails_midway_has_bumped_the_keys_of_the_batches_it_stored(search, admin, pg):
    """Re-embedding stopped by an error after a batch (PostgreSQL gone, a bug): the keys whose vectors that
    batch stored have a new version already, so the search replicas reload their vectors."""
    from services.search.indexing import Indexing

    key = await make_key(search, admin, "stale-midway", faq=[("Is it waterproof?", "Yes, to IPX7.")],
                         docs=[("Care", "Rinse the frame with fresh water. Dry the chain and oil it lightly.")])
    await pg.execute("UPDATE knowledge_chunks SET sentence_embeddings = NULL WHERE product_key_id = $1", key.id)
    version = await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key.id)
    indexing = Indexing(pg)
    embed, calls = indexing._embed_chunks, []

    async def failing_after_one(texts):
        calls.append(len(texts))
        if len(calls) > 1:
            raise ConnectionError("gone mid-way")
        return await embed(texts)

    indexing._embed_chunks = failing_after_one
    with pytest.raises(ConnectionError):
        await indexing.reembed_stale(batch=1)
    assert await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key.id) > version
    assert (await Indexing(pg).reembed_stale())[key.id] > version     # the rest, on the next attempt
