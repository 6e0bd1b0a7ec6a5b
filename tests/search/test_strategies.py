"""The strategy decision through Plan: FAQ with its stored answer, WEB, DIRECT, NO_ANSWER."""

from __future__ import annotations

import asyncio
import time

from services.common.pb.parley.v1 import common_pb2, search_pb2
from tests.conftest import RUN_ID, make_key
from tests.search.conftest import plan


async def _key(search, admin, suffix: str, **kwargs) -> str:
    reply = await search.CreateProductKey(
        search_pb2.CreateProductKeyRequest(name=suffix, id=f"t-{RUN_ID}-srch-{suffix}", **kwargs), metadata=admin, timeout=10
    )
    await search.AddFaq(search_pb2.AddFaqRequest(product_key_id=reply.key.id, question="Do you ship abroad?",
                                                 answer="We ship to every EU country."), metadata=admin, timeout=10)
    return reply.product_key


async def test_close_faq_question_is_answered_from_the_faq(search, admin):
    key = await make_key(search, admin, "srch-faqonly", faq=[("How do I reset my password?", "Use the Forgot link.")], docs=[])
    reply = await plan(search, key.secret, "how can I reset my password")
    assert reply.strategy == common_pb2.STRATEGY_FAQ
    assert reply.faq_answer == "Use the Forgot link." and reply.scores["faq"] >= 0.6
    assert any("FAQ" in r for r in reply.reasons)


async def test_website_without_relevant_knowledge_asks_for_a_page(search, admin):
    secret = await _key(search, admin, "web", website="https://shop.example")
    deadline = time.monotonic() + 15  # the scraper's health is checked every few seconds
    reply = await plan(search, secret, "What colours does the jacket come in?")
    while reply.strategy != common_pb2.STRATEGY_WEB and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        reply = await plan(search, secret, "What colours does the jacket come in?")
    assert reply.strategy == common_pb2.STRATEGY_WEB
    assert reply.fetch_url == reply.website == "https://shop.example" and not reply.passages
    # Knowledge that answers still wins over the website.
    assert (await plan(search, secret, "Do you ship abroad?")).strategy == common_pb2.STRATEGY_FAQ


async def test_direct_only_when_the_key_allows_it(search, admin):
    direct = await _key(search, admin, "direct", settings=search_pb2.KeySettings(allow_direct=True))
    reply = await plan(search, direct, "Write me a poem about autumn")
    assert reply.strategy == common_pb2.STRATEGY_DIRECT and any("allow" in r for r in reply.reasons)
    plain = await _key(search, admin, "nodirect")
    reply = await plan(search, plain, "Write me a poem about autumn")
    assert reply.strategy == common_pb2.STRATEGY_NO_ANSWER and not reply.passages


async def test_greeting_needs_no_retrieval(search, admin):
    secret = await _key(search, admin, "greet")
    reply = await plan(search, secret, "Hello!")
    assert reply.strategy == common_pb2.STRATEGY_GREETING and not reply.passages


async def test_plan_reports_the_share_of_the_message_terms_the_knowledge_knows(search, admin):
    key = await make_key(search, admin, "srch-known", faq=[], docs=[
        ("Batteries", "The battery pack weighs 3.1 kg and charges fully in four hours."),
        ("Returns", "Unused items can be returned within 30 days for a full refund.")])
    known = await plan(search, key.secret, "what does the battery pack weigh")
    assert known.scores["known"] == 1.0 and known.strategy == common_pb2.STRATEGY_KNOWLEDGE
    half = await plan(search, key.secret, "does the battery pack sync with zorbulator")
    assert 0.3 <= half.scores["known"] <= 0.7, dict(half.scores)
    assert "support" in half.scores


async def test_asking_whether_there_is_a_thing_the_knowledge_never_names_is_no_answer(search, admin):
    key = await make_key(search, admin, "srch-unnamed", faq=[], docs=[
        ("Plans and pricing", "The Studio plan costs 24 euros a month. Paying yearly saves 20 percent, and "
                              "students get a 50 percent discount with a valid student card."),
        ("Returns", "Unused items can be returned within 30 days for a full refund.")])
    # The pricing page is the nearest passage either way; only one of the two discounts is on it.
    named = await plan(search, key.secret, "Do you offer a student discount?")
    assert named.strategy == common_pb2.STRATEGY_KNOWLEDGE, list(named.reasons)
    unnamed = await plan(search, key.secret, "Do you offer a Black Friday discount?")
    assert unnamed.strategy == common_pb2.STRATEGY_NO_ANSWER and not unnamed.passages
    assert any("'Black Friday'" in r and "no passage" in r for r in unnamed.reasons), list(unnamed.reasons)
    # Asked as a second question beside one the knowledge answers, the message is still answered.
    both = await plan(search, key.secret, "Is there a Black Friday deal? And how much does the Studio plan cost?")
    assert both.strategy == common_pb2.STRATEGY_KNOWLEDGE, list(both.reasons)
