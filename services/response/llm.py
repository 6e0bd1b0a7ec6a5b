"""Answer backends behind one interface; the extractive answerer is the offline default."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_STOP = frozenset(
    """a an and are as at be but by can could do does did for from had has have how i if in into is it its
    me my of on or our please should so than that the their them then there these they this to was we were
    what when where which who why will with would you your yours about any tell know want need""".split()
)


@dataclass(frozen=True)
class PassageText:
    id: str
    kind: str
    title: str
    text: str
    score: float


@dataclass
class Answer:
    text: str
    model: str
    cited: list[str] = field(default_factory=list)   # passage ids the answer relies on
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class AnswerRequest:
    message: str
    key_name: str
    instructions: str
    strategy: str                 # GREETING | SMALLTALK | KNOWLEDGE | NO_ANSWER | ...
    passages: list[PassageText]


class Answerer(Protocol):
    """Produces an answer as a stream of text pieces; the last value returned is the Answer."""

    def stream(self, request: AnswerRequest) -> AsyncIterator[str | Answer]: ...


def _stem(word: str) -> str:
    """A light suffix stripper: enough for "bake", "baked" and "baking" to meet."""
    for suffix in ("ing", "edly", "ed", "ies", "es", "s", "ly"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


def terms(text: str) -> set[str]:
    return {_stem(w) for w in (m.lower() for m in _WORD.findall(text)) if w not in _STOP and len(w) > 1}


NO_ANSWER_TEXT = "I'm sorry, I don't have information about that. Could you rephrase, or ask about something else?"


class ExtractiveAnswerer:
    """Answers with the passages' best sentences, citing them; says so when nothing fits."""

    model = "extractive"

    def __init__(self, max_sentences: int = 3, min_coverage: float = 0.4) -> None:
        self._max_sentences = max_sentences
        self.min_coverage = min_coverage

    def answer(self, request: AnswerRequest) -> Answer:
        if request.strategy == "GREETING":
            name = request.key_name or "us"
            return Answer(f"Hello! How can I help you with {name} today?", self.model)
        if request.strategy == "SMALLTALK":
            return Answer("You're welcome! Is there anything else I can help you with?", self.model)
        wanted = terms(request.message)
        if not wanted or not request.passages:
            return Answer(NO_ANSWER_TEXT, self.model)
        # A sentence qualifies when it (with its passage's title or FAQ question) covers enough of
        # the question's words; one shared word such as "sell" is not an answer.
        needed = max(1, math.ceil(self.min_coverage * len(wanted)))
        top = request.passages[0]
        if top.kind == "faq":
            question, _, stored = top.text.partition("\n")
            if len(wanted & terms(top.text)) >= needed:
                return Answer(f"{stored.strip()} [{top.id}]", self.model, [top.id])
        scored: list[tuple[float, int, int, str, str]] = []
        for p_index, passage in enumerate(request.passages):
            heading, _, body = passage.text.partition("\n") if passage.kind == "faq" else (passage.title, "", passage.text)
            heading_terms = terms(heading)
            for s_index, sentence in enumerate(s.strip() for s in _SENTENCE.split(body)):
                if len(sentence) < 3:
                    continue
                sentence_terms = terms(sentence)
                overlap = len(wanted & (sentence_terms | heading_terms))
                if overlap >= needed and wanted & sentence_terms:
                    # Passage rank breaks ties between sentences that share as many words.
                    scored.append((overlap + passage.score, -p_index, -s_index, sentence, passage.id))
        if not scored:
            return Answer(NO_ANSWER_TEXT, self.model)
        scored.sort(reverse=True)
        best = [s for s in scored if s[0] >= 0.6 * scored[0][0]][: self._max_sentences]
        best.sort(key=lambda s: (-s[1], -s[2]))  # back into reading order
        cited: list[str] = []
        parts = []
        for _, _, _, sentence, pid in best:
            if pid not in cited:
                cited.append(pid)
            parts.append(f"{sentence} [{pid}]")
        return Answer(" ".join(parts), self.model, cited)

    async def stream(self, request: AnswerRequest) -> AsyncIterator[str | Answer]:
        answer = self.answer(request)
        for piece in re.findall(r"\S+\s*", answer.text):
            yield piece
        yield answer
