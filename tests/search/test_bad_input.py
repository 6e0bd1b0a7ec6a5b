"""Bad input never raises an internal error, and no query of one key ever returns another key's chunk."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from services.common.pb.parley.v1 import search_pb2
from services.search import retrieval
from tests.conftest import make_key, rpc_error

NASTY = [
    "!!! & | ( ) : * <-> <2> ' \" \\ ; -- /* */",
    "password:* & !reset | (",
    "'; DROP TABLE knowledge_chunks; --",
    "\"unterminated quote",
    "a <-> b <-> c",
    "🙂🔥💾 how do I 🔑 reset?",
    "Как сбросить пароль? パスワード 密码 كلمة المرور",
    "x" * 3999,
    "pass\u0000word",
    "\u202e\u200b\ufeff zero width",
]


@pytest.fixture(scope="module")
async def two_keys(search, admin):
    shared = [("Do you deliver bread?", "We deliver bread and cakes within 5 km.")]
    a = await make_key(search, admin, "srch-iso-a", faq=shared, docs=[
        ("Bread", "Sourdough bread, rye bread and cakes are baked every morning. Delivery costs 2 euros.")])
    b = await make_key(search, admin, "srch-iso-b", faq=shared, docs=[
        ("Bikes", "Bread baskets for bikes, delivery of bikes and cakes of tyre sealant. Every morning we open.")])
    return a, b


@pytest.mark.parametrize("message", NASTY)
async def test_nasty_messages_are_answered_not_internal_errors(search, two_keys, message):
    reply = await search.Plan(search_pb2.PlanRequest(product_key=two_keys[0].secret, message=message), timeout=10)
    assert reply.product_key_id == two_keys[0].id


@pytest.mark.parametrize("message, code", [
    ("", grpc.StatusCode.INVALID_ARGUMENT),
    (" \n\t ", grpc.StatusCode.INVALID_ARGUMENT),
    ("\u200b\u2060", grpc.StatusCode.INVALID_ARGUMENT),     # shows nothing: empty, as Chat says
    ("\x00", grpc.StatusCode.INVALID_ARGUMENT),
    ("x" * 100_000, grpc.StatusCode.INVALID_ARGUMENT),
])
async def test_empty_and_huge_messages_are_invalid_arguments(search, two_keys, message, code):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search.Plan(search_pb2.PlanRequest(product_key=two_keys[0].secret, message=message), timeout=10)
    assert rpc_error(info).code() == code


@pytest.mark.parametrize("max_passages", [-1, 51, 2**31 - 1])
async def test_a_passage_count_out_of_range_is_invalid_argument_not_the_default(search, two_keys, max_passages):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search.Plan(search_pb2.PlanRequest(product_key=two_keys[0].secret, message="How do I return an item?",
                                                 max_passages=max_passages), timeout=10)
    assert rpc_error(info).code() == grpc.StatusCode.INVALID_ARGUMENT and "max_passages" in rpc_error(info).details()
    for allowed in (0, 1, 50):
        await search.Plan(search_pb2.PlanRequest(product_key=two_keys[0].secret, message="How do I return an item?",
                                                 max_passages=allowed), timeout=10)


async def test_a_garbage_key_is_unauthenticated(search):
    for secret in ["pk_" + "🙂" * 10, "'; --", " " * 5]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await search.Plan(search_pb2.PlanRequest(product_key=secret, message="hello"), timeout=10)
        assert rpc_error(info).code() == grpc.StatusCode.UNAUTHENTICATED


WORDS = st.sampled_from(["bread", "deliver", "cakes", "bikes", "morning", "every", "tyre", "rye", "euros", "open",
                         "do", "you", "&", "|", "!", "(", ")", ":*", "<->", "'", "\\"])
MESSAGES = st.one_of(
    st.lists(WORDS, min_size=1, max_size=12).map(" ".join),
    st.text(min_size=1, max_size=300),
)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=MESSAGES)
async def test_no_query_of_one_key_returns_a_chunk_of_another(pg, two_keys, message):
    a, b = two_keys
    ids = {k.id: {str(r["id"]) for r in await pg.fetch(
        "SELECT id FROM knowledge_chunks WHERE product_key_id = $1", k.id)} for k in (a, b)}
    for key in (a, b):
        chunks = await retrieval.search(pg, key.id, "english", message, limit=10, candidates=20)
        assert {c.id for c in chunks} <= ids[key.id]
