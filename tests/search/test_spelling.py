"""Misspelt words read as the key's own before retrieval (services/search/spelling.py)."""

from __future__ import annotations

import asyncio

import pytest

from services.common.pb.parley.v1 import common_pb2, search_pb2
from services.search.spelling import Vocabularies, Vocabulary, corrected
from tests.conftest import RUN_ID, make_key
from tests.search.conftest import plan

BANK = Vocabulary({"account": 50, "amount": 30, "count": 5, "money": 3, "many": 20, "receive": 4,
                   "subscription": 9, "transactions": 6, "policy": 7, "zero": 9, "keelcard": 30, "accent": 2})


def test_a_misspelt_word_is_read_as_the_keys_nearest_word():
    assert corrected("I have a swiss acount, can I recieve my mony?", BANK) == (
        "I have a swiss account, can I receive my money?",
        [("acount", "account"), ("recieve", "receive"), ("mony", "money")])
    assert corrected("Recieve it", BANK)[0] == "Receive it"                       # its capital kept
    # a word with an apostrophe, straight or curly, is kept whole ("shouldn" is no word to read otherwise)
    assert corrected("it shouldn\u2019t, it shouldn't", Vocabulary({"should": 5}))[1] == []
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
async def test_a_plan_reads_a_misspelt_word_as_the_keys_and_says_so(search, admin):
    key = await make_key(search, admin, "spelling", faq=[], docs=[
        ("Currencies", "Payouts can be received in euros, pounds or Swiss francs into a bank account held in "
                       "that currency."),
        ("Returns", "Unused items can be sent back within thirty days of delivery.")])
    reply = await plan(search, key.secret, "can i get paid into my swiss acount?")
    assert reply.reasons[0] == "read 'acount' as 'account' (misspelt words as the key's own)"
    assert reply.strategy == common_pb2.STRATEGY_KNOWLEDGE and reply.passages[0].title == "Currencies"
    reply = await plan(search, key.secret, "how long is the waranty?")     # nothing near: searched as it is
    assert not any(r.startswith("read ") for r in reply.reasons)


@pytest.mark.integration
async def test_a_vocabulary_follows_the_knowledge_in_the_background(search, admin, pg):
    key = await make_key(search, admin, "spelling-versions", faq=[],
                         docs=[("Returns", "Unused items can be sent back within thirty days of delivery.")])
    version = await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key.id)
    vocabularies = Vocabularies(pg, refresh_seconds=0.0)
    assert await vocabularies.correct(key.id, version, "how long is the waranty?") == ("how long is the waranty?", [])
    assert vocabularies.loads == 1
    await search.AddDocument(search_pb2.AddDocumentRequest(
        product_key_id=key.id, title="Warranty", text="The warranty covers defects for two years."),
        metadata=admin, timeout=10)
    newer = await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key.id)
    # The first message at the newer version is read with the vocabulary held, and starts a new read.
    assert (await vocabularies.correct(key.id, newer, "how long is the waranty?"))[1] == []
    for _ in range(100):
        if vocabularies.held(key.id).version == newer:
            break
        await asyncio.sleep(0.05)
    assert await vocabularies.correct(key.id, newer, "how long is the waranty?") == (
        "how long is the warranty?", [("waranty", "warranty")])
    assert vocabularies.loads == 2
    # Read again no sooner than refresh_seconds after the last read.
    vocabularies.refresh_seconds = 3600
    await vocabularies.correct(key.id, newer + 1, "how long is the waranty?")
    assert vocabularies.loads == 2


@pytest.mark.integration
async def test_vocabularies_beyond_the_bound_drop_the_least_recently_used_key(search, admin, pg):
    keys = [await make_key(search, admin, f"spelling-bound-{i}", faq=[],
                           docs=[("Returns", "Unused items can be sent back within thirty days.")]) for i in range(3)]
    vocabularies = Vocabularies(pg, max_words=16)      # each key's vocabulary: 8 words of 4 letters or more
    for key in keys[:2]:
        await vocabularies.of(key.id, 1)
    await vocabularies.of(keys[0].id, 1)                # used again: the second key is now the oldest
    await vocabularies.of(keys[2].id, 1)
    assert [k.id for k in keys if vocabularies.held(k.id)] == [keys[0].id, keys[2].id]
    assert vocabularies.words == 16


@pytest.mark.integration
async def test_a_key_in_another_language_is_searched_as_written(search, admin):
    created = await search.CreateProductKey(search_pb2.CreateProductKeyRequest(
        name="Test spelling german", id=f"t-{RUN_ID}-spelling-german", text_search_config="german"),
        metadata=admin, timeout=10)
    await search.AddDocument(search_pb2.AddDocumentRequest(
        product_key_id=created.key.id, title="Konto", text="Auszahlungen gehen auf ein Konto in Franken oder Euro."),
        metadata=admin, timeout=10)
    reply = await plan(search, created.product_key, "geht das auf mein Kontto in Franken?")   # one edit from "konto"
    assert not any(r.startswith("read ") for r in reply.reasons), list(reply.reasons)
