"""Splitting text into passages of bounded size along headings and paragraphs."""

from __future__ import annotations

import hashlib
import re

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def chunk_text(text: str, *, max_chars: int = 1200, min_chars: int = 200) -> list[str]:
    """Paragraphs are packed together up to max_chars; a longer paragraph is split at sentences."""
    pieces: list[str] = []
    for para in _PARAGRAPH.split(text.replace("\r\n", "\n")):
        para = " ".join(para.split())
        if not para:
            continue
        if len(para) <= max_chars:
            pieces.append(para)
            continue
        current = ""
        for sentence in _SENTENCE_END.split(para):
            while len(sentence) > max_chars:  # one enormous "sentence": cut it hard
                if current:
                    pieces.append(current)
                    current = ""
                pieces.append(sentence[:max_chars])
                sentence = sentence[max_chars:]
            if current and len(current) + 1 + len(sentence) > max_chars:
                pieces.append(current)
                current = sentence
            else:
                current = f"{current} {sentence}".strip()
        if current:
            pieces.append(current)
    chunks: list[str] = []
    for piece in pieces:
        # A short paragraph (a heading, a one-liner) joins the next one rather than stand alone.
        if chunks and len(chunks[-1]) < min_chars and len(chunks[-1]) + 1 + len(piece) <= max_chars:
            chunks[-1] = f"{chunks[-1]}\n{piece}"
        else:
            chunks.append(piece)
    return chunks


def content_hash(*parts: str) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\x00")
    return h.digest()
