"""Model routing: which backend answers a message, by documented rules.

No LLM call at all for:
  - FAQ: search found a stored FAQ answer that matches closely; it is the answer.
  - GREETING, SMALLTALK: a canned reply (extractive answerer).
  - NO_ANSWER: nothing to answer from; the "don't know" reply (extractive answerer).
With an LLM configured, KNOWLEDGE, WEB and DIRECT go to the LLM:
  - the large model when the message is long (>= `llm_large_min_chars`), asks several questions
    (two or more question marks, or question words in two or more clauses), the retrieval is
    unsure (top passage score < `llm_large_below_score`, or DIRECT: no passages at all), or the
    message is a follow-up that needs the session's earlier turns;
  - the small model otherwise (short, single, well-grounded questions: most support traffic).
The fallback chain is the routed model, then the small one, then the extractive answerer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NO_LLM_STRATEGIES = frozenset({"FAQ", "GREETING", "SMALLTALK", "NO_ANSWER"})
_QUESTION_WORD = re.compile(r"\b(how|what|when|where|which|who|why|can|could|do|does|is|are|will|should)\b", re.I)
_CLAUSE = re.compile(r"[?.;!]|\band also\b|\balso\b|\band\b", re.I)
# A follow-up leans on what was said before: it starts with a connective, or it is short and
# points back with a pronoun ("does it ship abroad?"). "there", "the same" are left out on purpose:
# "Is there a Linux app?" stands on its own, and over-eager detection would bypass the cache.
_FOLLOW_UP_START = re.compile(r"^\s*(and|also|but|so|then|what about|how about|why not|ok(ay)?,? (and|but|so))\b", re.I)
_POINTS_BACK = re.compile(r"\b(it|that|this|those|these|them|they|one)\b", re.I)
_SHORT = 80


@dataclass(frozen=True)
class Route:
    backend: str                  # "faq" | "extractive" | "llm"
    models: tuple[str, ...] = ()  # LLM models in fallback order (the extractive answerer comes after)
    reason: str = ""


def several_questions(message: str) -> bool:
    if message.count("?") >= 2:
        return True
    clauses = [c for c in _CLAUSE.split(message) if c and c.strip()]
    return sum(1 for c in clauses if _QUESTION_WORD.match(c.strip())) >= 2


def is_follow_up(message: str) -> bool:
    """A message that may need the session's earlier turns to be understood."""
    if len(message) >= 300:
        return False
    return bool(_FOLLOW_UP_START.search(message)) or (len(message) < _SHORT and bool(_POINTS_BACK.search(message)))


def route(
    message: str,
    strategy: str,
    top_score: float,
    *,
    llm_enabled: bool,
    small: str,
    large: str,
    large_min_chars: int,
    large_below_score: float,
    with_history: bool = False,
) -> Route:
    if strategy == "FAQ":
        return Route("faq", reason="stored FAQ answer")
    if strategy in NO_LLM_STRATEGIES or not llm_enabled:
        return Route("extractive", reason="no LLM needed" if llm_enabled else "no LLM configured")
    reasons = []
    if len(message) >= large_min_chars:
        reasons.append(f"long message ({len(message)} chars)")
    if several_questions(message):
        reasons.append("several questions")
    if strategy == "DIRECT":
        reasons.append("no passages to ground the answer")
    elif top_score < large_below_score:
        reasons.append(f"low retrieval confidence ({top_score:.3f})")
    if with_history:
        reasons.append("follow-up with session context")
    if reasons:
        models = (large, small) if large != small else (large,)
        return Route("llm", models, "large model: " + ", ".join(reasons))
    return Route("llm", (small,), "small model: short, single, well-grounded question")
