"""The answer decision through the real Plan (dense + lexical): a paraphrase finds its page; a question about
the product that the knowledge does not cover is NO_ANSWER, not the nearest page; the answer quotes by meaning."""

from __future__ import annotations

import pytest

from services.common.pb.parley.v1 import common_pb2, response_pb2
from tests.conftest import make_key
from tests.search.conftest import plan

pytestmark = pytest.mark.integration

DOCS = [
    ("Ridge specifications", "The Ridge cargo bike weighs 34.5 kg including one battery. Its rear rack carries up to 80 kg."),
    ("Charging", "A PowerPack battery charges from empty to full in 4.5 hours with the standard charger. "
                 "Charge it indoors between 0 and 40 degrees."),
    ("Returns", "You can send a bike back within 30 days of delivery for a full refund of the purchase price."),
    ("The Ride app", "Pair the bike with the Trailhead Ride app over Bluetooth: enter the six-digit code shown on "
                     "the display within two minutes."),
]


@pytest.fixture(scope="module")
async def bikes(search, admin):
    return await make_key(search, admin, "decision-bikes", faq=[], docs=DOCS)


@pytest.mark.parametrize("question, title", [
    ("how heavy is the ridge?", "Ridge specifications"),
    ("connect the bike to my phone", "The Ride app"),
    ("I changed my mind after it arrived, can I get my money back?", "Returns"),
    ("how long till the pack is full again", "Charging"),
])
async def test_a_paraphrase_finds_the_right_page(search, bikes, question, title):
    reply = await plan(search, bikes.secret, question)
    assert reply.strategy == common_pb2.STRATEGY_KNOWLEDGE, reply.reasons
    assert reply.passages[0].title == title
    assert reply.scores["dense"] > 0


@pytest.mark.parametrize("question", [
    "Is there a Black Friday sale this year?",
    "Are you hiring mechanics?",
    "Do you sponsor community events?",
])
async def test_a_product_question_the_knowledge_does_not_cover_is_no_answer(search, bikes, question):
    reply = await plan(search, bikes.secret, question)
    assert reply.strategy == common_pb2.STRATEGY_NO_ANSWER, (reply.reasons, [p.title for p in reply.passages])
    assert not reply.passages and any("close enough" in r for r in reply.reasons)


async def test_chat_quotes_the_sentence_that_answers_and_cites_its_passage_once(response, bikes):
    reply = await response.Chat(response_pb2.ChatRequest(product_key=bikes.secret, message="how heavy is the ridge?",
                                                         no_cache=True), timeout=30)
    assert "34.5 kg" in reply.answer and reply.strategy == common_pb2.STRATEGY_KNOWLEDGE
    ids = [s.id for s in reply.sources]
    assert ids and len(ids) == len(set(ids)) and all(reply.answer.count(f"[{i}]") == 1 for i in ids)
