"""The strategy decision."""

from __future__ import annotations

import pytest

from services.search.retrieval import Chunk
from services.search.strategy import decide


def chunk(score: float) -> Chunk:
    return Chunk("1", "document", "t", "", "text", "", score)


@pytest.mark.parametrize("message", ["hi", "Hello!", "good morning", "hey there"])
def test_greetings(message):
    assert decide(message, [chunk(0.9)], min_score=0.1).strategy == "GREETING"


def test_thanks_is_smalltalk():
    assert decide("thanks!", [], min_score=0.1).strategy == "SMALLTALK"


def test_relevant_passages_mean_knowledge_with_reasons():
    d = decide("what does it cost", [chunk(0.5), chunk(0.05)], min_score=0.1)
    assert d.strategy == "KNOWLEDGE" and len(d.chunks) == 1 and d.reasons


def test_weak_or_no_passages_mean_no_answer():
    assert decide("what does it cost", [chunk(0.05)], min_score=0.1).strategy == "NO_ANSWER"
    assert decide("what does it cost", [], min_score=0.1).strategy == "NO_ANSWER"
