"""The strategy decision: how a message should be answered, with the reasons and the scores behind it."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field

from services.common import smalltalk
from services.common.sentences import units as sentence_units
from services.common.terms import content_terms
from services.search.retrieval import Chunk

@dataclass(frozen=True)
class Thresholds:
    """Where the decision changes. The dense ones apply when the dense arm ran (the key's vectors are
    indexed); otherwise the lexical ones decide alone. Defaults and how they were chosen: settings.py."""

    knowledge_min_score: float    # relevance (share of the message's terms) a passage needs (lexical only)
    faq_min_score: float          # FAQ question match needed to answer with the stored answer
    answer_min_dense: float = 0.30    # best passage cosine from which the knowledge answers at all
    passage_min_dense: float = 0.25   # cosine a passage needs to be returned with a KNOWLEDGE answer
    faq_min_dense: float = 0.80       # FAQ entry cosine from which its stored answer is used
    faq_min_margin: float = 1.0       # ... or by which it stands above the best passage that is no FAQ entry
    lexical_weight: float = 0.1       # weight of the lexical relevance added to the dense score
    answer_min_support: float = 0.0   # support() from which the knowledge answers
    unknown_min_support: float = 0.0  # ... when the message is a yes/no question naming a word the knowledge never holds
    known_weight: float = 0.2         # weight of the known share of the message's terms in support()
    covered_weight: float = 0.0       # weight of covered() in support()


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
        return {"relevance": 0.0, "faq": 0.0, "fused": 0.0, "dense": 0.0}
    return {
        "relevance": round(max(c.relevance for c in chunks), 4),
        "faq": round(max(c.faq_score for c in chunks), 4),
        "fused": round(chunks[0].score, 4),
        "dense": round(max(c.dense for c in chunks), 4),
        "peak": round(peak(chunks), 4),
        "known": round(max(c.known for c in chunks), 4),
        "faq_dense": round(max((c.dense for c in chunks if c.kind == "faq"), default=0.0), 4),
    }


PEAK_OF = 10      # the dense candidates whose mean the best one is compared with


def peak(chunks: list[Chunk]) -> float:
    """How far the best dense score stands above the mean of the PEAK_OF best: a question the knowledge
    answers tends to have a few passages well above the rest; one it does not answer, many alike."""
    scores = sorted((c.dense for c in chunks if c.dense > 0), reverse=True)[:PEAK_OF]
    return scores[0] - sum(scores) / len(scores) if scores else 0.0


COVERED_PASSAGES = 5    # the passages an answer is taken from (the extractive answerer reads five)


@functools.lru_cache(maxsize=4096)
def _passage_terms(content: str, heading: str) -> tuple[frozenset[str], tuple[frozenset[str], ...]]:
    """A passage's heading terms and each quotable sentence's terms (as the answerer quotes them:
    never a question). Kept for the passages asked about most: ~0.2 ms of CPU a passage to find."""
    sentences = tuple(frozenset(content_terms(u.text)) for u in sentence_units(content, heading)
                      if not u.text.rstrip().endswith("?"))
    return frozenset(content_terms(heading)), sentences


def covered(message: str, chunks: list[Chunk], passages: int = COVERED_PASSAGES) -> float:
    """The share of the message's term weight that the first `passages` passages hold (in a
    quotable sentence or their title), each term weighted by its rarity among those passages'
    sentences (log((n + 1) / (df + 0.5)) over their n sentences; a term none holds weighs the most).
    A question the passages answer names what they talk about; one they do not answer tends to name
    something they never mention ("Zapier" beside pages about integrations), and that term, being
    in none of their sentences, is the heaviest. 0 when the message has no content terms."""
    wanted = content_terms(message)
    if not wanted:
        return 0.0
    sentences: list[frozenset[str]] = []
    held: set[str] = set()
    for c in chunks[:passages]:
        heading_terms, passage_sentences = _passage_terms(c.content, c.question if c.kind == "faq" else c.title)
        held |= heading_terms
        sentences.extend(passage_sentences)
    held.update(*sentences)
    n = len(sentences)
    weight = {t: math.log((n + 1) / (sum(1 for s in sentences if t in s) + 0.5)) for t in wanted}
    total = sum(weight.values())
    return sum(w for t, w in weight.items() if t in held) / total if total > 0 else 0.0


# "Do you have / offer / sell X", "Does it support X", "Is there an X", "Does it work with X": a question
# whether the product or the company has a thing. When the knowledge never names that thing, it does not
# answer the question, however close the nearest passage's topic ("Do you have a referral programme?"
# beside the pricing page): a help site documents what exists. X: the words after the verb (_which()).
_ASKS_FOR = re.compile(
    # "Is it possible to get X", "Is there a way to add X" (before "is there X", which would read "a way")
    r"\b(?:is\s+it\s+possible|is\s+there\s+(?:a|any)\s+way|any\s+way)\s+(?:for\s+(?:me|us)\s+)?to\s+[\w'-]+\s+"
    r"(?:an?\s+|the\s+|my\s+|our\s+|some\s+)?(?P<w>[^?.!,;:]+)"
    r"|\b(?:(?:do|d'?)\s*(?:you|u|ya|they)|does\s+(?:the\s+|your\s+)?[\w'-]+|can\s+(?:you|it))\s+"
    r"(?:have|offer|sell|support|do|make|accept|ship|provide)\s+(?:an?\s+|any\s+|some\s+)?(?P<x>[^?.!,;:]+)"
    r"|\b(?:is|are)\s+there\s+(?:an?\s+|any\s+|some\s+)?(?P<y>[^?.!,;:]+)"
    # "Does it work with X", "Will the app sync with X", "Is it compatible with X"
    r"|\b(?:(?:do|does|will|would|can|could)\s+(?:it|you|they|the\s+[\w'-]+|[\w'-]+)\s+"
    r"|(?:is|are)\s+(?:it|this|that|they|these|the\s+[\w'-]+|your\s+[\w'-]+|[\w'-]+)\s+)"
    r"(?:(?:work|integrate|sync|connect|pair|talk)\s+(?:\w+\s+)?with|compatible\s+with)\s+"
    r"(?:an?\s+|the\s+|my\s+|our\s+)?(?P<z>[^?.!,;:]+)"
    # "Can I sync my rides to X", "Can we send invoices via X", "Can I pay with X": a service that data or
    # money goes through, named after the verb's object (not "how can I ...", which asks the way; not
    # "send / share ... to / with X", whose X is mostly a person: "share a folder with a colleague")
    r"|\b(?<!how\s)(?:can|could)\s+(?:my\s+|our\s+|the\s+)?[\w'-]+\s+"
    r"(?:(?:sync|export|import|connect|link|pay|upload|stream|cast|log\s+in|sign\s+in)\s+"
    r"(?:[\w'-]+\s+){0,7}(?:via|through|to|into|with|using|from)"
    r"|(?:send|share|post)\s+(?:[\w'-]+\s+){0,7}(?:via|through|using))"
    r"\s+(?:an?\s+|the\s+|my\s+|our\s+|your\s+)?(?P<v>[^?.!,;:]+)",
    re.IGNORECASE)
_THING_WORD = re.compile(r"[^\W_][\w'-]*")
_PHRASE_END = frozenset(
    "a an the my your our their it its this that these those them for in on at to of with and or so if i me "
    "we you he she they when where while which who as by from than then there here about after before like "
    "can could will would should do does is are was be".split())
_QUESTION = re.compile(r"\?+")        # a question's end ("why??" is one): linear in the message
# A yes/no question: the message opens with its verb ("can i ...", "does it ...", "is there ..."), after at most
# a greeting or a filler word.
_YES_NO = re.compile(r"\W*(?:(?:hi|hey|hello|ok|okay|so|and|also|but|quick question)\W+)?"
                     r"(?:can|could|do|does|is|are|will|would|have|has|did|am)\b", re.IGNORECASE)
_ASKS_UNKNOWN = " as a yes/no question naming a word the knowledge never uses"   # in the NO_ANSWER reason


def asks_unknown(message: str, unknown: tuple[str, ...] | frozenset[str]) -> bool:
    """Whether the message is a yes/no question and names a word that no chunk of the key holds: "can i
    borrow 3000 from you?", "do you take amex". Such a question asks whether something exists or is
    allowed; a help site documents what exists, and a word it never uses is weak evidence that it does.
    Answerable ones do this too (a typo, "is a whole year any cheaper"), so it only asks for more support
    (Thresholds.unknown_min_support), never refuses by itself."""
    return bool(unknown) and _YES_NO.match(message) is not None


def _lexeme_of(word: str, lexemes: frozenset[str]) -> str | None:
    """The lexeme of `lexemes` that a word stems to: PostgreSQL's English stems are the word's start (but
    for a final y stemmed to i: "company" -> "compani"); of several, the longest ("PayPal" is "paypal",
    not "pay")."""
    w = word.lower().strip("'-")
    found = [lx for lx in lexemes
             if len(lx) > 2 and (w.startswith(lx) or (lx.endswith("i") and w.startswith(lx[:-1] + "y")))]
    return max(found, key=len, default=None)


def unnamed(message: str, unknown: tuple[str, ...] | frozenset[str], named: tuple[str, ...] | frozenset[str] = ()
            ) -> list[str]:
    """The words of the thing a message asks whether the product has ("Do you offer a Black Friday
    discount?" -> ["Black", "Friday"]) that the key's knowledge never contains (`unknown`: the message's
    lexemes no chunk holds; `named`: those some chunk holds, so that "PayPal" is read as "paypal", named,
    not as "pay"), or []. Only for a message that asks one question: in "Is there a student
    discount? And how long is the trial?" the second question may well be answered."""
    if not unknown or len(_QUESTION.findall(message)) > 1:
        return []
    unknown = frozenset(unknown)
    lexemes = unknown | frozenset(named)
    for m in _ASKS_FOR.finditer(message):
        thing = m.group("w") or m.group("x") or m.group("y") or m.group("z") or m.group("v") or ""
        missing = [w for w in _which(thing) if _lexeme_of(w, lexemes) in unknown]
        if missing:
            return missing
    return []


# A thing that is a kind of offer or feature is named by what follows it: "an app for Apple Watch",
# "a discount for students", "an integration with Xero".
_KIND_OF_THING = frozenset(
    "app apps application version versions plan plans discount discounts deal deals offer offers option options "
    "integration integrations plugin plugins extension extensions support mode program programme scheme "
    "service services skill".split())
_OF_WHAT = frozenset("for with on".split())
# An amount asked for ("Is there a cap on deposits?", "any fee for cancelling?", "a minimum order?")
# is stated on a page in figures, mostly without the word ("at most €5,000", "costs €2"): the thing
# asked about is what follows the word, and alone ("Is there a fee?") it names nothing to look for.
_AMOUNT = frozenset(
    "cap caps limit limits max maximum maximums min minimum minimums fee fees charge charges surcharge cost "
    "costs price prices rate rates amount amounts allowance threshold deadline".split())
_OF_AMOUNT = _OF_WHAT | frozenset("per to of".split())
_ARTICLES = frozenset("a an the my your our their".split())


def _phrase(words: list[str]) -> list[str]:
    """Up to three words, up to a function word."""
    phrase = []
    for word in words:
        if word.lower() in _PHRASE_END or len(phrase) == 3:
            break
        phrase.append(word)
    return phrase


def _which(text: str) -> list[str]:
    """The words that say which thing is asked for, of the up to three words naming it (up to a function
    word): after a kind of thing ("app", "discount") and for / with / on, the words naming which ("an app
    for [Apple Watch]"); else the words before the last, the thing's kind ("[Black Friday] discount"; a
    knowledge that never says "discount" may well say "50 percent off for students"), or the one word."""
    found = _THING_WORD.findall(text)
    words = _phrase(found)
    after = len(words)
    if len(words) == 1 and words[0].lower() in _AMOUNT:  # "a cap on [deposits]", "a fee"
        rest = found[after + 1:] if after < len(found) and found[after].lower() in _OF_AMOUNT else []
        return _phrase([x for x in rest if x.lower() not in _ARTICLES])
    while len(words) > 1 and words[0].lower() in _AMOUNT:  # "a minimum [order]"
        words = words[1:]
    if words and words[-1].lower() in _KIND_OF_THING and after < len(found) and found[after].lower() in _OF_WHAT:
        which = _phrase([x for x in found[after + 1:] if x.lower() not in _ARTICLES])
        if which:
            return which
    return words[:-1] if len(words) > 1 else words


def support(chunks: list[Chunk], known_weight: float, covered_share: float = 0.0, covered_weight: float = 0.0
            ) -> float:
    """The evidence that the knowledge answers the message, beyond its best score: how far the best
    passage stands above the others (peak) plus `known_weight` times the share of the message's terms
    that the key's knowledge contains at all (a question naming things no page mentions is likely not
    answered there, however close its topic), plus `covered_weight` times `covered()` of the
    passages an answer would be taken from."""
    return (peak(chunks) + known_weight * max((c.known for c in chunks), default=0.0)
            + covered_weight * covered_share)


def fuse(chunks: list[Chunk], lexical_weight: float) -> list[Chunk]:
    """Candidates best first by their dense score plus `lexical_weight` times their lexical relevance
    (the share of the message's terms they contain), that sum as Chunk.score.

    Dense-led: on the dev split of the help-site evaluation, where questions paraphrase the pages, the
    dense order alone put the right page first for 0.67 of the questions and a rank fusion with the
    lexical order (RRF, dense weighted 2:1) for 0.54; the lexical relevance as a small bonus (0.1)
    breaks near-ties between passages that the embedding cannot tell apart."""
    fused = {c.id: c.dense + lexical_weight * c.relevance for c in chunks}
    ranked = sorted(chunks, key=lambda c: (-fused[c.id], -c.dense))
    return [c.with_scores(score=round(fused[c.id], 6)) for c in ranked]


def diversify(chunks: list[Chunk], per_page: int = 2) -> list[Chunk]:
    """The best `per_page` passages of each page first (in rank order), then the pages' other passages:
    the first few sources name different pages rather than three passages of one. The best passage
    stays first. An FAQ entry is a page of its own. Two per page, not one: on the demo set one per page
    pushed a document's second passage (the one asked about) out of the top 3."""
    seen: dict[str, int] = {}
    first: list[Chunk] = []
    rest: list[Chunk] = []
    for c in chunks:
        page = c.id if c.kind == "faq" else (c.url or c.document or c.id)
        (rest if seen.get(page, 0) >= per_page else first).append(c)
        seen[page] = seen.get(page, 0) + 1
    return first + rest


def _dense_decision(chunks: list[Chunk], t: Thresholds, support_score: float, min_support: float
                    ) -> Decision | None:
    """FAQ or KNOWLEDGE by the embeddings' cosines, or None (nothing close enough)."""
    top = max(c.dense for c in chunks)
    if top < t.answer_min_dense or support_score < min_support:
        return None
    faq = max((c for c in chunks if c.kind == "faq"), key=lambda c: (c.dense, c.faq_score), default=None)
    # An FAQ entry answers with its stored answer when it is close in meaning, or close in words and
    # about as close in meaning as the best passage, or the best match by a clear margin over every
    # passage that is not an FAQ entry.
    pages = max((c.dense for c in chunks if c.kind != "faq"), default=0.0)
    if faq is not None and faq.dense >= t.answer_min_dense and (
            faq.dense >= t.faq_min_dense or (faq.faq_score >= t.faq_min_score and faq.dense >= top - 0.05)
            or faq.dense >= pages + t.faq_min_margin):
        rest = [c for c in chunks if c.id != faq.id and c.dense >= t.passage_min_dense]
        return Decision(
            "FAQ", [f"FAQ question {faq.question!r} matches the message (cosine {faq.dense:.2f}, "
                    f"lexical {faq.faq_score:.2f}, best other passage {pages:.2f}); its stored answer is used"],
            [faq, *rest], faq.dense, faq_answer=faq.content)
    relevant = [c for c in chunks if c.dense >= t.passage_min_dense]
    return Decision(
        "KNOWLEDGE", [f"best passage cosine {top:.2f} (at or above {t.answer_min_dense:g}); "
                      f"{len(relevant)} passage(s) at or above {t.passage_min_dense:g}"],
        relevant, top)


def _lexical_decision(chunks: list[Chunk], t: Thresholds) -> Decision | None:
    relevant = [c for c in chunks if c.relevance >= t.knowledge_min_score or c.faq_score >= t.faq_min_score]
    faq = max((c for c in chunks if c.kind == "faq"), key=lambda c: c.faq_score, default=None)
    if faq is not None and faq.faq_score >= t.faq_min_score:
        rest = [c for c in relevant if c.id != faq.id]
        return Decision(
            "FAQ",
            [f"FAQ question {faq.question!r} matches the message with {faq.faq_score:.2f} "
             f"(at or above {t.faq_min_score:g}); its stored answer is used"],
            [faq, *rest], faq.faq_score, faq_answer=faq.content)
    if relevant:
        top = max(c.relevance for c in relevant)
        return Decision(
            "KNOWLEDGE",
            [f"{len(relevant)} passage(s) contain at least {t.knowledge_min_score:.0%} of the message's "
             f"terms; best {top:.2f}"],
            relevant, top)
    return None


def decide(message: str, chunks: list[Chunk], thresholds: Thresholds, options: Options = Options()) -> Decision:
    found = smalltalk.classify(message)
    if found:
        return Decision(found.strategy, [f"the message is small talk ({found.kind}); no retrieval needed"])
    dense = any(c.dense > 0 for c in chunks)
    if dense:
        chunks = diversify(fuse(chunks, thresholds.lexical_weight))
    scores = _scores(chunks)
    share = covered(message, chunks) if chunks and dense and thresholds.covered_weight else 0.0
    support_score = support(chunks, thresholds.known_weight, share, thresholds.covered_weight) if chunks else 0.0
    scores["support"] = round(support_score, 4)
    scores["covered"] = round(share, 4)
    listed = next((c for c in chunks if c.unknown), None)
    missing = unnamed(message, listed.unknown, listed.named) if listed else []
    min_support = thresholds.answer_min_support
    if listed and asks_unknown(message, listed.unknown):
        min_support = max(min_support, thresholds.unknown_min_support)
    if not chunks or missing:
        decision = None
    elif dense:
        decision = _dense_decision(chunks, thresholds, support_score, min_support)
    else:
        decision = _lexical_decision(chunks, thresholds)
    if decision is not None:
        decision.scores = scores
        return decision
    if not chunks:
        why = "no passage of this key's knowledge matches the message"
    elif missing:
        why = (f"the message asks whether there is {' '.join(missing)!r}, which no passage of this key's "
               f"knowledge mentions")
    elif dense:
        why = (f"no passage is close enough in meaning (best score {scores['dense']:.2f}, at least "
               f"{thresholds.answer_min_dense:g} needed; support {scores['support']:.3f}, at least "
               f"{min_support:g} needed{_ASKS_UNKNOWN if min_support > thresholds.answer_min_support else ''}: "
               f"standing {scores['peak']:.3f} above the others, "
               f"{scores['known']:.0%} of the message's terms known, {share:.0%} of their weight in the "
               f"passages read)")
    else:
        why = (f"no passage contains {thresholds.knowledge_min_score:.0%} of the message's terms (best "
               f"{scores['relevance']:.2f})")
    top = scores["dense"] if dense else scores["relevance"]
    if options.website and options.web_available:
        return Decision("WEB", [why, f"the key has a website: fetch a page of {options.website}"],
                        top_score=top, fetch_url=options.website, scores=scores)
    reasons = [why]
    if options.website:
        reasons.append("the key has a website but the scraper service is not available")
    if options.allow_direct:
        reasons.append("the key's settings allow answering directly")
        return Decision("DIRECT", reasons, top_score=top, scores=scores)
    return Decision("NO_ANSWER", reasons, top_score=top, scores=scores)
