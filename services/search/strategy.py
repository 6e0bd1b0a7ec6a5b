"""The strategy decision: how a message should be answered, with the reasons and the scores behind it."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common import smalltalk
from services.search.retrieval import Chunk

@dataclass(frozen=True)
class Thresholds:
    knowledge_min_score: float    # relevance (share of the message's terms) a passage needs
    faq_min_score: float          # FAQ question match needed to answer with the stored answer


@dataclass(frozen=True)
class Options:
    """What the key allows beyond its own knowledge."""

    website: str = ""
    web_available: bool = False   # the scraper service can fetch a page now
    allow_direct: bool = False


@dataclass
class Decision:
    strategy: str                 # GREETING | SMALLTALK | FAQ | KNOWLEDGE | WEB | DIRECT | NO_ANSWER
    reasons: list[str] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    top_score: float = 0.0
    faq_answer: str = ""
    fetch_url: str = ""
    scores: dict[str, float] = field(default_factory=dict)


def is_chitchat(message: str) -> str | None:
    """GREETING or SMALLTALK when the message is small talk (services/common/smalltalk.py), else None."""
    found = smalltalk.classify(message)
    return found.strategy if found else None


def _scores(chunks: list[Chunk]) -> dict[str, float]:
    if not chunks:
        return {"relevance": 0.0, "faq": 0.0, "fused": 0.0}
    return {
        "relevance": round(max(c.relevance for c in chunks), 4),
        "faq": round(max(c.faq_score for c in chunks), 4),
        "fused": round(chunks[0].score, 4),
    }


def decide(message: str, chunks: list[Chunk], thresholds: Thresholds, options: Options = Options()) -> Decision:
    chat = is_chitchat(message)
    if chat:
        return Decision(chat, [f"the message is small talk ({smalltalk.classify(message).kind}); no retrieval needed"])
    scores = _scores(chunks)
    relevant = [c for c in chunks if c.relevance >= thresholds.knowledge_min_score or c.faq_score >= thresholds.faq_min_score]
    faq = max((c for c in chunks if c.kind == "faq"), key=lambda c: c.faq_score, default=None)
    if faq is not None and faq.faq_score >= thresholds.faq_min_score:
        rest = [c for c in relevant if c.id != faq.id]
        return Decision(
            "FAQ",
            [f"FAQ question {faq.question!r} matches the message with {faq.faq_score:.2f} "
             f"(at or above {thresholds.faq_min_score:g}); its stored answer is used"],
            [faq, *rest], faq.faq_score, faq_answer=faq.content, scores=scores,
        )
    if relevant:
        top = max(c.relevance for c in relevant)
        return Decision(
            "KNOWLEDGE",
            [f"{len(relevant)} passage(s) contain at least {thresholds.knowledge_min_score:.0%} of the message's "
             f"terms; best {top:.2f}"],
            relevant, top, scores=scores,
        )
    why = (f"no passage contains {thresholds.knowledge_min_score:.0%} of the message's terms (best "
           f"{scores['relevance']:.2f})" if chunks else "no passage of this key's knowledge matches the message")
    if options.website and options.web_available:
        return Decision("WEB", [why, f"the key has a website: fetch a page of {options.website}"],
                        top_score=scores["relevance"], fetch_url=options.website, scores=scores)
    if options.allow_direct:
        reasons = [why]
        if options.website:
            reasons.append("the key has a website but the scraper service is not available")
        reasons.append("the key's settings allow answering directly")
        return Decision("DIRECT", reasons, top_score=scores["relevance"], scores=scores)
    reasons = [why]
    if options.website:
        reasons.append("the key has a website but the scraper service is not available")
    return Decision("NO_ANSWER", reasons, top_score=scores["relevance"], scores=scores)
