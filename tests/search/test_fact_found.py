"""How the help-site evaluation decides that an answer says the fact asked for."""

from __future__ import annotations

from services.search.evaluation import fact_found


def test_a_fact_is_found_in_what_the_answer_says_not_in_its_citations():
    answer = "Replacing a valve body costs GBP 45 per valve. [134959] Fitting takes 10 minutes. [135449]"
    assert fact_found(("45",), answer)
    assert not fact_found(("59", "69"), answer)         # only in the citation [134959]
    assert not fact_found(("135",), answer)


def test_a_number_is_found_only_whole():
    assert not fact_found(("59",), "It costs £159 a year.")
    assert not fact_found(("59",), "We sold 1,590 of them.")
    assert not fact_found(("59",), "It costs £59.99.")
    assert not fact_found(("5",), "It takes 1.5 days.")
    assert fact_found(("59",), "It costs £59, or 59 euros.")
    assert fact_found(("59.99",), "It costs £59.99.")
    assert fact_found(("30 days",), "Within 30 days.")            # a sentence's full stop ends a number
    assert fact_found(("14-day",), "Every account starts with a 14-day free trial.")
    assert fact_found(("Bristol",), "We are based in BRISTOL,  England.")        # case and spacing aside
    assert fact_found(("it's",), "Yes, it\u2019s waterproof.")                   # a curly apostrophe
    assert not fact_found(("",), "anything")
