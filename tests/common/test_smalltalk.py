"""Small talk as people write it is recognised; a greeting with a real question is a question."""

from __future__ import annotations

import pytest

from services.common import smalltalk
from services.response.extractive import ExtractiveAnswerer
from services.response.llm import AnswerRequest
from services.search.strategy import Thresholds, decide

T = Thresholds(knowledge_min_score=0.5, faq_min_score=0.6)


@pytest.mark.parametrize("message, kind", [
    ("hi", "greeting"), ("Hello!", "greeting"), ("HEYYY!!!", "greeting"), ("heya", "greeting"),
    ("good morning team", "greeting"), ("Good evening.", "greeting"), ("hi there :)", "greeting"),
    ("Héllo", "greeting"), ("👋🏽 hi", "greeting"), ("yo!", "greeting"), ("Bonjour", "greeting"),
    ("Thanks!!", "thanks"), ("thank u so much 🙏", "thanks"), ("thaaanks", "thanks"), ("ty", "thanks"),
    ("Much appreciated.", "thanks"), ("ok thanks", "thanks"), ("cool, thank you!", "thanks"),
    ("thanks for the help!", "thanks"), ("That was helpful, thanks", "thanks"), ("cheers mate", "thanks"),
    ("ok that worked, thank you", "thanks"),
    ("bye", "goodbye"), ("See you later!", "goodbye"), ("goodbye, have a nice day", "goodbye"),
    ("Byeee", "goodbye"), ("ok bye", "goodbye"), ("take care", "goodbye"),
    ("are you a bot?", "bot"), ("Are u a real person?", "bot"), ("am I talking to a human", "bot"),
    ("Is this a bot or a human?", "bot"), ("who are you", "bot"), ("hi, are you a robot?", "bot"),
    ("Who am I chatting with?", "bot"),
    # A bare request for help is answered with what the assistant does ("What would you like to know?").
    ("help", "bot"), ("can you help me?", "bot"), ("what can you do?", "bot"),
    ("thnaks!", "thanks"), ("thx a bunch", "thanks"), ("see you tomorrow", "goodbye"), ("gotta go", "goodbye"),
    ("no worries", "ack"), ("oops, never mind", "ack"),
    ("how are you?", "wellbeing"), ("hi! how are you doing today?", "wellbeing"),
    ("ok", "ack"), ("Got it.", "ack"), ("awesome", "ack"),
    ("👍", "emoji"), ("🙂🙏", "emoji"), ("❤️", "emoji"), (":)", "emoji"), ("😂😂😂", "emoji"), ("🇫🇷", "emoji"),
    ("👍!", "emoji"), ("<3", "emoji"),
    ("Thank you very much for your help!", "thanks"), ("Thanks heaps", "thanks"), ("much obliged", "thanks"),
    ("you're the best", "thanks"), ("thank you kindly", "thanks"), ("ok thank you anyway", "thanks"),
    ("thanks, that answers my question", "thanks"), ("Thanks Tom!", "thanks"), ("ok thanks bye!", "thanks"),
    ("is anyone there?", "greeting"), ("hellooo anybody home", "greeting"), ("g'day", "greeting"),
    ("Hi Trailbot", "greeting"), ("HELLO THERE", "greeting"), ("howdy partner", "greeting"),
    ("catch you later", "goodbye"), ("bye for now", "goodbye"), ("no that's all", "goodbye"),
    ("nothing else", "goodbye"), ("take it easy", "goodbye"),
    ("are you chatgpt?", "bot"), ("are you a real human being?", "bot"), ("bot?", "bot"),
    ("you are a bot right?", "bot"), ("Are you an AI assistant?", "bot"), ("is there a real person", "bot"),
    ("how's your day?", "wellbeing"), ("how are things?", "wellbeing"),
])
def test_small_talk_in_any_case_and_punctuation(message, kind):
    found = smalltalk.classify(message)
    assert found is not None and found.kind == kind


@pytest.mark.parametrize("message", [
    "hi, how do I reset my password?", "thanks, but how do I cancel?", "hello can you help me with my order",
    "Hey! What does the Plus plan cost?", "battery weight?", "what is the price", "help with my order", "bye bye subscription, how?",
    "ok so how do I pair it with my phone", "thanks 👍 and is there a Linux app?", "good morning, my invoice is wrong",
    "Can I talk to a human about a refund?", "hi " * 60,
    "Hi Anna, how do I pay?", "hi Ridge battery?", "Is there a real person I can talk to about my bill?",
    "thanks, and what about the warranty?", "that's it? the charger only lasts a year?",
])
def test_a_greeting_with_a_question_is_a_question(message):
    assert smalltalk.classify(message) is None


def test_normalise_collapses_case_punctuation_accents_and_stretched_letters():
    assert smalltalk.normalise("HÉLLOOO!!!  Thereee...") == smalltalk.normalise("hello there")


def test_small_talk_is_decided_without_passages():
    d = decide("Thank you so much!!", [], T)
    assert d.strategy == "SMALLTALK" and not d.chunks
    assert decide("Hiii :)", [], T).strategy == "GREETING"


@pytest.mark.parametrize("message, words", [
    ("thanks!", "welcome"), ("bye!", "Goodbye"), ("are you a bot?", "virtual assistant"), ("hello", "Acme"),
])
def test_the_reply_fits_the_small_talk(message, words):
    strategy = smalltalk.classify(message).strategy
    answer = ExtractiveAnswerer().answer(AnswerRequest(message, "Acme", "", strategy, []))
    assert words in answer.text and not answer.cited


# Left alone: keyboard mashing and one-off stories have no phrase that would not also catch questions.
KNOWN_MISSES = {"dev3": ["asdfgh", "my cat just walked on the keyboard sorry"]}


@pytest.mark.parametrize("name", ["dev", "dev2", "dev3"])
def test_the_dev_sets_of_chat_messages_written_apart(name):
    """bench/eval/smalltalk/{dev,dev2,dev3}.json (written apart from the recogniser; their misses shaped
    the phrases): every small-talk message recognised but the known misses, no real question taken for
    small talk. The held-out set is reported by `make bench ARGS="--only smalltalk-eval"`."""
    import json
    from pathlib import Path

    data = json.loads((Path(__file__).parents[2] / f"bench/eval/smalltalk/{name}.json").read_text())
    missed = [s["message"] for s in data["smalltalk"] if smalltalk.classify(s["message"]) is None]
    taken = [q["message"] for q in data["questions"] if smalltalk.classify(q["message"]) is not None]
    assert (missed, taken) == (KNOWN_MISSES.get(name, []), [])


@pytest.mark.parametrize("message, kind", [
    ("hello?? anyone", "greeting"), ("hi, I'm Maria", "greeting"), ("quick question", "bot"),
    ("you doing ok?", "wellbeing"), ("hold on a sec", "ack"), ("ur not helping at all", "complaint"),
    ("best customer service ever!!", "praise"), ("ok im done here thanks bye", "thanks"),
])
def test_introductions_pauses_and_requests_without_a_subject(message, kind):
    assert smalltalk.classify(message).kind == kind


@pytest.mark.parametrize("message", [
    "hi im stuck with my order", "quick question about refunds", "wait how do I pay", "test my connection",
    "forget my password", "you doing ok? my heater is off", "is my refund sorted?", "sorted the address, what now?",
])
def test_the_new_phrases_leave_questions_alone(message):
    assert smalltalk.classify(message) is None


@pytest.mark.parametrize("message, kind", [
    ("great job!", "praise"), ("you're useless", "complaint"), ("not helpful at all", "complaint"),
    ("merci beaucoup", "thanks"), ("danke schön", "thanks"), ("tschüss", "goodbye"), ("ça va?", "wellbeing"),
    ("I have a question", "bot"), ("makes sense", "ack"),
])
def test_praise_complaints_and_other_languages(message, kind):
    found = smalltalk.classify(message)
    assert found is not None and found.kind == kind


@pytest.mark.parametrize("message, kind", [
    ("Hi, hope you're having a great week", "greeting"), ("thanks for your patience with me", "thanks"),
    ("that sorted it, ta", "thanks"), ("I'll leave it there, bye", "goodbye"),
    ("cheers, that's sorted it", "thanks"), ("all sorted now", "thanks"), ("it's been fixed, ta", "thanks"),
    ("is there an actual person on the other end?", "bot"), ("are u even real lol", "bot"),
    ("is this automated or a live chat", "bot"), ("how are things on your end", "wellbeing"),
    ("hang on", "ack"), ("just browsing", "ack"), ("oops sent that too early", "ack"),
    ("you guys are awesome", "praise"), ("honestly the best support i've ever had", "praise"),
    ("this bot is so slow", "complaint"), ("ur not very smart huh", "complaint"), ("worst customer service ever", "complaint"),
    ("need some assistance please", "bot"), ("I was wondering if you could help me with something", "bot"),
    ("anyone able to help me out??", "bot"),
    ("hoi", "greeting"), ("dank je wel", "thanks"), ("tot ziens!", "goodbye"), ("ik heb een vraag", "bot"),
    ("obrigadão", "thanks"), ("danke dir", "thanks"), ("c'est un robot ou une vraie personne ?", "bot"),
    ("un attimo...", "ack"), ("service au top 👌", "praise"),
    ("who made you?", "bot"), ("Who built this bot??", "bot"), ("what model are you running on", "bot"),
])
def test_the_third_rounds_phrases(message, kind):
    found = smalltalk.classify(message)
    assert found is not None and found.kind == kind


@pytest.mark.parametrize("message", [
    "hope you can help me reset my password", "is this automated or do I renew it myself?", "is it automated",
    "are backups automated?", "the app is broken", "the app is so slow when it syncs", "wait, how do I pair it",
    "just browsing the pricing page, is there a student discount?", "ik heb een vraag over mijn factuur",
    "anyone able to help me with my refund?", "thanks for your patience, where is my order?",
    "who made the charger?", "what company made the battery", "which model are you referring to in the manual?",
])
def test_the_third_rounds_phrases_leave_questions_alone(message):
    assert smalltalk.classify(message) is None
