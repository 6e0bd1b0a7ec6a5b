"""The strategy decision (pure: chunks in, decision out)."""

from __future__ import annotations

import pytest

from services.search.retrieval import Chunk, clean_message
from services.search.strategy import Options, Thresholds, decide

T = Thresholds(knowledge_min_score=0.5, faq_min_score=0.6)


def chunk(relevance: float, kind: str = "document", faq: float = 0.0, cid: str = "1") -> Chunk:
    return Chunk(cid, kind, "t", "q?" if kind == "faq" else "", "text", "", 0.5, relevance, faq)


@pytest.mark.parametrize("message", ["hi", "Hello!", "good morning", "hey there"])
def test_greetings(message):
    d = decide(message, [chunk(0.9)], T)
    assert d.strategy == "GREETING" and not d.chunks


def test_thanks_is_smalltalk():
    assert decide("thanks!", [], T).strategy == "SMALLTALK"


def test_relevant_passages_mean_knowledge_with_reasons_and_scores():
    d = decide("what does it cost", [chunk(0.75), chunk(0.2, cid="2")], T)
    assert d.strategy == "KNOWLEDGE" and [c.id for c in d.chunks] == ["1"] and d.reasons
    assert d.scores["relevance"] == 0.75 and d.top_score == 0.75


def test_close_faq_question_means_faq_with_its_answer():
    d = decide("how do I reset my password", [chunk(0.6, "document"), chunk(1.0, "faq", faq=0.8, cid="9")], T)
    assert d.strategy == "FAQ" and d.faq_answer == "text" and d.chunks[0].id == "9"
    assert d.scores["faq"] == 0.8


def test_loose_faq_match_is_knowledge_not_faq():
    d = decide("how do I reset my password", [chunk(0.6, "faq", faq=0.4)], T)
    assert d.strategy == "KNOWLEDGE" and not d.faq_answer


def test_weak_or_no_passages_mean_no_answer():
    assert decide("what does it cost", [chunk(0.2)], T).strategy == "NO_ANSWER"
    assert decide("what does it cost", [], T).strategy == "NO_ANSWER"


def test_website_means_web_only_when_the_scraper_is_available():
    web = decide("what does it cost", [chunk(0.2)], T, Options(website="https://x.example", web_available=True))
    assert web.strategy == "WEB" and web.fetch_url == "https://x.example" and not web.chunks
    down = decide("what does it cost", [], T, Options(website="https://x.example", web_available=False))
    assert down.strategy == "NO_ANSWER" and any("scraper" in r for r in down.reasons)


def test_direct_when_the_key_allows_it():
    assert decide("tell me a joke", [], T, Options(allow_direct=True)).strategy == "DIRECT"
    assert decide("tell me a joke", [], T, Options(website="https://x.example", web_available=True,
                                                  allow_direct=True)).strategy == "WEB"


def test_clean_message_drops_nul_and_surrogates():
    assert clean_message("a\x00b\ud800c") == "a b?c"


def test_first_sources_name_different_pages_best_first():
    from services.search.strategy import diversify

    def at(cid: str, url: str) -> Chunk:
        return Chunk(cid, "page", "t", "", "text", url, 0.5)

    chunks = [at("1", "/a"), at("2", "/a"), at("3", "/a"), at("4", "/b"), at("5", "/a"), at("6", "/c")]
    assert [c.id for c in diversify(chunks, per_page=1)] == ["1", "4", "6", "2", "3", "5"]
    assert [c.id for c in diversify(chunks)] == ["1", "2", "4", "6", "3", "5"]


def test_the_dense_score_leads_and_the_lexical_relevance_breaks_near_ties():
    from services.search.strategy import fuse

    def c(cid: str, dense: float, relevance: float) -> Chunk:
        return Chunk(cid, "page", "t", "", "text", f"/{cid}", 0.0, relevance, dense=dense)

    # "b" shares every word of the message but means something else; "a" is about it in other words.
    ranked = fuse([c("b", 0.40, 1.0), c("a", 0.60, 0.0), c("d", 0.52, 0.2), c("e", 0.50, 0.5)], 0.1)
    assert [x.id for x in ranked] == ["a", "e", "d", "b"]
    assert [x.score for x in ranked] == [0.6, 0.55, 0.54, 0.5]


def test_no_answer_when_no_passage_stands_out_and_the_message_names_unknown_things():
    def at(cid: str, dense: float, known: float) -> Chunk:
        return Chunk(cid, "page", "t", "", "text", f"/{cid}", 0.0, 0.0, dense=dense, known=known)

    t = Thresholds(knowledge_min_score=0.5, faq_min_score=0.6, answer_min_dense=0.2, answer_min_support=0.15)
    flat = [at(str(i), 0.45 - 0.004 * i, 0.5) for i in range(10)]     # many passages alike, half the words unknown
    d = decide("does it sync with Stravaz?", flat, t)
    assert d.strategy == "NO_ANSWER" and d.scores["peak"] < 0.03 and d.scores["support"] < 0.15
    assert "support" in d.reasons[0] and "50% of the message's terms known" in d.reasons[0]
    known = [at(str(i), 0.45 - 0.004 * i, 1.0) for i in range(10)]    # alike, but every word is in the knowledge
    assert decide("how do I sync my rides?", known, t).strategy == "KNOWLEDGE"
    peaked = [at("0", 0.62, 0.5), *(at(str(i), 0.45 - 0.004 * i, 0.5) for i in range(1, 10))]
    d = decide("how heavy is the battery pack?", peaked, t)
    assert d.strategy == "KNOWLEDGE" and d.chunks[0].id == "0" and d.scores["peak"] > 0.1


def test_an_faq_entry_that_stands_out_above_every_page_answers_with_its_stored_answer():
    def at(cid: str, kind: str, dense: float, faq: float = 0.0) -> Chunk:
        return Chunk(cid, kind, "t", "Which payment methods do you accept?" if kind == "faq" else "", "text",
                     f"/{cid}", 0.0, 0.0, faq, dense=dense)

    t = Thresholds(knowledge_min_score=0.5, faq_min_score=0.6, answer_min_dense=0.24, faq_min_margin=0.1)
    # "Can I pay with PayPal?": few words in common with the FAQ question, far closer to it than to any page.
    d = decide("Can I pay with PayPal?", [at("f", "faq", 0.47, faq=0.08), at("p", "page", 0.23)], t)
    assert d.strategy == "FAQ" and d.chunks[0].id == "f" and "best other passage 0.23" in d.reasons[0]
    # A page about as close as the FAQ entry: the pages answer.
    d = decide("Which plan has the most storage?", [at("f", "faq", 0.57, faq=0.2), at("p", "page", 0.55)], t)
    assert d.strategy == "KNOWLEDGE"


def _page(cid: str, text: str, dense: float = 0.45, title: str = "Integrations") -> Chunk:
    return Chunk(cid, "page", title, "", text, f"/{cid}", 0.0, 0.0, dense=dense, known=0.3)


INTEGRATIONS = [
    _page("1", "Connect your account to Slack in a few clicks. Slack messages show every new invoice."),
    _page("2", "Connect your account to Xero from the settings. Your invoices are copied to Xero every night."),
    _page("3", "Connect your bank from the settings page. Bank transactions are imported four times a day."),
]


def test_covered_weighs_a_term_by_its_rarity_in_the_passages_read():
    from services.search.strategy import covered

    # Every term of the question is in the passages: all of its weight is held.
    assert covered("does it connect to Xero?", INTEGRATIONS) == 1.0
    # "Zapier" is in none of their sentences, so it weighs the most, and a question naming it keeps
    # less than half of its weight; of two held terms the rarer one ("Xero", in two sentences) keeps
    # more than the common one ("connect", in three). By count of terms all three would be 0.5.
    with_common = covered("does it connect to Zapier?", INTEGRATIONS)
    with_rare = covered("is Xero on Zapier?", INTEGRATIONS)
    assert with_common < with_rare < 0.5
    # Only the first `passages` passages count.
    assert covered("are bank transactions imported?", INTEGRATIONS, passages=2) < 0.5
    assert covered("are bank transactions imported?", INTEGRATIONS) == 1.0
    # A heading's terms are held too; a question in the text is no quotable sentence and holds nothing.
    assert covered("which integrations?", INTEGRATIONS[:1]) == 1.0
    assert covered("can it post to Teams?", [_page("4", "Can it post to Teams? Not yet, only Slack.")]) == 0.0
    assert covered("the", INTEGRATIONS) == 0.0


def test_no_answer_when_the_passages_read_never_name_the_question_s_rare_term():
    # The same passages, alike in cosine: the one naming a thing they never mention is NO_ANSWER.
    t = Thresholds(knowledge_min_score=0.5, faq_min_score=0.6, answer_min_dense=0.2, answer_min_support=0.21,
                   covered_weight=0.5)
    # Ten passages alike (no peak); 30% of the message's terms known to the key.
    passages = [*INTEGRATIONS, *(_page(str(i), "Invoices are sent by email.", 0.45 - 0.002 * i) for i in range(4, 11))]
    d = decide("does it connect to Zapier?", passages, t)
    assert d.strategy == "NO_ANSWER" and d.scores["covered"] < 0.3 and "in the passages read" in d.reasons[0]
    d = decide("does it connect to Xero?", passages, t)
    assert d.strategy == "KNOWLEDGE" and d.scores["covered"] == 1.0
    # With the weight at 0 the passages read do not count, and both are answered.
    plain = Thresholds(knowledge_min_score=0.5, faq_min_score=0.6, answer_min_dense=0.2, answer_min_support=0.05)
    assert decide("does it connect to Zapier?", passages, plain).strategy == "KNOWLEDGE"


@pytest.mark.parametrize(("message", "unknown", "missing"), [
    ("Do you offer a Black Friday discount?", ("black", "friday"), ["Black", "Friday"]),
    ("do u have a referral programme? my mate wants one", ("referr", "programm", "mate"), ["referral"]),
    ("Does the Ridge have a suspension fork?", ("suspens",), ["suspension"]),
    ("Is there an affiliate scheme for bloggers", ("affili", "blogger"), ["bloggers"]),
    ("Does LedgerLoop do inventory?", ("inventori",), ["inventory"]),           # final y stemmed to i
    ("Do you offer a discount?", ("black",), []),                               # the thing is known
    ("How do I get a discount on Black Friday?", ("black", "friday"), []),     # not asked whether there is one
    ("Is there a student discount? How long is the trial?", ("student",), []),  # one of two questions
    ("Do you sell gift cards?", (), []),
    ("does it work with alexa or google home?", ("alexa",), ["alexa"]),
    ("Is the app compatible with Garmin watches", ("garmin",), ["Garmin"]),
    ("Does it work with my phone?", ("black",), []),
    ("Is there a LedgerLoop app for the Apple Watch?", ("watch",), ["Watch"]),   # an app: for what
    ("Do you have a discount for students?", ("student",), ["students"]),
    ("Is there a weight limit for the rider?", ("rider",), []),                  # a limit is no kind of offer
    ("Is there a student discount?", ("discount",), []),          # the kind unknown ("50 percent off"), not which
    ("Do you accept American Express cards?", ("card",), []),
    ("Is it possible to get a mortgage through you?", ("mortgag",), ["mortgage"]),
    ("is there a way to add a bottle of wine to my box", ("bottl", "wine"), ["bottle"]),
    ("Is there a way to pause my plan?", ("black",), []),                         # the thing is known
])
def test_unnamed_names_the_unknown_words_of_the_thing_asked_for(message, unknown, missing):
    from services.search.strategy import unnamed

    assert unnamed(message, unknown) == missing


@pytest.mark.parametrize(("message", "unknown", "named", "missing"), [
    ("Can I sync my rides from the Trailhead app to Strava?", ("strava",), ("trailhead",), ["Strava"]),
    ("Can LedgerLoop send invoices via WhatsApp?", ("whatsapp",), ("invoic",), ["WhatsApp"]),
    ("can I log in with Google", ("googl",), (), ["Google"]),
    ("Can I pay with Apple Pay?", ("appl",), ("pay",), ["Apple"]),
    ("How can I share a folder with a colleague?", ("colleagu",), ("folder",), []),   # asks the way
    ("Can I send the invoice to my accountant?", ("accountant",), ("invoic",), []),   # a person, not a service
    # "PayPal" is the lexeme "paypal", which the knowledge names, not "pay", which it does not
    ("Can I pay with PayPal?", ("pay",), ("paypal",), []),
    ("Do you accept PayPal? I'd rather not pay by card", ("pay",), ("paypal", "card"), []),
])
def test_unnamed_reads_a_service_that_data_or_money_goes_through(message, unknown, named, missing):
    from services.search.strategy import unnamed

    assert unnamed(message, unknown, named) == missing


@pytest.mark.parametrize(("message", "unknown", "named", "missing"), [
    # an amount is stated in figures, mostly without the word: "cap", "fee", "minimum" alone name nothing
    ("Is there a cap on deposits?", ("cap",), ("deposit",), []),
    ("is there a fee?", ("fee",), (), []),
    ("Is there a minimum order?", ("minimum",), ("order",), []),
    # what the amount is of still counts: a fee for a thing no page names
    ("Is there a fee for crypto deposits?", ("fee", "crypto"), ("deposit",), ["crypto"]),
    ("Is there a weight limit for the rider?", ("limit", "rider"), ("weight",), []),
    ("Is there a maximum number of lockers?", ("maximum", "locker"), (), []),   # "number" is named below
    ("Is there a minimum Bitcoin deposit?", ("minimum", "bitcoin"), ("deposit",), ["Bitcoin"]),
])
def test_unnamed_reads_an_amount_as_the_thing_it_is_of(message, unknown, named, missing):
    from services.search.strategy import unnamed

    assert unnamed(message, unknown, named + ("number",)) == missing


def test_a_question_whether_there_is_an_unnamed_thing_is_no_answer_however_close_the_passages():
    t = Thresholds(knowledge_min_score=0.5, faq_min_score=0.6, answer_min_dense=0.2)
    close = [Chunk(str(i), "page", "Pricing", "", "Discounts for students.", f"/{i}", 0.0, 0.6, dense=0.7 - 0.1 * i,
                   known=0.5, unknown=("black", "friday")) for i in range(3)]
    d = decide("Do you offer a Black Friday discount?", close, t)
    assert d.strategy == "NO_ANSWER" and not d.chunks and "'Black Friday'" in d.reasons[0]
    known = [Chunk("0", "page", "Pricing", "", "Discounts for students.", "/0", 0.0, 0.6, dense=0.7, known=1.0)]
    assert decide("Do you offer a student discount?", known, t).strategy == "KNOWLEDGE"
    # The website or a direct answer still follow when the key has them.
    assert decide("Do you offer a Black Friday discount?", close, t, Options(allow_direct=True)).strategy == "DIRECT"


@pytest.mark.parametrize(("message", "unknown", "asks"), [
    ("can i borrow 3000 from you and pay it back monthly?", ("borrow",), True),
    ("do you take amex", ("amex",), True),
    ("Hi, is there a mortgage option?", ("mortgag",), True),
    ("Is there a weight limit?", (), False),                      # every word known
    ("how do i pay in a cheque", ("chequ",), False),              # asks the way, not whether
    ("my gym keeps charging me, can i block it?", ("gym",), False),   # the question does not open the message
])
def test_a_yes_no_question_naming_a_word_the_knowledge_never_uses(message, unknown, asks):
    from services.search.strategy import asks_unknown

    assert asks_unknown(message, unknown) is asks


def test_such_a_question_needs_more_support_to_be_answered():
    t = Thresholds(knowledge_min_score=0.5, faq_min_score=0.6, answer_min_dense=0.2, answer_min_support=0.1,
                   unknown_min_support=0.3)
    # Ten passages alike; the support is 0.2 (the default known_weight) x known (0.8) plus a small peak:
    # between the two thresholds.
    passages = [_page(str(i), "Top up by bank transfer or card.", 0.45 - 0.002 * i) for i in range(10)]
    passages = [c.with_scores(known=0.8) for c in passages]
    asked = [c.__class__(**{**c.__dict__, "unknown": ("amex",)}) for c in passages]
    d = decide("do you take amex", asked, t)
    assert d.strategy == "NO_ANSWER" and "yes/no question" in d.reasons[0], d.reasons
    assert 0.1 <= d.scores["support"] < 0.3
    # The same support without an unknown word, or for a question asking the way: answered.
    assert decide("do you take cards", passages, t).strategy == "KNOWLEDGE"
    assert decide("how do i top up with amex", asked, t).strategy == "KNOWLEDGE"
