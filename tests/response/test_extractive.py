"""The extractive answerer: sentences chosen by meaning, never headings or navigation, each passage cited once."""

from __future__ import annotations

import re

from services.response import extractive
from services.response.extractive import NO_ANSWER_TEXT, ExtractiveAnswerer
from services.response.llm import AnswerRequest, PassageText
from services.common.sentences import units

DOC = PassageText("7", "document", "Plans", "The Plus plan costs 49 euros per year. Support is open on weekdays.", 0.8)
FAQ = PassageText("3", "faq", "How do I reset my password?", "How do I reset my password?\nUse the Forgot password link.", 0.9)
# A crawled page as the scraper hands it over: heading first, then paragraphs, list items and table cells.
RIDGE = PassageText("11", "page", "Trailhead Ridge: technical specifications", "\n".join([
    "Frame and dimensions", "Home > Bikes > Ridge", "Specification", "Trailhead Ridge", "Weight",
    "34.5 kg including one PowerPack 625 battery", "Max. rider weight", "120 kg",
    "The Ridge carries up to 80 kg on the extended rear rack while keeping a compact footprint.",
    "Related articles", "Batteries", "Battery care", "Sizing and fit", "Was this article helpful?",
]), 0.9)
CHARGING = PassageText("12", "page", "Charging the battery", "\n".join([
    "Charging times", "A PowerPack 625 charges from empty to full in 4.5 hours with the standard 4 A charger.",
    "The fast charger halves the charging time and costs 149 euros.", "Charge the battery between 0 and 40 °C.",
]), 0.7)
SIZING = PassageText("13", "page", "Sizing and fit", "\n".join([
    "Rider height", "Riders from 155 to 198 cm fit the Ridge after adjusting the saddle and the stem.",
    "The stem bolt is tightened to 5 Nm after every change of angle.",
]), 0.6)


def ask(message, passages, strategy="KNOWLEDGE"):
    return ExtractiveAnswerer().answer(AnswerRequest(message, "Acme", "", strategy, passages))


def sentences_of(answer_text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?\]])\s+(?=[A-Z])", re.sub(r"\s*\[\d+\]", "", answer_text)) if s]


def test_best_sentence_is_cited():
    answer = ask("How much is the Plus plan per year?", [DOC])
    assert answer.text.startswith("The Plus plan costs 49 euros per year.") and answer.text.endswith("[7]")
    assert answer.cited == ["7"]


def test_a_paraphrase_finds_the_sentence_by_meaning():
    answer = ask("how heavy is the ridge?", [CHARGING, RIDGE, SIZING])
    assert "34.5 kg" in answer.text and "11" in answer.cited


def test_matching_faq_answers_with_its_stored_answer():
    answer = ask("I forgot my password, how do I reset it?", [FAQ, DOC])
    assert answer.text == "Use the Forgot password link. [3]"


def test_nothing_close_in_meaning_is_no_answer():
    answer = ask("Can I bring my dog to your office in Rome?", [DOC])
    assert answer.text == NO_ANSWER_TEXT and answer.cited == []


def test_greeting_needs_no_passages():
    assert "Acme" in ask("hello", [], strategy="GREETING").text


def test_no_passages_no_answer():
    assert ask("What is the price?", []).text == NO_ANSWER_TEXT


def test_the_same_sentence_from_two_sources_is_said_once():
    page = PassageText("9", "page", "Plans", "The Plus plan costs 49 euros per year.", 0.7)
    answer = ask("How much is the Plus plan per year?", [DOC, page])
    assert answer.text.count("The Plus plan costs 49 euros per year.") == 1


def test_answer_shape_no_headings_at_most_three_sentences_each_passage_cited_once():
    for question in ("how long does charging take and what does the fast charger cost?",
                     "what is the weight limit for the rider and how much can the rack carry?",
                     "what torque for the stem bolt?"):
        answer = ask(question, [RIDGE, CHARGING, SIZING])
        assert answer.cited, question
        text = answer.text
        for furniture in ("Frame and dimensions", "Home >", "Related articles", "Was this article helpful",
                          "Battery care", "Charging times\n", "Rider height "):
            assert furniture not in text.replace(": ", " "), (question, text)
        assert len(sentences_of(text)) <= 3, text
        cites = re.findall(r"\[(\d+)\]", text)
        assert len(cites) == len(set(cites)) == len(answer.cited), text


FAQ_PAGE = PassageText("21", "page", "Spare parts", "\n".join([
    "Do you sell spare parts for the Ridge?",
    "Yes: brake pads, tyres and chains are sold through support and at service centres.",
]), 0.8)


def test_a_question_on_the_page_is_never_quoted_as_the_answer():
    answer = ask("Do you sell spare parts for the Ridge?", [FAQ_PAGE])
    assert answer.cited == ["21"]
    assert "?" not in answer.text and "service centres" in answer.text


CHARGERS = PassageText("31", "page", "Chargers", "\n".join([
    "The fast charger halves the charging time of every PowerPack battery.",
    "It is sold for 149 euros.",
]), 0.8)


def test_a_question_asking_for_a_quantity_prefers_the_sentence_that_gives_one():
    # The first sentence is the closer in meaning (cosine 0.58 against 0.56); the question asks for a price.
    answer = ExtractiveAnswerer(max_sentences=1).answer(
        AnswerRequest("what does the fast charger cost?", "Acme", "", "KNOWLEDGE", [CHARGERS]))
    assert "149 euros" in answer.text, answer.text


def test_units_drop_headings_breadcrumbs_and_link_lists_and_keep_table_rows():
    found = [u.text for u in units(RIDGE.text, "Frame and dimensions")]
    assert found == ["Weight: 34.5 kg including one PowerPack 625 battery", "Max. rider weight: 120 kg",
                     "The Ridge carries up to 80 kg on the extended rear rack while keeping a compact footprint."]


def test_a_label_value_row_is_quotable_and_a_heading_with_a_colon_is_not():
    found = [u.text for u in units("Trailhead Ridge: specifications\nWeight — Ridge: 34.5 kg; Haul: 47.2 kg\n"
                                   "Colours: Moss Green, Slate Grey")]
    assert found == ["Weight — Ridge: 34.5 kg; Haul: 47.2 kg", "Colours: Moss Green, Slate Grey"]


EXPORT = PassageText("21", "page", "Export your data", "\n".join([
    "Your data belongs to you", "You can download everything you have stored with us at any time, in one file.",
    "The export holds your invoices, clients and payments as CSV files.",
    "Only the account owner can run an export.", "Exports of more than 1 GB are split into several files.",
    "Go to Settings → Account → Export data and click Start export."]), 0.8)
RIDE = PassageText("22", "page", "Riding without the battery", "\n".join([
    "Riding with a flat battery", "The motor stops helping once the battery is empty.",
    "Yes, you can keep pedalling with an empty battery, but without assistance the bike feels heavy.",
    "Charge the battery fully before a long ride.", "Pedal smoothly and keep the cadence high on climbs."]), 0.8)


def first_sentence(message: str, passage: PassageText) -> str:
    return ExtractiveAnswerer(max_sentences=1).answer(AnswerRequest(message, "Acme", "", "KNOWLEDGE", [passage])).text


def test_a_question_asking_how_prefers_the_step_that_does_it(monkeypatch):
    # By cosine alone the answer is "You can download everything ...", which does not say how.
    assert first_sentence("how do I get a backup of my data", EXPORT).startswith("Go to Settings → Account → Export data")
    monkeypatch.setattr(extractive, "STEP_BONUS", 0.0)
    assert first_sentence("how do I get a backup of my data", EXPORT).startswith("You can download everything")
    # A question that does not ask how gets no step for its answer.
    monkeypatch.setattr(extractive, "STEP_BONUS", 1.0)
    assert not first_sentence("what is in the data backup?", EXPORT).startswith("Go to")


def test_a_yes_no_question_prefers_the_sentence_that_says_yes_or_no(monkeypatch):
    answer = first_sentence("Can I still ride it when the battery is dead?", RIDE)
    assert answer.startswith("Yes, you can keep pedalling"), answer
    monkeypatch.setattr(extractive, "VERDICT_BONUS", 0.0)
    assert first_sentence("Can I still ride it when the battery is dead?", RIDE).startswith("Charge the battery")


STORAGE = PassageText("41", "page", "Battery care", "\n".join([
    "Long-term storage",
    "If you won't ride for more than four weeks, for example over the winter:",
    "Charge or discharge the battery to 40–60% (two or three LEDs).",
    "Remove it from the bike.",
    "Store it in a dry place between 10 °C and 20 °C.",
    "After 30 days without use, the battery goes into deep-sleep mode. To wake it, connect the charger.",
]), 0.8)


def test_a_lead_is_quoted_with_its_list_as_one_sentence_and_its_items_not_again():
    answer = ask("the bike stays in the basement all winter, what should I do with the battery?", [STORAGE])
    assert ("If you won't ride for more than four weeks, for example over the winter: Charge or discharge the battery "
            "to 40–60% (two or three LEDs); Remove it from the bike; Store it in a dry place between 10 °C and 20 °C."
            ) in answer.text, answer.text
    assert answer.text.count("Remove it from the bike") == 1
    assert len(sentences_of(answer.text)) <= 3, answer.text


CHILD = PassageText("42", "page", "Teen accounts", "\n".join([
    "Parental controls",
    "In your app, open Accounts > [child's name] to:",
    "see all of your child's transactions and their balance,",
    "send money instantly and free of charge, once or as a weekly or monthly scheduled transfer,",
    "freeze and unfreeze the Teen card,",
    "approve contacts your child can send money to.",
]), 0.8)


def test_two_items_of_one_list_are_quoted_after_their_lead_once():
    answer = ask("how can I send money to my kid and choose who they can send money to?", [CHILD])
    assert answer.text.count("In your app, open Accounts > [child's name] to:") == 1, answer.text
    assert "send money instantly" in answer.text and "approve contacts" in answer.text, answer.text
    assert answer.text.endswith("[42]") and answer.cited == ["42"]


CODES = PassageText("43", "page", "Transfer error codes", "\n".join([
    "Error codes",
    "KC-1101 — Meaning: Not enough money in your main account; What you can do: Add money or move money from a pot.",
    "KC-2215 — Meaning: Recipient's bank doesn't support instant payments; sent as standard SEPA; What you can do: "
    "No action needed.",
    "KC-2230 — Meaning: Verification of Payee found no match; What you can do: Check the name with the recipient.",
    "KC-3110 — Meaning: Too many verification attempts; What you can do: Wait 24 hours.",
]), 0.8)


def test_a_question_that_quotes_a_code_is_answered_with_the_row_that_names_it():
    for question in ("kc-2215?", "my transfer says KC-2215, what now"):
        answer = ExtractiveAnswerer(max_sentences=1).answer(AnswerRequest(question, "Acme", "", "KNOWLEDGE", [CODES]))
        assert "sent as standard SEPA" in answer.text, (question, answer.text)


def test_an_item_quoted_in_its_leads_list_is_not_quoted_again_and_a_shorter_sentence_stays():
    damaged = PassageText("44", "page", "Damaged parcels", "\n".join([
        "Damaged parcels", "You have two options when a parcel arrives damaged:",
        "Request a replacement sent by next-day courier, or",
        "Ask for a full refund to your original payment method.",
    ]), 0.8)
    answer = ask("my parcel came damaged, what are my options? replacement?", [damaged])
    assert answer.text.count("Request a replacement") == 1, answer.text
    # A sentence that another one starts with is a sentence of its own ("£5" is not "£50 to ...").
    far = PassageText("45", "page", "Islands", "Standard delivery costs £50 to the Channel Islands.", 0.8)
    near = PassageText("46", "page", "Mainland", "Standard delivery costs £5.", 0.7)
    answer = ask("how much is standard delivery?", [far, near])
    assert "£50 to the Channel Islands" in answer.text and "costs £5." in answer.text, answer.text


SLA = PassageText("47", "page", "Uptime commitment", "\n".join([
    "Uptime commitment (Business plan)",
    "On the Business plan we commit to 99.9% monthly uptime for the web app, API, and payments.",
    "If we miss the target, you're eligible for a service credit on your next bill:",
    "99.0% to below 99.9% — Service credit: 10% of that month's subscription fee",
    "95.0% to below 99.0% — Service credit: 25%",
    "Below 95.0% — Service credit: 50%",
    "To claim a credit, contact support within 30 days after the end of the affected month.",
]), 0.8)


def test_two_items_of_a_leads_list_are_quoted_as_the_lead_with_the_whole_list():
    answer = ask("Last month the app was available about 98% of the time. We're on Business - do we get anything back?",
                 [SLA])
    assert ("you're eligible for a service credit on your next bill: 99.0% to below 99.9% — Service credit: 10% of "
            "that month's subscription fee; 95.0% to below 99.0% — Service credit: 25%; Below 95.0% — Service "
            "credit: 50%.") in answer.text, answer.text
    assert answer.text.count("Below 95.0%") == 1, answer.text
