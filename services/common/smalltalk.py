"""Small talk in the words people use: greetings, thanks, goodbyes, "are you a bot", emoji-only messages.

A message is small talk when every word of it belongs to a small-talk phrase or to a filler word
("there", "so much", "team"), after normalising case, punctuation, accents and stretched letters
("Heyyy!!", "THANKS", "thaaanks"). A single word outside them ("hi, how do I reset my password?")
makes it a question. Emoji and emoticons alone ("👍", ":)") are small talk too. The search service
decides with it (no retrieval for small talk) and the response service picks its reply with it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

GREETING, THANKS, GOODBYE, BOT, WELLBEING, ACK, EMOJI = (
    "greeting", "thanks", "goodbye", "bot", "wellbeing", "ack", "emoji")

# Phrases as regular expressions over the normalised text (lower case, one space between words,
# stretched letters collapsed to one: "hello" is matched as "helo", so write phrases collapsed too;
# _collapse() is applied to the patterns below so they can be written naturally).
_PHRASES: dict[str, tuple[str, ...]] = {
    GREETING: (
        r"(hi|hello|hey|heya|hiya|howdy|hallo|hola|bonjour|ciao|salut|yo|sup|greetings|helo|hai|hei|oi)",
        r"good (morning|afternoon|evening|day)", r"(gm|morning|evening|afternoon)",
        r"what'?s up", r"wh?at'?s ?up", r"wass?up",
    ),
    THANKS: (
        r"(thanks|thank you|thank u|thankyou|thanx|thnx|thx|tx|ty|tysm|tyvm|cheers|merci|gracias|danke|ta)",
        r"(many|big|huge) thanks", r"(much|greatly|really) appreciated", r"(i )?(really )?appreciate (it|that|this|your help)",
        r"thanks? (a lot|a bunch|a million|so much|very much|for (the|your) (help|answer|reply|info|information))",
        r"that('?s| is| was) (very |really |super )?(helpful|useful|great|perfect)",
        r"(that|this|it|you) (really )?(helped|helps|worked|works|did it|did the trick|solved it|fixed it)",
    ),
    GOODBYE: (
        r"(bye|goodbye|good bye|byebye|bye bye|cya|ciao|later|laters|farewell|adios)",
        r"see (you|ya|u)( later| soon| around)?", r"take care", r"talk (to you )?(later|soon)", r"ttyl",
        r"have a (nice|good|great|lovely) (day|one|evening|weekend|night)", r"good ?night", r"gn",
    ),
    BOT: (
        r"(are|r) (you|u) (a |an )?(real )?(bot|robot|human|person|ai|machine|chatbot|computer|real person|program)",
        r"(is|am) (this|i) (talking|speaking|chatting) (to|with) (a |an )?(real )?(bot|robot|human|person|ai|machine)",
        r"is this (a |an )?(real )?(bot|robot|human|person|ai|chatbot|automated)",
        r"(who|what) (are|r) (you|u)", r"what'?s your name", r"(are|r) (you|u) real",
        r"or (a |an )?(real )?(bot|robot|human|person|ai|machine)",
    ),
    WELLBEING: (
        r"how (are|r) (you|u)( doing)?( today)?", r"how'?s it going", r"how (is|are) (it|things) going",
        r"how do you do", r"(are|r) (you|u) (ok|okay|well|good)",
    ),
    ACK: (
        r"(ok|okay|k|kk|okie|okey|alright|all right|cool|great|nice|awesome|perfect|super|fine|good|got it|gotcha|"
        r"understood|sounds good|i see|noted|excellent|wonderful|amazing|brilliant|lovely|sure|yes|yep|yeah|no|nope|"
        r"lol|haha|hahaha|hehe|wow|oh|ah|hmm|np|no problem|no worries|all good|will do|done)",
    ),
}
# Words that add nothing when they come with small talk: "hi there", "thanks so much guys", "ok then".
_FILLER = (r"(there|all|everyone|everybody|team|guys|folks|friend|friends|mate|buddy|dear|again|so|much|very|"
           r"really|then|and|too|you|u|for|the|help|a|lot|bot|support|sir|madam|oh|well|just|again|once|more|"
           r"one|it|that|indeed|man|pal|bro|people|y'?all|to you|for that)")
# Which kind answers when a message mixes kinds: "hi, are you a bot?" is about the bot.
_PRIORITY = (BOT, WELLBEING, THANKS, GOODBYE, GREETING, ACK)

_EMOTICON = re.compile(r"^(?:[:;=8xX][-'^o]?[)(\]\[dDpP/\\|*3oO0]+|<3+|\^_*\^|[oO]_[oO]|\\o/|[)(]+)$")
_WORD_CHARS = re.compile(r"[^\w\s']+")
_SPACES = re.compile(r"\s+")
_RUN = re.compile(r"(\w)\1+")


def _collapse(text: str) -> str:
    """Every run of a repeated letter becomes one letter: "heyyy" and "hey" meet, "hello" is "helo"."""
    return _RUN.sub(r"\1", text)


def _unit(kind: str, pattern: str) -> re.Pattern:
    return re.compile(r"(?:%s)(?= |$) ?" % _collapse(pattern))


_UNITS: list[tuple[str, re.Pattern]] = [(kind, _unit(kind, p)) for kind in _PRIORITY for p in _PHRASES[kind]]
_FILLER_UNIT = _unit("", _FILLER)


@dataclass(frozen=True)
class SmallTalk:
    kind: str                     # greeting | thanks | goodbye | bot | wellbeing | ack | emoji
    kinds: tuple[str, ...]        # every kind the message contains, in the order said

    @property
    def strategy(self) -> str:
        return "GREETING" if self.kind == GREETING else "SMALLTALK"


def _is_emoji_char(ch: str) -> bool:
    if ch in "\u200d\ufe0f\ufe0e\u20e3":          # joiner, variation selectors, keycap
        return True
    cp = ord(ch)
    if 0x1F3FB <= cp <= 0x1F3FF or 0x1F1E6 <= cp <= 0x1F1FF:   # skin tones, regional indicators (flags)
        return True
    return unicodedata.category(ch) in ("So", "Sk", "Cs")


def normalise(message: str) -> str:
    """Lower case, accents and punctuation gone (apostrophes kept), stretched letters collapsed."""
    text = unicodedata.normalize("NFKD", message.replace("’", "'").replace("`", "'"))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = _WORD_CHARS.sub(" ", text).replace("_", " ")
    text = " ".join(w.strip("'") for w in text.split())
    return _collapse(_SPACES.sub(" ", text).strip())


def _only_emoji(message: str) -> bool:
    """Only emoji, symbols, emoticons and punctuation, with at least one emoji or emoticon."""
    seen = False
    for token in message.split():
        if _EMOTICON.match(token):
            seen = True
            continue
        for ch in token:
            if _is_emoji_char(ch):
                seen = True
            elif not unicodedata.category(ch).startswith("P"):
                return False
    return seen


def _strip_emoji(message: str) -> str:
    kept = " ".join(t for t in message.split() if not _EMOTICON.match(t))
    return "".join(" " if _is_emoji_char(ch) else ch for ch in kept)


def classify(message: str, max_chars: int = 120) -> SmallTalk | None:
    """The small talk a message is, or None when it says or asks anything else."""
    if len(message) > max_chars:
        return None           # nobody greets in a paragraph; a long message carries a question
    if _only_emoji(message):
        return SmallTalk(EMOJI, (EMOJI,))
    text = normalise(_strip_emoji(message))
    if not text:
        return None
    kinds: list[str] = []
    pos = 0
    while pos < len(text):
        for kind, unit in _UNITS:
            m = unit.match(text, pos)
            if m and m.end() > pos:
                kinds.append(kind)
                pos = m.end()
                break
        else:
            m = _FILLER_UNIT.match(text, pos)
            if not m or m.end() == pos:
                return None
            pos = m.end()
    if not kinds:
        return None
    kind = next(k for k in _PRIORITY if k in kinds)
    return SmallTalk(kind, tuple(kinds))
