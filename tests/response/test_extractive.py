"""The extractive answerer: cites what it uses, and says so when nothing fits."""

from __future__ import annotations

from services.response.llm import NO_ANSWER_TEXT, AnswerRequest, ExtractiveAnswerer, PassageText

DOC = PassageText("7", "document", "Plans", "The Plus plan costs 49 euros per year. Support is open on weekdays.", 0.8)
FAQ = PassageText("3", "faq", "How do I reset my password?", "How do I reset my password?\nUse the Forgot password link.", 0.9)


def ask(message, passages, strategy="KNOWLEDGE"):
    return ExtractiveAnswerer().answer(AnswerRequest(message, "Acme", "", strategy, passages))


def test_best_sentence_is_cited():
    answer = ask("How much is the Plus plan per year?", [DOC])
    assert answer.text == "The Plus plan costs 49 euros per year. [7]"
    assert answer.cited == ["7"]


def test_matching_faq_answers_with_its_stored_answer():
    answer = ask("I forgot my password, how do I reset it?", [FAQ, DOC])
    assert answer.text == "Use the Forgot password link. [3]"


def test_one_shared_word_is_not_an_answer():
    answer = ask("Do you sell plans for bicycles in Paris or Rome?", [DOC])
    assert answer.text == NO_ANSWER_TEXT and answer.cited == []


def test_greeting_needs_no_passages():
    assert "Acme" in ask("hello", [], strategy="GREETING").text


def test_no_passages_no_answer():
    assert ask("What is the price?", []).text == NO_ANSWER_TEXT


def test_the_same_sentence_from_two_sources_is_said_once():
    page = PassageText("9", "page", "Plans", "The Plus plan costs 49 euros per year.", 0.7)
    answer = ask("How much is the Plus plan per year?", [DOC, page])
    assert answer.text.count("The Plus plan costs 49 euros per year.") == 1
