"""Small talk in the words people use: greetings, thanks, goodbyes, "are you a bot", praise, complaints, emoji.

A message is small talk when every word of it belongs to a small-talk phrase or to a filler word
("there", "so much", "team"), after normalising case, punctuation, accents and stretched letters
("Heyyy!!", "THANKS", "thaaanks"), in English and the commonest forms of Spanish, French, German, Italian,
Portuguese and Dutch ("merci beaucoup", "danke schön", "dank je wel"). A single word outside them ("hi, how do I reset my password?")
makes it a question. Emoji and emoticons alone ("👍", ":)") are small talk too. The search service
decides with it (no retrieval for small talk) and the response service picks its reply with it.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

GREETING, THANKS, GOODBYE, BOT, WELLBEING, ACK, EMOJI, PRAISE, COMPLAINT = (
    "greeting", "thanks", "goodbye", "bot", "wellbeing", "ack", "emoji", "praise", "complaint")

# Phrases as regular expressions over the normalised text (lower case, one space between words,
# stretched letters collapsed to one: "hello" is matched as "helo", so write phrases collapsed too;
# _collapse() is applied to the patterns below so they can be written naturally).
_PHRASES: dict[str, tuple[str, ...]] = {
    GREETING: (
        r"(hi|hello|hey|heya|hiya|howdy|hallo|hola|bonjour|ciao|salut|yo|sup|greetings|helo|hai|hei|oi)",
        r"good (morning|afternoon|evening|day)", r"(gm|morning|evening|afternoon)",
        r"what'?s up", r"wh?at'?s ?up", r"wass?up", r"g'?day",
        r"(is )?(any ?one|any ?body|some ?one|some ?body) (there|here|home|around|online)",
        r"(any ?one|any ?body)( (there|here|home|around|online|awake))?",
        r"(buenos dias|buenas tardes|buenas noches|buenas|bonsoir|coucou|guten (morgen|tag|abend)|moin|servus|"
        r"buongiorno|buonasera|ola|bom dia|boa tarde|boa noite)",
        r"(hoi|goedemorgen|goedemiddag|goedenavond|goeiedag|dag allemaal)",
        r"(i )?hope (you'?re|you are|ur|u r|you( are|'?re)? all|all is|everything is|your day is|you'?re having|you are having)"
        r"( (having|doing|going))?( a)? (well|good|great|ok|okay|fine|nice|lovely|wonderful)( (day|one|morning|afternoon|"
        r"evening|week|weekend))?( so far)?",
    ),
    THANKS: (
        r"(thanks|thank you|thank u|thankyou|thanx|thnx|thx|tx|ty|tysm|tyvm|cheers|merci|gracias|danke|ta)",
        r"(thnaks|thnks|tahnks|thaks|thanls|thankz|thanq|tnx|tq|thank yuo|thank yu|thnak you|thnk you|thnku)",
        r"(thx|thnx|thanx|ty) (a lot|a bunch|a million|so much|very much|again)",
        r"(many|big|huge) thanks",
        r"(merci( beaucoup| bien| mille fois)?|mille merci|(muchas )?gracias|(vielen )?dank( dir| ihnen)?|danke( schon| sehr)?|"
        r"grazie( mille)?|(muito )?obrigad[oa])", r"(much|greatly|really) appreciated", r"(i )?(really )?appreciate (it|that|this|your help)",
        r"thanks? (a lot|a bunch|a million|so much|very much|for (the|your) (help|answer|reply|info|information))",
        r"that('?s| is| was) (very |really |super )?(helpful|useful|great|perfect)",
        r"(that|this|it|you) (really )?(helped|helps|worked|works|did it|did the trick|solved it|fixed it)",
        r"(that|this|it|you) (totally |really |finally )?(sorted|fixed|solved|answered) (it|that|this|my problem|the problem|"
        r"my issue|the issue)( out)?",
        r"(that|this|it)('?s| is| has| was)( (all|now|been|all been))? (sorted|fixed|solved)( (it|that|this|me))?( out)?( now)?",
        r"(all )?sorted( out)?( now)?",
        r"(dank (je|u)( wel)?|dankjewel|dankuwel|bedankt|heel erg bedankt)", r"danke( dir| ihnen| vielmals| schon| sehr)",
        r"obrigad(a|o|ao|inho|inha)",
        r"thank (you|u) (very much|so much|kindly|anyway|again)",
        r"thanks? (heaps|loads|tons|anyway|again|in advance|a ton)",
        r"((many |big |huge )?thanks?|thank (you|u)|thx|thnx|thnks|ty)( (so|very) much)? for (the|your|ur|all the|all your|"
        r"all of your|this|that)( (quick|fast|prompt|great|kind|detailed|clear|speedy))? (help|answer|answers|reply|info|"
        r"information|time|assistance|support|response|patience|explanation)( with (me|this|that|it))?",
        r"(much|greatly|very) obliged", r"you (rock|rule)",
        r"(you'?re|you are|ur|u r) (the best|a star|a lifesaver|a life saver|awesome|amazing|great|brilliant|a legend)",
        r"(that|this|it) (answers|answered) (my|the) question", r"(you'?re|you are|your) welcome", r"my pleasure",
    ),
    GOODBYE: (
        r"(bye|goodbye|good bye|byebye|bye bye|cya|ciao|later|laters|farewell|adios)",
        r"see (you|ya|u)( later| soon| around| tomorrow| next time| next week)?", r"take care",
        r"(talk|speak) (to you )?(later|soon|tomorrow)", r"ttyl",
        r"(i )?(gotta|got to|have to|need to|must|'?ve got to|ve got to) go( now)?", r"(gtg|g2g)", r"i'?m off( now)?",
        r"have a (nice|good|great|lovely) (day|one|evening|weekend|night)", r"good ?night", r"gn", r"nite|night",
        r"catch (you|ya|u) later", r"bye for now", r"all the best", r"take it easy",
        r"(no,? |nope,? )?(that'?s|that is) (all|it|everything)( for (now|today))?( i (needed|wanted))?",
        r"nothing else", r"(no|nope),? (thanks|thank you|thank u|that'?s it)",
        r"(i'?ll|i will|let'?s|we can|i'?m going to|gonna) (leave|stop|end) (it|this|things) (there|here|at that)( for now| for today)?",
        r"(tot ziens|doei|tot (straks|later|morgen)|fijne dag( nog)?)",
        r"(i'?m|im|i am|we'?re|we are) (done|finished|all set|good|sorted)( here| now| for now| for today)?",
        r"(forget|never ?mind) (it|about it)", r"don'?t worry( about it)?",
        r"(au revoir|a bientot|salut|adios|hasta (luego|pronto|manana)|chao|tschus|tschau|auf wiedersehen|bis (bald|dann|spater)|"
        r"arrivederci|a presto|tchau|ate (logo|mais))",
    ),
    BOT: (
        r"(are|r) (you|u) (a |an )?(real |actual |live )?(bot|robot|human being|human|person|ai assistant|ai|machine|"
        r"chatbot|computer|real person|program|virtual assistant|assistant|chatgpt|gpt|llm)",
        r"(you'?re|you are|ur|u r) (a |an )?(bot|robot|ai|machine|chatbot|computer|program)",
        r"(bot|robot|human|ai|real person)",
        r"is (there|this) (a |an )?(real |actual |live )?(person|human being|human)( there| here| on the other (end|side)|"
        r" behind (this|the screen|it))?",
        r"(are|r) (you|u) (even |actually |really |a )?real",
        r"is this (an )?(automated|automatic|a bot|a robot|ai)( (chat|reply|replies|response|responses|message|"
        r"messages))?( or (a )?(live|real|human)( chat| person| agent| human)?)?",
        r"(is|are) (this|these|the (reply|replies|answer|answers)) (automated|automatic)( (chat|reply|replies|response|"
        r"responses|message|messages))?( or (a )?(live|real|human)( chat| person| agent| human)?)?",
        r"(c'?est|es tu|t'?es|tu es|etes vous|vous etes) (un |une )?(bot|robot|humain|ia|vraie personne|personne reelle)"
        r"( ou (un |une )?(bot|robot|humain|ia|vraie personne|personne|personne reelle))?",
        r"(ben (je|jij)|bent u) (een )?(bot|robot|mens|echt persoon)",
        r"(is|am) (this|i) (talking|speaking|chatting) (to|with) (a |an )?(real )?(bot|robot|human|person|ai|machine)",
        r"is this (a |an )?(real )?(bot|robot|human|person|ai|chatbot|automated)",
        r"(who|what) (are|r) (you|u)", r"what'?s your name", r"(are|r) (you|u) real",
        r"(who|which company|what company) (made|built|created|developed|programmed|trained|designed|wrote|runs) "
        r"(you|u|this (bot|chatbot|chat|assistant))",
        r"(what|which) (model|ai|llm|language model) (are|r) (you|u)( running on| built on| based on| using)?",
        r"(who|what) (am i|are we) (talking|speaking|chatting) (to|with)",
        r"what (can|do) (you|u) (do|know|answer)", r"how (can|do|could) (you|u) help( me| us)?",
        r"(can|could) (you|u) help( me| us)?", r"help( me| us)?( please| pls| plz)?", r"i need (some )?help",
        r"or (a |an )?(real |live |actual )?(bot|robot|human|person|ai|machine|agent|live chat|chat|automated)",
        r"(who|what) (is|are|r) (this|you|u)( exactly| actually| then)?",
        r"(eres|es|sos) (un |una )?(bot|robot|humano|persona|maquina)", r"(es tu|t'?es|tu es|etes vous) (un )?(bot|robot|humain)",
        r"bist du (ein )?(bot|roboter|mensch)", r"sei (un )?(bot|robot|umano)", r"(voce )?e (um )?(bot|robo|humano)",
        r"(i )?(have|got) (a|one|some|a few|a couple of|few|two|2) (quick )?(question|questions|queries|query)",
        r"(can|could|may) i ask( you)?( (a|one|some) (quick )?(question|thing))?( something)?",
        r"(can|could) (you|u) (help|assist)( me| us)?( with something| out)?",
        r"(can|could|will|would) (you|u|some ?one|some ?body|any ?one|any ?body) (please )?(help|assist)( me| us)?( out)?",
        r"(a |one |just a |just one )?(quick|small|short|simple|little) (question|q|query)",
        r"(necesito|necesitamos) ayuda", r"j'?ai besoin d'?aide", r"ich brauche hilfe", r"preciso de ajuda",
        r"ho bisogno di aiuto",
        r"(i )?need (some |a little |your |a bit of )?(help|assistance|support)", r"(what|how) (can|could) (you|u) help( me| us)? with",
        r"(i was|i'?m|im|i am|was) (just )?wondering if (you|u|some ?one|any ?one) (could|can|would|might) (help|assist)( me| us)?"
        r"( with (something|sth|a thing|a question|smth))?( out)?",
        r"(is )?(any ?one|any ?body|some ?one|some ?body) (able|available|free|around|here) to (help|assist|talk)( me| us)?( out)?",
        r"(ik heb (een vraag|een paar vragen|hulp nodig|een probleem)|(kun|kan) (je|jij|u) (me )?helpen|hulp)",
        r"(ayuda|aide|hilfe|aiuto|ajuda)( (por favor|s'?il vous plait|bitte|per favore))?",
    ),
    WELLBEING: (
        r"how (are|r) (you|u)( doing)?( today)?", r"how'?s it going", r"how (is|are) (it|things) going",
        r"how do you do", r"(are|r) (you|u) (ok|okay|well|good)", r"how'?s (your|ur) day( going)?",
        r"how (are|r|is) (things|it|everything|life|the day)( going)?( on (your|ur) (end|side)| with (you|u))?",
        r"(hoe gaat het( met (je|jou|u))?|alles goed)", r"how (you|u|ya) (doing|doin|going)", r"how (r|are) (ya|you|u) (doing|doin)",
        r"(ca va|comment ca va|como (estas|esta|vai)|que tal|wie geht'?s( (es|dir|ihnen))?|come (stai|va))",
        r"(tudo bem|tudo bom|todo bien|come va|wie gehts)", r"(wyd|wbu|hbu|what are (you|u) (doing|up to))",
        r"(are |r )?(you|u) (doing )?(ok|okay|alright|all right|well|good)",
        r"how'?s (your|ur) (day|morning|evening|week|weekend)( going| been)?",
        r"how (was|has been|is) (your|ur) (day|morning|evening|week|weekend)( going| been)?",
    ),
    ACK: (
        r"(ok|okay|k|kk|okie|okey|alright|all right|cool|great|nice|awesome|perfect|super|fine|good|got it|gotcha|"
        r"understood|sounds good|i see|noted|excellent|wonderful|amazing|brilliant|lovely|sure|yes|yep|yeah|no|nope|"
        r"lol|haha|hahaha|hehe|wow|oh|ah|hmm|np|no problem|no worries|all good|will do|done)",
        # Phrases of several words apart: in one alternation the first word alone ("no") would match first.
        r"(no problem|no prob|no worries|all good|will do|got it|sounds good|all right|never ?mind|nvm|my bad|"
        r"sorry|oops|whoops)",
        r"(that |it )?makes sense", r"(i'?ll|i will|let me|i'?m going to|gonna|i can) (try|check|test|do) (that|it|this)( out)?",
        r"(i )?(figured|sorted|worked) it out", r"(i )?(found|got) it( now)?", r"wrong (window|chat|tab|person|conversation)",
        r"(d'?accord|vale|bueno|va bien|alles klar|genau|ok ok|va bene|certo|beleza|claro|entendido|compris)",
        r"(okie dokie|okey dokey|ok dokey|righto|roger( that)?|copy that|sure thing|fair enough|you bet|of course|"
        r"absolutely|for sure|cool beans|no biggie)",
        r"((hold|hang) on|wait|one|just a|give me a|gimme a)( a| one)? (sec|second|moment|minute|min|mo)", r"(brb|be right back)",
        r"(test|testing)( testing)?( 1 2 3| 123)?",
        r"(wait|hold on|hang on|one sec|one moment|un (momento|attimo|moment|instant|segundo|secondo)|einen moment|"
        r"moment( bitte)?|momentje|even wachten)",
        r"(i'?m |im |i am )?(just )?(browsing|looking around|having a look( around)?|checking (this|it|things) out|curious)",
        r"(i )?(sent|hit enter|pressed enter|sent (that|it|this)|pressed send)( too (early|soon|fast)| by (mistake|accident))",
        r"(oke|prima|helder|duidelijk|klopt|top|goed zo|is goed|komt goed)",
    ),
    PRAISE: (
        r"(great|good|nice|awesome|excellent|amazing|fantastic|brilliant) (job|work|answer|one|stuff|bot)", r"well done",
        r"(you'?re|you are|ur|u r|that was|that'?s|that is|this is|so|(you|u) guys (are|r)|you all are|y'?all are|"
        r"(this|the) (bot|chat|app|service|assistant|chatbot) (is|was))( so| really| pretty| very| super| actually| truly| incredibly|"
        r" extremely| quite)*? "
        r"(smart|clever|helpful|fast|quick|useful|impressive|good|great|awesome|amazing|the best)",
        r"(just|exactly|precisely) what i (needed|wanted|was looking for)", r"i love (it|this|you)", r"love (it|this)",
        r"(great|good|excellent|amazing|awesome|fast|quick|brilliant|fantastic|super) (service|support|help|response|reply)",
        r"(best|greatest) (customer )?(service|support|bot|chatbot|assistant|app|help)( experience)?( ever| (i'?ve|i have) "
        r"(ever )?(had|seen|used))?",
        r"(service |support |dienst )?(au top|top|genial|parfait|excelente|excellent|ottimo|otimo|perfecto|perfetto|perfeito|"
        r"geweldig|super hulp)",
        r"(i )?love (this app|the app|this bot|you guys|u guys|it|this|you)", r"(you|u) guys (rock|rule)",
        r"(echt|sehr|wirklich) hilfreich", r"(muy|super) util", r"(tres|vraiment|super) utile", r"(molto|davvero) utile",
        r"(muito|super) util",
    ),
    COMPLAINT: (
        r"(you'?re|you are|ur|u r|this|this is|that'?s|that is|that was|it'?s|(this|the) (bot|chat|assistant|chatbot) (is|was)|"
        r"(you|u) guys (are|r))( so| really| pretty| very| totally| completely| absolutely| just)*? "
        r"(useless|dumb|stupid|bad|terrible|awful|horrible|rubbish|garbage|trash|annoying|frustrating|pointless|unhelpful|"
        r"not helpful|no help|a joke|a waste of time|ridiculous|hopeless|slow|confusing|broken|a mess|a nightmare)",
        r"(you'?re|you are|ur|u r|this is|that'?s|it'?s|you|u) (not|n'?t) (very |really |that |so |too )?(helpful|useful|smart|"
        r"clever|good|bright)( at all)?",
        r"(this is |we'?re |i'?m |it'?s |you'?re )?going (round |around )?in circles",
        r"(so |really |very |super )?(frustrating|annoying|confusing)",
        r"(not|wasn'?t|isn'?t|was not|is not) (very |really |that |so )?(helpful|useful)( at all)?",
        r"(worst|terrible|awful|horrible|useless|bad) (customer )?(support|service|bot|chatbot|help|experience|assistant)( ever)?",
        r"(ugh|smh|argh|meh|ffs|wtf|omg|seriously)", r"(you|this|it|that) (sucks?|stinks?)",
        r"(that|this) (didn'?t|did not|doesn'?t|does not) help( at all)?", r"(useless|pointless|hopeless)",
        r"(you'?re|you are|ur|u r|you|u|this is|it'?s|this|it) (not|n'?t) (helping|helpful|working)( (at all|me))?",
        r"(servizio|servicio|service|servico|dienst|support) (pessimo|terrible|horrible|nul|malo|schlecht|miserable)",
        r"(muy |tres )?(mal|mauvais) (servicio|service)",
    ),
}
# Words that add nothing when they come with small talk: "hi there", "thanks so much guys", "ok then".
_FILLER = (r"(there|all|everyone|everybody|team|guys|folks|friend|friends|mate|buddy|dear|again|so|much|very|"
           r"really|then|and|too|you|u|for|the|help|a|lot|bot|support|sir|madam|oh|well|just|again|once|more|"
           r"one|it|that|indeed|man|pal|bro|people|y'?all|to you|for that|right|partner|chatbot|assistant|now|"
           r"anyway|everything|today|exactly|actually|zusammen|a todos|tout le monde|a tutti|pls|plz|please|though|lol|tbh|"
           r"honestly|ngl|here|svp|stp|bitte|por favor|per favore|huh|eh|even|wel|alsjeblieft|aub)")
# Which kind answers when a message mixes kinds: "hi, are you a bot?" is about the bot.
_PRIORITY = (BOT, WELLBEING, COMPLAINT, THANKS, PRAISE, GOODBYE, GREETING, ACK)

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
    kind: str                     # greeting | thanks | goodbye | bot | wellbeing | ack | praise | complaint | emoji
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


# After a greeting, who is greeting: one word that ends the message ("hi im maria").
_INTRODUCTION = re.compile(r"(?:my name is|my name'?s|i'?m|im|i am|this is|it'?s) [a-z]+$")

# Kinds after which a capitalised word is the name of whom it is said to ("Hi Anna", "Thanks Trailbot").
_ADDRESSED = (GREETING, THANKS, GOODBYE, PRAISE)


def _names(message: str) -> set[str]:
    """Normalised words written with a capital inside the message (not its first word; not when
    everything is in capitals): names a greeting or thanks may be addressed to."""
    words = message.split()
    if message.isupper():
        return set()
    return {normalise(w) for w in words[1:] if w[:1].isupper()}


@functools.lru_cache(maxsize=256)
def classify(message: str, max_chars: int = 120) -> SmallTalk | None:
    """The small talk a message is, or None when it says or asks anything else. Kept for the last few
    messages: the search service asks twice per Plan (whether to retrieve, then in its decision), at
    ~0.1 ms a question."""
    if len(message) > max_chars:
        return None           # nobody greets in a paragraph; a long message carries a question
    if _only_emoji(message):
        return SmallTalk(EMOJI, (EMOJI,))
    text = normalise(_strip_emoji(message))
    if not text:
        return None
    names = _names(message)
    kinds: list[str] = []
    pos = 0
    while pos < len(text):
        # The longest phrase at this point ("thank you very much for your help", not "thank you").
        found = max(((kind, m.end()) for kind, unit in _UNITS if (m := unit.match(text, pos)) and m.end() > pos),
                    key=lambda x: x[1], default=None)
        if found:
            kinds.append(found[0])
            pos = found[1]
            continue
        m = _FILLER_UNIT.match(text, pos)
        if m and m.end() > pos:
            pos = m.end()
            continue
        if kinds and kinds[-1] == GREETING and _INTRODUCTION.match(text, pos):   # "hi, I'm Maria"
            break
        word = text[pos:].split(" ", 1)[0]
        if kinds and kinds[-1] in _ADDRESSED and word in names:   # "Hi Anna", "thanks Trailbot!"
            pos = min(len(text), pos + len(word) + 1)
            continue
        return None
    if not kinds:
        return None
    kind = next(k for k in _PRIORITY if k in kinds)
    return SmallTalk(kind, tuple(kinds))
