"""Misspelt words read as the key's own before retrieval (services/search/spelling.py)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from services.common.pb.parley.v1 import common_pb2, search_pb2
from services.search import spelling
from services.search.spelling import Vocabularies, Vocabulary, corrected
from tests.conftest import RUN_ID, make_key
from tests.search.conftest import plan

BANK = Vocabulary({"account": 50, "amount": 30, "count": 5, "money": 3, "many": 20, "receive": 4,
                   "subscription": 9, "transactions": 6, "policy": 7, "zero": 9, "keelcard": 30, "accent": 2,
                   "paypal": 4, "dent": 2, "promoted": 3, "json": 2, "address": 2, "here": 5, "start": 3})


def test_a_misspelt_word_is_read_as_the_keys_nearest_word():
    assert corrected("I have a swiss acount, can I recieve my mony?", BANK) == (
        "I have a swiss account, can I receive my money?",
        [("acount", "account"), ("recieve", "receive"), ("mony", "money")])
    assert corrected("Recieve it", BANK)[0] == "Receive it"                       # its capital kept
    # a word with an apostrophe, straight, curly or a backtick, is kept whole ("shouldn" is no word to read)
    assert corrected("it shouldn\u2019t, it shouldn't, it shouldn`t", Vocabulary({"should": 5}))[1] == []
    # each word once in what was read, however often it comes; a hyphen parts words
    assert corrected("acount, acount and e-acount", BANK) == ("account, account and e-account",
                                                              [("acount", "account")])


def test_a_message_mostly_of_words_that_are_no_english_is_searched_as_written():
    assert corrected("votre abonnement mensuel commence demain", Vocabulary({"abandonment": 1, "menus": 1})) == (
        "votre abonnement mensuel commence demain", [])
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
    "i dont want it",               # English as customers write it ("dent" is one edit away)
    "pay with PayPol",              # a capital inside: a name, not read as "paypal"
    "threw it away by acident",     # one edit at most below 8 letters ("accent" is two)
    "is my plan prorated",          # a rare word, "promoted" not much more common than it
    "send 100jsno to jdoe@acount.com or help.acount.com/acount",   # glued to digits, addresses, links
    "I'm Mara Hernández from Straße 5",  # words with letters beyond ASCII are never read in pieces
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
    # A message at the newer version waits for the key's words to be read again (at most `wait`).
    assert await vocabularies.correct(key.id, newer, "how long is the waranty?") == (
        "how long is the warranty?", [("waranty", "warranty")])
    assert vocabularies.loads == 2 and vocabularies.held(key.id).version == newer
    # Read again no sooner than refresh_seconds after the last read: the words held serve meanwhile.
    vocabularies.refresh_seconds = 3600
    assert (await vocabularies.correct(key.id, newer + 1, "how long is the waranty?"))[1] == [("waranty", "warranty")]
    assert vocabularies.loads == 2
    # A read that takes longer than the wait goes on; the message is searched with the words held.
    vocabularies.refresh_seconds, vocabularies.wait = 0.0, 0.0
    assert (await vocabularies.correct(key.id, newer + 2, "how long is the waranty?"))[1] == [("waranty", "warranty")]
    for _ in range(100):
        if vocabularies.loads == 3:
            break
        await asyncio.sleep(0.05)
    assert vocabularies.loads == 3 and vocabularies.held(key.id).version == newer + 2


def _pool_that(query):
    """A stand-in for the pool whose every statement is `query`."""
    return type("Pool", (), {"fetch": staticmethod(query), "fetchval": staticmethod(query)})()


@pytest.mark.integration
async def test_a_vocabulary_that_cannot_be_read_leaves_the_message_as_written(pg):
    vocabularies = Vocabularies(pg)

    async def refused(*args):
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    vocabularies._pool = _pool_that(refused)
    assert await vocabularies.correct("any-key", 1, "swiss acount") == ("swiss acount", [])
    await asyncio.sleep(0)
    assert vocabularies.held("any-key") is None and vocabularies.loads == 0
    # and it is not tried again for every message: no sooner than refresh_seconds after
    calls = []

    async def counted(*args):
        calls.append(args)
        raise OSError("refused")

    vocabularies._pool = _pool_that(counted)
    assert await vocabularies.correct("any-key", 1, "swiss acount") == ("swiss acount", [])
    assert calls == []


@pytest.mark.integration
async def test_a_word_of_a_large_key_missing_from_its_vocabulary_is_looked_up_before_it_is_read(search, admin, pg):
    # Of a key with more chunks than VOCABULARY_CHUNKS the vocabulary is partial: a word it would read
    # otherwise ("Proma", the key's product, in none of the chunks read) is first looked up in full text.
    key = await make_key(search, admin, "spelling-partial", faq=[], docs=[
        ("Products", "The Proma speaker pairs over Bluetooth."), ("Promo", "A promo code takes 10% off.")])
    vocabularies = Vocabularies(pg)
    vocabularies._keys[key.id] = spelling._Held(10**9, Vocabulary({"promo": 3, "code": 3}, complete=False), 0.0)
    assert await vocabularies.correct(key.id, 1, "does the proma pair") == ("does the proma pair", [])
    vocabularies._keys[key.id] = spelling._Held(10**9, Vocabulary({"promo": 3, "code": 3}, complete=True), 0.0)
    assert (await vocabularies.correct(key.id, 1, "does the proma pair"))[1] == [("proma", "promo")]


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
