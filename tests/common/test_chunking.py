"""Chunking keeps sizes bounded and loses no text."""

from __future__ import annotations

from hypothesis import given, strategies as st

from services.common.chunking import chunk_text, content_hash


def test_paragraphs_become_chunks_and_short_headings_join_the_next():
    text = "# Title\n\nFirst paragraph. " + "word " * 50 + "\n\nSecond paragraph."
    chunks = chunk_text(text, max_chars=400, min_chars=20)
    assert chunks[0].startswith("# Title\nFirst paragraph.")
    assert chunks[-1].endswith("Second paragraph.")


@given(st.text(min_size=0, max_size=5000))
def test_chunks_are_bounded_and_keep_every_word(text):
    chunks = chunk_text(text, max_chars=300, min_chars=50)
    assert all(0 < len(c) <= 300 for c in chunks)
    assert "".join("".join(chunks).split()) == "".join(text.split())


def test_content_hash_separates_parts():
    assert content_hash("ab", "c") != content_hash("a", "bc")
