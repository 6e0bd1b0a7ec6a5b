"""Admin input of keys and knowledge: size limits, revoked or unknown keys, and text stored clean
(no control characters, escape sequences or bidi overrides) whichever path it came by."""

from __future__ import annotations

import grpc
import pytest

from services.common.pb.parley.v1 import search_pb2
from services.search import keys, knowledge
from tests.conftest import RUN_ID, make_key, rpc_error
from tests.search.conftest import plan
from tests.search.test_indexer import hand_over, page

pytestmark = pytest.mark.integration

# What only a terminal or a text renderer acts on, and what PostgreSQL refuses (NUL).
DIRTY = "\x1b[31m\x1b]0;title\x07\u202e\x00\x07"


async def _code(call, request, admin) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(request, metadata=admin, timeout=30)
    return rpc_error(info)


async def test_faq_size_limits(search, admin):
    key = await make_key(search, admin, "in-faq-size", faq=[], docs=[])
    long_question = "Why? " * (knowledge.MAX_QUESTION_CHARS // 5) + "x"
    error = await _code(search.AddFaq, search_pb2.AddFaqRequest(product_key_id=key.id, question=long_question,
                                                                answer="Because."), admin)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and str(knowledge.MAX_QUESTION_CHARS) in error.details()
    error = await _code(search.AddFaq, search_pb2.AddFaqRequest(
        product_key_id=key.id, question="Why?", answer="a " * (knowledge.MAX_ANSWER_CHARS // 2 + 1)), admin)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and str(knowledge.MAX_ANSWER_CHARS) in error.details()
    # 1,000 characters outside ASCII are too long for the index on the question: refused, not INTERNAL.
    error = await _code(search.AddFaq, search_pb2.AddFaqRequest(
        product_key_id=key.id, question="".join(chr(0x4E00 + i * 7 % 20000) for i in range(1000)), answer="Yes."),
        admin)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "bytes" in error.details()
    at_limit = await search.AddFaq(search_pb2.AddFaqRequest(
        product_key_id=key.id, question=long_question[:knowledge.MAX_QUESTION_CHARS],
        answer="b" * knowledge.MAX_ANSWER_CHARS), metadata=admin, timeout=30)
    assert len(at_limit.chunk_ids) == 1


async def test_document_title_and_url_limits(search, admin):
    key = await make_key(search, admin, "in-doc-size", faq=[], docs=[])
    for title, url in [("t" * 1_000_000, ""), ("Title", "doc:" + "u" * knowledge.MAX_URL_CHARS),
                       ("🙂" * 1000, "")]:
        error = await _code(search.AddDocument, search_pb2.AddDocumentRequest(
            product_key_id=key.id, title=title, text="Some text of the document.", url=url), admin)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (title[:10], url[:10])


async def test_key_name_and_instructions_limits(search, admin):
    error = await _code(search.CreateProductKey, search_pb2.CreateProductKeyRequest(
        name="n" * (keys.MAX_NAME_CHARS + 1), id=f"t-{RUN_ID}-in-name"), admin)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and str(keys.MAX_NAME_CHARS) in error.details()
    error = await _code(search.CreateProductKey, search_pb2.CreateProductKeyRequest(
        name="Shop", id=f"t-{RUN_ID}-in-instr", instructions="i" * (keys.MAX_INSTRUCTIONS_CHARS + 1)), admin)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and str(keys.MAX_INSTRUCTIONS_CHARS) in error.details()
    reply = await search.CreateProductKey(search_pb2.CreateProductKeyRequest(
        name="n" * keys.MAX_NAME_CHARS, id=f"t-{RUN_ID}-in-limits", instructions="i" * keys.MAX_INSTRUCTIONS_CHARS),
        metadata=admin, timeout=10)
    assert reply.key.name == "n" * keys.MAX_NAME_CHARS


async def test_knowledge_of_a_revoked_or_unknown_key_is_refused(search, admin, pg):
    key = await make_key(search, admin, "in-revoked", faq=[], docs=[])
    await search.RevokeProductKey(search_pb2.RevokeProductKeyRequest(id=key.id), metadata=admin, timeout=10)
    for key_id, code in [(key.id, grpc.StatusCode.FAILED_PRECONDITION),
                         (f"t-{RUN_ID}-no-such-key", grpc.StatusCode.NOT_FOUND),
                         ("no\x00such", grpc.StatusCode.NOT_FOUND)]:
        error = await _code(search.AddFaq, search_pb2.AddFaqRequest(
            product_key_id=key_id, question="Do you ship abroad?", answer="Yes."), admin)
        assert error.code() == code
        error = await _code(search.AddDocument, search_pb2.AddDocumentRequest(
            product_key_id=key_id, title="Shipping", text="We ship to the EU."), admin)
        assert error.code() == code
    assert "revoked" in (await _code(search.AddFaq, search_pb2.AddFaqRequest(
        product_key_id=key.id, question="q", answer="a"), admin)).details()
    assert await pg.fetchval("SELECT count(*) FROM knowledge_chunks WHERE product_key_id = $1", key.id) == 0
    for rpc, request in [("RevokeProductKey", search_pb2.RevokeProductKeyRequest(id="x\x00y")),
                         ("RotateProductKey", search_pb2.RotateProductKeyRequest(id="x" * 100_000))]:
        error = await _code(getattr(search, rpc), request, admin)
        assert error.code() == grpc.StatusCode.NOT_FOUND and len(error.details()) < 200


async def test_knowledge_of_a_revoked_key_can_still_be_deleted(search, admin, pg):
    """Adding to a revoked key's knowledge is refused; deleting is not: it serves nothing to anyone, and is
    how what the key held (personal data in a document, say) is removed after the revocation."""
    key = await make_key(search, admin, "in-revoked-del", faq=[("Do you ship abroad?", "Yes, to the EU."),
                                                               ("Do you ship to Mars?", "No.")], docs=[])
    chunk_id = await pg.fetchval("SELECT id FROM knowledge_chunks WHERE product_key_id = $1 AND question LIKE "
                                 "'%Mars%'", key.id)
    await search.RevokeProductKey(search_pb2.RevokeProductKeyRequest(id=key.id), metadata=admin, timeout=10)
    error = await _code(search.AddFaq, search_pb2.AddFaqRequest(product_key_id=key.id, question="q?", answer="a"),
                        admin)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "revoked" in error.details()
    for request in [search_pb2.DeleteKnowledgeRequest(product_key_id=key.id, document="Do you ship abroad?"),
                    search_pb2.DeleteKnowledgeRequest(product_key_id=key.id, chunk_id=str(chunk_id))]:
        assert (await search.DeleteKnowledge(request, metadata=admin, timeout=10)).deleted == 1
    assert await pg.fetchval("SELECT count(*) FROM knowledge_chunks WHERE product_key_id = $1", key.id) == 0


async def test_ids_with_control_characters_are_answered_by_the_format_check(search, admin, pg):
    """A key id or chunk id holding NUL or another control character cannot name anything: NOT_FOUND
    (key ids) or INVALID_ARGUMENT (chunk ids) with a message that says so, before PostgreSQL (which
    refuses NUL in text) is asked."""
    key = await make_key(search, admin, "in-ctl-ids", faq=[("Do you ship abroad?", "Yes.")], docs=[])
    for key_id in ["no\x00such", key.id + "\x00", "\x01" + key.id, key.id + "\n", key.id + "\x1b[0m"]:
        for call, request in [
            (search.DeleteKnowledge, search_pb2.DeleteKnowledgeRequest(product_key_id=key_id, chunk_id="1")),
            (search.DeleteKnowledge, search_pb2.DeleteKnowledgeRequest(product_key_id=key_id,
                                                                       document="Do you ship abroad?")),
            (search.AddFaq, search_pb2.AddFaqRequest(product_key_id=key_id, question="q?", answer="a")),
            (search.AddDocument, search_pb2.AddDocumentRequest(product_key_id=key_id, title="t", text="x")),
            (search.RevokeProductKey, search_pb2.RevokeProductKeyRequest(id=key_id)),
            (search.RotateProductKey, search_pb2.RotateProductKeyRequest(id=key_id)),
        ]:
            error = await _code(call, request, admin)
            assert error.code() == grpc.StatusCode.NOT_FOUND, (key_id, request)
            assert "no product key with id" in error.details() and "incident" not in error.details()
    for chunk_id in ["1\x00", "\x001", "\x01", "1\n"]:
        error = await _code(search.DeleteKnowledge, search_pb2.DeleteKnowledgeRequest(
            product_key_id=key.id, chunk_id=chunk_id), admin)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "chunk_id" in error.details()
    # A document name of nothing but what is never stored names no document (not the untitled ones).
    await search.AddDocument(search_pb2.AddDocumentRequest(product_key_id=key.id, text="Untitled note."),
                             metadata=admin, timeout=30)
    error = await _code(search.DeleteKnowledge, search_pb2.DeleteKnowledgeRequest(
        product_key_id=key.id, document="\x00\x1b[0m"), admin)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "document" in error.details()
    assert await pg.fetchval("SELECT count(*) FROM knowledge_chunks WHERE product_key_id = $1", key.id) == 2


async def test_admin_knowledge_is_stored_clean_and_blank_is_refused(search, admin, pg):
    key = await make_key(search, admin, "in-clean", faq=[], docs=[])
    await search.AddFaq(search_pb2.AddFaqRequest(
        product_key_id=key.id, question=f"Do you{DIRTY} ship abroad?", answer=f"Yes,{DIRTY} to the EU."),
        metadata=admin, timeout=10)
    await search.AddDocument(search_pb2.AddDocumentRequest(
        product_key_id=key.id, title=f"Re{DIRTY}turns", text=f"Returns are free{DIRTY} within 30 days.",
        url=f"doc:returns{DIRTY}.md"), metadata=admin, timeout=30)
    rows = await pg.fetch("SELECT document, title, question, content FROM knowledge_chunks WHERE product_key_id = $1"
                          " ORDER BY id", key.id)
    assert [tuple(r) for r in rows] == [
        ("Do you ship abroad?", "", "Do you ship abroad?", "Yes, to the EU."),
        ("doc:returns.md", "Returns", "", "Returns are free within 30 days."),
    ]
    assert (await plan(search, key.secret, "Do you ship abroad?")).faq_answer == "Yes, to the EU."
    blank = "\x1b[0m\u200b\x00 \u202e"
    for call, request in [
        (search.AddFaq, search_pb2.AddFaqRequest(product_key_id=key.id, question=blank, answer="Yes.")),
        (search.AddFaq, search_pb2.AddFaqRequest(product_key_id=key.id, question="Why?", answer=blank)),
        (search.AddDocument, search_pb2.AddDocumentRequest(product_key_id=key.id, title="T", text=blank)),
    ]:
        error = await _code(call, request, admin)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty" in error.details()


async def test_key_name_and_instructions_are_stored_clean(search, admin, pg):
    reply = await search.CreateProductKey(search_pb2.CreateProductKeyRequest(
        name=f"Sh{DIRTY}op", id=f"t-{RUN_ID}-in-cleankey", instructions=f"Be{DIRTY} brief."),
        metadata=admin, timeout=10)
    row = await pg.fetchrow("SELECT name, instructions FROM product_keys WHERE id = $1", reply.key.id)
    assert tuple(row) == ("Shop", "Be brief.")
    assert (await plan(search, reply.product_key, "hello")).instructions == "Be brief."
    error = await _code(search.CreateProductKey, search_pb2.CreateProductKeyRequest(
        name="\x1b[0m\u200b", id=f"t-{RUN_ID}-in-blankname"), admin)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "name" in error.details()


async def test_pages_from_the_indexer_are_stored_clean(services, search, admin, pg, settings):
    key = await make_key(search, admin, "in-clean-page", faq=[], docs=[])
    url = "https://shop.example/clean.html"
    dirty = page(key.id, url, f"Parcels{DIRTY} leave the warehouse daily.", "\x1b[0m\u200b\x00")
    dirty.title = f"Sh{DIRTY}ipping"
    await hand_over(settings, dirty)
    rows = await pg.fetch("SELECT title, content FROM knowledge_chunks WHERE product_key_id = $1", key.id)
    assert [tuple(r) for r in rows] == [("Shipping", "Parcels leave the warehouse daily.")]


async def test_bad_deletes_get_the_right_status(search, admin):
    key = await make_key(search, admin, "in-del", faq=[("Do you ship abroad?", "Yes.")], docs=[])
    for request, code in [
        (search_pb2.DeleteKnowledgeRequest(chunk_id="\u00b2"), grpc.StatusCode.INVALID_ARGUMENT),  # "²".isdigit()
        (search_pb2.DeleteKnowledgeRequest(chunk_id="9" * 30), grpc.StatusCode.INVALID_ARGUMENT),
        (search_pb2.DeleteKnowledgeRequest(document="Do you ship abroad?\x00"), grpc.StatusCode.OK),
        (search_pb2.DeleteKnowledgeRequest(document=" \t "), grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        request.product_key_id = key.id
        if code == grpc.StatusCode.OK:   # as stored: the NUL could never have been
            assert (await search.DeleteKnowledge(request, metadata=admin, timeout=10)).deleted == 1
        else:
            assert (await _code(search.DeleteKnowledge, request, admin)).code() == code


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
async def test_non_finite_key_settings_are_invalid(search, admin, value):
    error = await _code(search.CreateProductKey, search_pb2.CreateProductKeyRequest(
        name="x", id=f"t-{RUN_ID}-in-{value}", settings=search_pb2.KeySettings(rate_limit_per_second=value)), admin)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "rate_limit_per_second" in error.details()


async def test_knowledge_added_again_under_its_name_replaces_what_it_said_or_changes_nothing(search, admin, pg):
    """An FAQ entry is named by its question and a document by its url (or title): added again with
    the same text (an admin's retry after a lost reply), nothing changes (the same chunk ids, no new
    knowledge version, which would empty the key's answer caches for nothing); with new text (a file
    edited and `parley knowledge add` run again), the new text replaces the old."""
    key = await make_key(search, admin, "in-again", faq=[], docs=[])

    async def stored(document: str) -> list[str]:
        return [r["content"] for r in await pg.fetch(
            "SELECT content FROM knowledge_chunks WHERE product_key_id = $1 AND document = $2 ORDER BY position",
            key.id, document)]

    request = search_pb2.AddFaqRequest(product_key_id=key.id, question="Do you gift wrap?", answer="Yes, for 3 €.")
    first = await search.AddFaq(request, metadata=admin, timeout=30)
    again = await search.AddFaq(request, metadata=admin, timeout=30)
    assert list(again.chunk_ids) == list(first.chunk_ids) and len(first.chunk_ids) == 1
    assert again.knowledge_version == first.knowledge_version
    other = await search.AddFaq(search_pb2.AddFaqRequest(product_key_id=key.id, question="Do you gift wrap?",
                                                         answer="Yes, for 4 €."), metadata=admin, timeout=30)
    assert other.knowledge_version == first.knowledge_version + 1 and other.chunk_ids != first.chunk_ids
    assert await stored("Do you gift wrap?") == ["Yes, for 4 €."]

    text = "Returns are free within 30 days.\n\nRefunds reach your card within 5 working days."
    doc = search_pb2.AddDocumentRequest(product_key_id=key.id, title="Returns", text=text, url="doc:returns.md")
    first = await search.AddDocument(doc, metadata=admin, timeout=30)
    again = await search.AddDocument(doc, metadata=admin, timeout=30)
    assert list(again.chunk_ids) == list(first.chunk_ids) and again.knowledge_version == first.knowledge_version
    doc.text = text.replace("30 days", "60 days")
    edited = await search.AddDocument(doc, metadata=admin, timeout=30)
    assert edited.knowledge_version == first.knowledge_version + 1
    content = " ".join(await stored("doc:returns.md"))
    assert "60 days" in content and "30 days" not in content


async def test_a_document_named_with_the_spaces_it_was_added_with_is_deleted(search, admin):
    """AddDocument stores its title stripped; DeleteKnowledge looked for the name with its spaces, and
    found nothing."""
    key = await make_key(search, admin, "in-del-spaces", faq=[], docs=[])
    await search.AddDocument(search_pb2.AddDocumentRequest(product_key_id=key.id, title="  Shipping  ",
                                                           text="We ship to 40 countries."), metadata=admin, timeout=10)
    reply = await search.DeleteKnowledge(search_pb2.DeleteKnowledgeRequest(product_key_id=key.id, document="  Shipping  "),
                                         metadata=admin, timeout=10)
    assert reply.deleted == 1
