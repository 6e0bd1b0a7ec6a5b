"""Pure rules of the response service: routing, the prompt, question normalisation, the circuit breaker."""

from __future__ import annotations

from services.response.cache import normalise, question_hash
from services.response.llm import AnswerRequest, PassageText, Turn, cited_ids
from services.response.prompt import build_messages
from services.response.resilience import CircuitBreaker, to_domain_error
from services.response.llm import LLMError
from services.response.routing import is_follow_up, route, several_questions

SMALL, LARGE = "small-model", "large-model"


def _route(message, strategy="KNOWLEDGE", score=0.5, **kw):
    return route(message, strategy, score, llm_enabled=True, small=SMALL, large=LARGE,
                 large_min_chars=200, large_below_score=0.1, **kw)


def test_short_grounded_question_goes_to_the_small_model():
    r = _route("How much is the Plus plan?")
    assert r.backend == "llm" and r.models == (SMALL,)


def test_long_several_or_unsure_questions_go_to_the_large_model_with_the_small_as_fallback():
    assert _route("x " * 150).models == (LARGE, SMALL)
    assert _route("How much is Plus? And do you ship abroad?").models == (LARGE, SMALL)
    assert _route("How much is Plus", score=0.05).models == (LARGE, SMALL)
    assert _route("Tell me a joke", strategy="DIRECT", score=0.0).models == (LARGE, SMALL)
    assert _route("and what about it?", with_history=True).models == (LARGE, SMALL)


def test_faq_and_chitchat_need_no_llm():
    assert _route("When are you open?", strategy="FAQ").backend == "faq"
    for strategy in ("GREETING", "SMALLTALK", "NO_ANSWER"):
        assert _route("hello", strategy=strategy).backend == "extractive"
    assert route("How much?", "KNOWLEDGE", 0.5, llm_enabled=False, small=SMALL, large=LARGE,
                 large_min_chars=200, large_below_score=0.1).backend == "extractive"


def test_several_questions_and_follow_ups():
    assert several_questions("What does it cost and how do I pay?")
    assert not several_questions("What does the Plus plan cost per year?")
    assert is_follow_up("And how much is it?")
    assert is_follow_up("what about the other plan")
    assert is_follow_up("Does it ship abroad?")
    assert not is_follow_up("How much does the Plus plan cost?")
    assert not is_follow_up("Is there a desktop app for Linux?")
    assert not is_follow_up("What happens when two people edit the same file offline?")


def test_prompt_has_name_instructions_cited_passages_history_and_respects_the_budget():
    passages = [PassageText(f"p{i}", "document", f"T{i}", "word " * 200, 1.0 - i / 10) for i in range(10)]
    req = AnswerRequest("How much?", "Acme", "Always answer in English.", "KNOWLEDGE", passages,
                        history=(Turn("Hi, do you ship?", "We ship within two days [s1]."),))
    messages = build_messages(req, token_budget=1000)
    system, data = messages[0]["content"], messages[-2]["content"]
    assert "Acme" in system and "Always answer in English." in system and "[12]" in system
    # The passages are data in a user message of their own, never in the system message.
    assert "[p0] T0" in data and "[p1] T1" in data and "[p9]" not in data and "[p0]" not in system  # the budget cuts the tail
    assert messages[1:3] == [{"role": "user", "content": "Hi, do you ship?"},
                             {"role": "assistant", "content": "We ship within two days [s1]."}]
    assert messages[-2]["role"] == "user" and messages[-1] == {"role": "user", "content": "How much?"}
    assert sum(len(m["content"]) for m in messages) // 4 <= 1000


def test_citations_become_known_passage_ids_in_order():
    passages = [PassageText(i, "document", "", "", 1.0) for i in ("7", "12", "3")]
    assert cited_ids("Yes [12]. Also [7][12] and [99], [3, 7]", passages) == ["12", "7", "3"]


def test_normalised_questions_share_a_cache_entry():
    assert normalise("  How MUCH is   the plan?! ") == "how much is the plan"
    assert question_hash("How much is the plan?") == question_hash("how much is the plan")
    assert question_hash("How much is the plan?") != question_hash("How much is the other plan?")
    assert normalise("«What’s the price…» — “per month”?") == "what s the price per month"


def test_symbols_and_naming_marks_keep_questions_apart():
    """Only prose punctuation is folded: questions that differ by a symbol or a mark that names
    something are different questions, with different answers."""
    for a, b in [("Is C# supported?", "Is C++ supported?"), ("Is C# supported?", "Is C supported?"),
                 ("👍", "👎"), ("Is 50% off?", "Is 50 off?"), ("price in $?", "price in €?"),
                 ("Can I use @mentions?", "Can I use mentions?")]:
        assert question_hash(a) != question_hash(b), (a, b)


def test_circuit_breaker_opens_after_failures_and_tries_once_after_the_reset():
    now = [0.0]
    breaker = CircuitBreaker(failures=3, reset_seconds=10, clock=lambda: now[0])
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.5
    assert breaker.allow() and not breaker.allow()  # half-open: one trial at a time
    breaker.failure()
    assert breaker.state == "open"
    now[0] = 21.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


def test_llm_failures_become_meaningful_statuses():
    limited = to_domain_error([LLMError("unavailable", "500"), LLMError("rate_limited", "429", retry_after=7)])
    # The provider's rate limit is no limit of the tenant's key (RESOURCE_EXHAUSTED says that): UNAVAILABLE.
    assert limited.code == "UNAVAILABLE" and limited.trailers == {"retry-after": "7"}
    assert to_domain_error([LLMError("timeout", "slow")]).code == "DEADLINE_EXCEEDED"
    assert to_domain_error([LLMError("bad_response", "junk")]).code == "UNAVAILABLE"
