"""Misspelt words read as the key's own before retrieval (services/search/spelling.py)."""

from __future__ import annotations

import pytest

from services.common.pb.parley.v1 import common_pb2, search_pb2
from services.search.spelling import Vocabulary, corrected
from tests.conftest import make_key
from tests.search.conftest import plan

BANK = Vocabulary({"account": 50, "amount": 30, "count": 5, "money": 3, "many": 20, "receive": 4,
                   "subscription": 9, "transactions": 6, "policy": 7, "zero": 9, "keelcard": 30, "accent": 2})


def test_a_misspelt_word_is_read_as_the_keys_nearest_word():
    assert corrected("I have a swiss acount, can I recieve my mony?", BANK) == (
        "I have a swiss account, can I receive my money?",
        [("acount", "account"), ("recieve", "receive"), ("mony", "money")])
    assert corrected("Recieve it", BANK)[0] == "Receive it"                       # its capital kept
    # two edits from 8 letters: a letter left out and one more
    assert corrected("stop my subscripton, new transactons?", BANK)[0] == "stop my subscription, new transactions?"


def test_of_two_words_as_near_the_one_the_key_uses_most_is_taken():
    assert corrected("pase", Vocabulary({"pause": 9, "paste": 2}))[0] == "pause"
    assert corrected("pase", Vocabulary({"pause": 2, "paste": 9}))[0] == "paste"
    assert corrected("mony", Vocabulary({"money": 1, "many": 99}))[0] == "money"    # a letter left out, not changed


@pytest.mark.parametrize("text", [
    "go to the police",             # an English word, whatever the key says of its policy
    "does Keelcard work abroad",    # the key's own name
    "does it connect to xero",      # a brand one letter from "zero": not the same first letter
    "i dont want it",               # English as customers write it
    "pay in CHF or iDEAL",          # codes and names with capitals inside
    "threw it away by acident",     # one edit at most below 8 letters ("accent" is two)
    "ok",                           # shorter than 4 letters
])
def test_english_words_the_keys_names_and_words_with_nothing_near_are_kept(text):
    assert corrected(text, BANK) == (text, [])


@pytest.mark.integration
async def test_a_plan_reads_a_misspelt_word_as_the_keys_and_follows_its_knowledge(search, admin):
    key = await make_key(search, admin, "spelling", faq=[], docs=[
        ("Currencies", "Payouts can be received in euros, pounds or Swiss francs into a bank account held in "
                       "that currency."),
        ("Returns", "Unused items can be sent back within thirty days of delivery.")])
    reply = await plan(search, key.secret, "can i get paid into my swiss acount?")
    assert reply.reasons[0] == "read 'acount' as 'account' (misspelt words as the key's own)"
    assert reply.strategy == common_pb2.STRATEGY_KNOWLEDGE and reply.passages[0].title == "Currencies"
    # A word the knowledge gains later is read once its new version is planned.
    reply = await plan(search, key.secret, "how long is the waranty?")
    assert not any(r.startswith("read ") for r in reply.reasons)
    await search.AddDocument(search_pb2.AddDocumentRequest(
        product_key_id=key.id, title="Warranty", text="The warranty covers defects for two years."),
        metadata=admin, timeout=10)
    reply = await plan(search, key.secret, "how long is the waranty?")
    assert reply.reasons[0] == "read 'waranty' as 'warranty' (misspelt words as the key's own)"
    assert reply.passages[0].title == "Warranty"
