"""The strategy decision: how a message should be answered, with the reasons."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from services.search.retrieval import Chunk

_GREETING = re.compile(
    r"^\s*(hi|hello|hey|hiya|howdy|good (morning|afternoon|evening)|greetings|yo)\b[\s!.,]*(there|all|team)?[\s!.,]*$",
    re.IGNORECASE,
)
_SMALLTALK = re.compile(
    r"^\s*(thanks|thank you|thx|cheers|bye|goodbye|see you|how are you|who are you|ok(ay)?|cool|great)\b[\s!.,?]*$",
    re.IGNORECASE,
)


@dataclass
class Decision:
    strategy: str                      # GREETING | SMALLTALK | KNOWLEDGE | NO_ANSWER
    reasons: list[str] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    top_score: float = 0.0


def is_chitchat(message: str) -> str | None:
    if _GREETING.match(message):
        return "GREETING"
    if _SMALLTALK.match(message):
        return "SMALLTALK"
    return None


def decide(message: str, chunks: list[Chunk], *, min_score: float) -> Decision:
    chat = is_chitchat(message)
    if chat:
        return Decision(chat, [f"the message is {chat.lower()}; no retrieval needed"])
    top = chunks[0].score if chunks else 0.0
    relevant = [c for c in chunks if c.score >= min_score]
    if relevant:
        return Decision(
            "KNOWLEDGE",
            [f"{len(relevant)} passage(s) scored at or above {min_score:g}; best {top:.3f}"],
            relevant,
            top,
        )
    if chunks:
        return Decision("NO_ANSWER", [f"best passage scored {top:.3f}, below {min_score:g}"], [], top)
    return Decision("NO_ANSWER", ["no passage of this key's knowledge matches the message"], [], 0.0)
