"""Retrieval quality: hit@1, hit@3, MRR and the strategy confusion table over a labelled question set."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

STRATEGIES = ["GREETING", "SMALLTALK", "FAQ", "KNOWLEDGE", "WEB", "DIRECT", "NO_ANSWER"]


@dataclass(frozen=True)
class Case:
    question: str
    sources: list[str]        # "faq:<question>" or "doc:<url>|<phrase in the chunk>"; any one is a hit
    strategy: str


@dataclass(frozen=True)
class Hit:
    """A returned passage, as much of it as the evaluation needs."""

    kind: str
    title: str
    text: str
    url: str


@dataclass
class Outcome:
    case: Case
    strategy: str
    passages: list[Hit]


@dataclass
class Report:
    answerable: int
    hit_at_1: float
    hit_at_3: float
    mrr: float
    strategy_accuracy: float
    faq_precision: float      # of the FAQ decisions, those whose stored answer is an expected source
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)   # expected -> chosen -> count
    misses: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "answerable": self.answerable, "hit_at_1": self.hit_at_1, "hit_at_3": self.hit_at_3, "mrr": self.mrr,
            "strategy_accuracy": self.strategy_accuracy, "faq_precision": self.faq_precision, "confusion": self.confusion, "misses": self.misses,
        }


def load_cases(path: Path) -> list[Case]:
    data = json.loads(path.read_text())
    return [Case(q["q"], list(q["sources"]), q["strategy"]) for q in data["questions"]]


def matches(source: str, passage: Hit) -> bool:
    kind, _, ref = source.partition(":")
    if kind == "faq":
        return passage.kind == "faq" and passage.title.strip().lower() == ref.strip().lower()
    url, _, phrase = ref.partition("|")
    return passage.kind != "faq" and passage.url == f"doc:{url}" and phrase.lower() in passage.text.lower()


def rank_of(case: Case, passages: list[Hit]) -> int | None:
    """1-based rank of the first passage that is one of the expected sources."""
    for i, p in enumerate(passages, 1):
        if any(matches(s, p) for s in case.sources):
            return i
    return None


def evaluate(outcomes: list[Outcome]) -> Report:
    answerable = [o for o in outcomes if o.case.sources]
    ranks = [rank_of(o.case, o.passages) for o in answerable]
    n = max(1, len(answerable))
    confusion: dict[str, Counter] = {}
    for o in outcomes:
        confusion.setdefault(o.case.strategy, Counter())[o.strategy] += 1
    faq = [o for o in outcomes if o.strategy == "FAQ"]
    faq_right = sum(1 for o in faq if o.passages and any(matches(s, o.passages[0]) for s in o.case.sources))
    misses = [f"{o.case.question!r}: rank {r or '-'}, strategy {o.strategy}"
              for o, r in zip(answerable, ranks) if r is None or r > 3]
    return Report(
        answerable=len(answerable),
        hit_at_1=sum(1 for r in ranks if r == 1) / n,
        hit_at_3=sum(1 for r in ranks if r is not None and r <= 3) / n,
        mrr=sum(1 / r for r in ranks if r) / n,
        strategy_accuracy=sum(1 for o in outcomes if o.strategy == o.case.strategy) / max(1, len(outcomes)),
        faq_precision=faq_right / len(faq) if faq else 1.0,
        confusion={k: dict(v) for k, v in confusion.items()},
        misses=misses,
    )


# --- the help-site evaluation: questions with expected pages and facts, asked through Chat ---------------


@dataclass(frozen=True)
class Asked:
    """One question of a help-site evaluation and what Parley did with it."""

    kind: str                     # answerable | unanswerable | smalltalk (the label)
    pages: tuple[str, ...]        # expected page paths (any one is a hit)
    facts: tuple[str, ...]        # alternatives that must appear in the answer
    plan_pages: tuple[str, ...]   # page paths of Plan's passages, best first
    strategy: str                 # the strategy of the Chat answer
    answer: str


def _norm(text: str) -> str:
    return " ".join(text.lower().replace("\u2019", "'").split())


_CITATION = re.compile(r"\s*\[\d+\]")


def fact_found(facts: tuple[str, ...], answer: str) -> bool:
    """Whether the answer says one of the facts. Its citations ("[134959]") are not what it says, and a
    number is found only whole: "59" is not in "159", "1,590", "£59.99" or "1.59"."""
    said = _norm(_CITATION.sub("", answer))
    for fact in map(_norm, facts):
        pattern = ((r"(?<!\d)(?<!\d[.,])" if fact[:1].isdigit() else "") + re.escape(fact)
                   + (r"(?![.,]?\d)" if fact[-1:].isdigit() else ""))
        if fact and re.search(pattern, said):
            return True
    return False


def page_rank(expected: tuple[str, ...], returned: tuple[str, ...]) -> int | None:
    wanted = {p.rstrip("/") for p in expected}
    seen = []
    for page in returned:         # a page with several passages counts once
        if page not in seen:
            seen.append(page)
    for i, page in enumerate(seen, 1):
        if page.rstrip("/") in wanted:
            return i
    return None


def site_report(items: list[Asked]) -> dict[str, float | int]:
    """hit@1, hit@3, MRR, fact-in-answer and answered-NO_ANSWER share of the answerable questions;
    NO_ANSWER precision and recall over the questions about the product; small-talk accuracy."""
    answerable = [a for a in items if a.kind == "answerable"]
    unanswerable = [a for a in items if a.kind == "unanswerable"]
    smalltalk = [a for a in items if a.kind == "smalltalk"]
    ranks = [page_rank(a.pages, a.plan_pages) for a in answerable]
    n = max(1, len(answerable))
    said_none = [a for a in answerable + unanswerable if a.strategy == "NO_ANSWER"]
    chitchat = ("GREETING", "SMALLTALK")
    return {
        "answerable": len(answerable), "unanswerable": len(unanswerable), "smalltalk": len(smalltalk),
        "hit_at_1": sum(1 for r in ranks if r == 1) / n,
        "hit_at_3": sum(1 for r in ranks if r is not None and r <= 3) / n,
        "mrr": sum(1 / r for r in ranks if r) / n,
        "fact_in_answer": sum(1 for a in answerable if fact_found(a.facts, a.answer)) / n,
        "answerable_no_answer": sum(1 for a in answerable if a.strategy == "NO_ANSWER") / n,
        "no_answer_precision": (sum(1 for a in said_none if a.kind == "unanswerable") / len(said_none)
                                if said_none else 1.0),
        "no_answer_recall": (sum(1 for a in unanswerable if a.strategy == "NO_ANSWER") / len(unanswerable)
                             if unanswerable else 1.0),
        "smalltalk_accuracy": (sum(1 for a in smalltalk if a.strategy in chitchat) / len(smalltalk)
                               if smalltalk else 1.0),
        "false_smalltalk": sum(1 for a in answerable + unanswerable if a.strategy in chitchat),
    }
