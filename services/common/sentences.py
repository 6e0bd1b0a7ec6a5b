"""What an extractive answer may quote from a passage: sentences and table rows, never headings,
menus, breadcrumbs, link lists or page furniture ("Related articles", "Was this article helpful?").

Crawled pages reach the knowledge as lines: a section heading first, then paragraphs, list items
and table cells one per line (services/scraper/extract.py). A long line or one that ends a sentence
is prose and is split into sentences; short lines are fragments: a label followed by its value (a
table row such as "Weight" / "34.5 kg") becomes one unit "Weight: 34.5 kg"; a fragment that stays
alone (a heading, a menu entry) is never quoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
# Full stops that end an abbreviation, not a sentence: "incl. VAT", "e.g. Klarna", "Dr. Okafor" never
# end one; "max. 22 kg", "No. 5", "approx. 10 minutes" do not before a figure (but "No. Each card ..."
# does). Words such as "Ltd." or "etc." often end a sentence too, and split as any other word.
_ABBREVIATIONS = frozenset("e.g i.e incl excl approx vs mr mrs ms dr cf viz resp".split())
_BEFORE_A_FIGURE = frozenset("no nr max min approx ca fig vol p pp ch sec ref tel ext art".split())
_LAST_WORD = re.compile(r"[^\s(\[\"']+$")
_ENDS_SENTENCE = re.compile(r"[.!?:;]\)?[\"']?$")
_DIGIT = re.compile(r"\d")
_WORDS = re.compile(r"[^\W_]+(?:['’.-][^\W_]+)*")
_BREADCRUMB = re.compile(r"(\s[>›»/|]\s.*){2,}|^\s*(home|help( centre| center)?)\s*[>›»/]", re.I)
_CRUMB_SEPARATOR = re.compile(r"\s*[>›»/|]\s*")
MAX_CRUMB_WORDS = 5        # a breadcrumb's parts are page names; a sentence naming a menu path is prose
_FURNITURE = re.compile(
    r"^\s*(related( articles| topics| pages)?|more (articles|help)|was this (article|page|answer)"
    r" (helpful|useful)|did this (help|answer)|still need help|need more help|skip to|on this page|"
    r"table of contents|last (updated|reviewed|modified)|updated on|published|posted (in|on|by)|written by|"
    r"yes\s*/?\s*no|thanks for your feedback|cookie|copyright|©|all rights reserved|tags?:|categories:|you are here)\b",
    re.I,
)
# Furniture too, but also how a sentence of content may start ("Next-day orders placed on a Friday ...",
# "Print the return label, or ..."): furniture only in a line this short that ends no sentence ("Next
# article", "Print this page", "Back to top"), never before a hyphen ("Next-day delivery costs £4.99").
_SHORT_FURNITURE = re.compile(
    r"^\s*(see also|read (more|next)|(back|return) to|in this (article|section)|share (this|on)|print( this)?|"
    r"previous( article)?|next( article)?)(?![\w-])",
    re.I,
)
MAX_SHORT_FURNITURE_WORDS = 8
_FULL_STOP = re.compile(r"[.!?][\"')]?$")       # a line that ends a sentence
_ROW = re.compile(r"^([^:]{1,60}):\s+(\S.*)$")     # "Weight: 34.5 kg": a table row read as one line
_LINK_LIST_HEAD = re.compile(r"^\s*(related( articles| topics| pages)?|see also|read (more|next)|more (articles|help)|"
                             r"in this (article|section)|on this page|table of contents)\b", re.I)
MIN_PROSE_WORDS = 8        # a line this long (or ending a sentence) is prose
MIN_SENTENCE_WORDS = 4     # shorter "sentences" are fragments ("Step 2.", "Yes.")
MAX_FRAGMENT_WORDS = 14    # a label/value pair longer than this is not a table row


@dataclass(frozen=True)
class Unit:
    """A quotable piece of one passage."""

    text: str                 # as quoted in the answer
    position: int             # reading order within the passage
    goes_on: str = ""         # a lead's list ("... three options:" then its items), quoted after it
    lead: str = ""            # the lead an item was joined to ("Confirm your identity:" of "... identity: tap ...")
    in_list: int = -1         # the position of the lead whose list (goes_on) quotes this item too


def _words(text: str) -> list[str]:
    return _WORDS.findall(text)


def is_furniture(line: str) -> bool:
    """Navigation and page furniture: breadcrumbs, "Related articles", feedback prompts, dates."""
    if _FURNITURE.match(line) or (_SHORT_FURNITURE.match(line) and len(_words(line)) <= MAX_SHORT_FURNITURE_WORDS
                                  and not _FULL_STOP.search(line)):
        return True
    if not _BREADCRUMB.search(line) or _FULL_STOP.search(line):
        return False
    # "Home > Help > Billing" is a breadcrumb; "Download it from Settings > Account > Export." is not.
    return all(len(_words(part)) <= MAX_CRUMB_WORDS for part in _CRUMB_SEPARATOR.split(line))


MAX_HEADING_WORDS = 14     # a passage's first line up to this long, not ending like a sentence, is its heading


def _is_heading_line(line: str) -> bool:
    """A passage's first line that reads as its section heading ("Shot runs too slow or drips (over 40
    seconds)"): not a sentence, a table row or furniture, and short."""
    return (len(_words(line)) <= MAX_HEADING_WORDS and not _ENDS_SENTENCE.search(line) and not _is_row(line)
            and not is_furniture(line))


def _is_prose(line: str) -> bool:
    return len(_words(line)) >= MIN_PROSE_WORDS or bool(_ENDS_SENTENCE.search(line))


def _looks_like_link_list(label: str, value: str) -> bool:
    """Two menu entries in a row ("Batteries" / "Battery care"): short, capitalised, no figures."""
    both = (label, value)
    return all(not _DIGIT.search(s) and len(_words(s)) <= 4 and s[:1].isupper() and "," not in s for s in both)


def _pairs(label: str, value: str) -> bool:
    """A table row: a short label and its value. A label with a figure before a value without one
    is a row cut in two by chunking ("68 cm" / "Max. rider weight"): no pair."""
    if len(_words(label)) + len(_words(value)) > MAX_FRAGMENT_WORDS or _looks_like_link_list(label, value):
        return False
    return not (_DIGIT.search(label) and not _DIGIT.search(value))


def _is_row(line: str) -> bool:
    """A label and its value on one line (a table row as the scraper writes it): quotable when the
    value carries a figure, a list or a few words; "Trailhead Ridge: specifications" is a heading."""
    match = _ROW.match(line)
    if not match or len(_words(line)) > MAX_FRAGMENT_WORDS:
        return False
    value = match.group(2)
    return bool(_DIGIT.search(value)) or "," in value or len(_words(value)) >= 3


_DEFINITION = re.compile(r"^[^—–:]{1,40}\s[—–]\s\S")   # "Weekly — every Monday.": a list's term and its meaning


def _sentences(line: str) -> list[str]:
    """A line's sentences; shorter ones are fragments, except a whole line that names a term and what it
    means ("Weekly — every Monday."), which reads like a table row."""
    if len(_words(line)) < MIN_SENTENCE_WORDS and _DEFINITION.match(line) and _SENTENCE_END.search(line) is None:
        return [line.strip()]
    return [s.strip() for s in split_sentences(line) if len(_words(s)) >= MIN_SENTENCE_WORDS]


_GOES_ON = re.compile(r"\s*(?:[,;]|,?\s+(?:and|or))$")    # a list item's end that the next item goes on from


def _bare(item: str) -> str:
    """A list item without what ends it: "Request a replacement, or" / "... card; and" / "... today." ->
    "Request a replacement" / "... card" / "... today"."""
    return re.sub(r"(?:[\s,;.!]|\s(?:and|or)$)+$", "", item.strip())


def _ended(item: str) -> str:
    """A list item that goes on a sentence, as the end of it: "record a selfie video, and" -> "record a
    selfie video."."""
    item = _GOES_ON.sub("", item.strip())
    return item if item.endswith((".", "!", "?")) else f"{item}."


def split_sentences(text: str) -> list[str]:
    """`text` cut where a sentence ends: after . ! or ? and a space, before a capital or a figure, but not
    after an abbreviation ("The rack takes a third child (max. 22 kg).", "Prices are incl. VAT.")."""
    parts: list[str] = []
    start = 0
    for end in _SENTENCE_END.finditer(text):
        word = _LAST_WORD.search(text, max(start, end.start() - 12), end.start())
        abbreviation = word.group().lower().rstrip(".") if word else ""
        if abbreviation in _ABBREVIATIONS or (abbreviation in _BEFORE_A_FIGURE and text[end.end()].isdigit()):
            continue
        parts.append(text[start:end.start()])
        start = end.end()
    parts.append(text[start:])
    return parts


MAX_LABEL_WORDS = 5        # "Undertow – dark roast: A blend ... Recommended: 90 °C.": a term and its definition
_NOT_LABELS = {"note", "tip", "tips", "warning", "important", "caution", "example", "hint", "info", "update"}


def _labelled(line: str, sentences: list[str]) -> list[str]:
    """The sentences of a line that defines a term ("Undertow – dark roast: A blend of .... Recommended:
    90 °C."), each after the first with the term, which it is about: "Undertow – dark roast: Recommended:
    90 °C." A callout's label ("Note:") is no term."""
    match = _ROW.match(line)
    if len(sentences) < 2 or not match:
        return sentences
    label = match.group(1).strip()
    if len(_words(label)) > MAX_LABEL_WORDS or label.lower() in _NOT_LABELS or not sentences[0].startswith(label):
        return sentences
    return [sentences[0]] + [f"{label}: {s}" for s in sentences[1:]]


MAX_LIST_ITEMS = 6         # a lead's list quoted with it: at most this many items ...
MAX_LIST_WORDS = 90        # ... of at most this many words in all


def _is_item(line: str) -> bool:
    """A line that can be an entry of a list after a lead: one sentence, or a table row of one (not a
    question, which no answer quotes)."""
    if is_furniture(line) or line.endswith((":", "?")):
        return False
    return (_is_row(line) or _is_prose(line)) and len(split_sentences(line)) == 1


def units(text: str, heading: str = "", *, lists: bool = False) -> list[Unit]:
    """The quotable units of a passage's text, in reading order. `heading`: a first line equal to it
    (the passage's title or FAQ question) is not quoted. `lists`: a sentence that ends with ":" and
    leads a list of whole sentences or rows ("You can choose one of three options:") carries that
    list in `goes_on` when it is short (MAX_LIST_ITEMS, MAX_LIST_WORDS), and is no unit when it is
    longer: quoted alone, it promises what it does not say. Its items stay units of their own."""
    lines = [" ".join(line.split()) for line in text.split("\n")]
    lines = [line for line in lines if line]
    if lines and heading and lines[0].lower() == " ".join(heading.split()).lower():
        lines = lines[1:]
    section = ""              # the last heading seen
    if len(lines) > 1 and _is_heading_line(lines[0]) and not _pairs(lines[0], lines[1]):
        section = lines[0]    # the section heading a crawled passage starts with, however long
        lines = lines[1:]
    found: list[str] = []
    pending = ""              # a fragment waiting for its value
    pending_item = False      # ... that follows an item of a list written without full stops
    item = False              # the line before was such an item
    in_links = False          # after "Related articles" and the like: its entries are links, not content
    lead = ""                 # a sentence ending with ":" that the list items after it go on ("Confirm your identity:")
    lead_at = -1              # where it was quoted on its own, if it was
    listing = -1              # (lists) the lead whose items are being read, by its index in found
    items: list[str] = []
    goes_on: dict[int, str | None] = {}     # (lists) a lead's list; None: the lead is no unit
    led_by: dict[int, str] = {}             # an item joined to its lead: that lead
    in_list: dict[int, int] = {}            # (lists) an item quoted in its lead's list: the lead

    def close_list() -> None:
        nonlocal listing
        if listing >= 0 and items:
            short = len(items) <= MAX_LIST_ITEMS and sum(len(_words(i)) for i in items) <= MAX_LIST_WORDS
            # One sentence, as the lead reads on: "... three options: Next-day redelivery ...; Full refund ...."
            goes_on[listing] = "; ".join(_bare(i) for i in items) + "." if short else None
            if short:
                in_list.update((at, listing) for at in range(listing + 1, len(found)))
        listing = -1
        items.clear()

    def flush(next_is_item: bool) -> None:
        # A short item with a figure between items of a list ("Bluetooth 5.0" under "Requirements") is
        # content: quoted with its heading. A heading (followed by sentences) is never quoted.
        nonlocal section
        if pending and pending_item and next_is_item and section and _DIGIT.search(pending):
            found.append(f"{section.rstrip(':')}: {pending}")
        elif pending:
            section = pending

    for line in lines:
        if listing >= 0:
            # A list's items are alike: rows after a row, sentences after a sentence ("... 50%" then "To
            # claim a credit, contact support ..." ends a list of rows).
            if _is_item(line) and not (lead and line[:1].islower()) and (
                    not items or bool(_ROW.match(line)) == bool(_ROW.match(items[0]))):
                items.append(line)
            else:
                close_list()
        if lead and line[:1].islower() and not is_furniture(line) and not _is_row(line):
            # "tap the link in the email (valid for 30 minutes), and" is quoted as "Confirm your identity:
            # tap the link in the email (valid for 30 minutes).", and the unfinished lead not alone.
            if lead_at >= 0 and found[lead_at] == lead:
                del found[lead_at]
            lead_at = -1
            first, *rest = split_sentences(line)
            led_by[len(found)] = lead
            found.append(f"{lead} {_ended(first)}")
            found.extend(s.strip() for s in rest if len(_words(s)) >= MIN_SENTENCE_WORDS)
            pending, item = "", not _ENDS_SENTENCE.search(line)
            continue
        lead, lead_at = "", -1
        if is_furniture(line):
            pending, in_links, item = "", bool(_LINK_LIST_HEAD.match(line)), False
            continue
        if _is_row(line) and not in_links:
            flush(True)
            pending, item = "", False
            found.append(line)
        elif _is_prose(line):
            item = not _ENDS_SENTENCE.search(line)
            flush(item)
            pending, in_links = "", False
            sentences = _labelled(line, _sentences(line))
            lead, lead_at = (split_sentences(line)[-1].strip(), len(found) + len(sentences) - 1) \
                if line.endswith(":") else ("", -1)
            found.extend(sentences)
            if lists and lead_at >= 0 and found[lead_at] == lead:
                listing = lead_at
        elif in_links:
            continue
        elif pending and _pairs(pending, line):
            found.append(f"{pending.rstrip(':')}: {line}")
            pending, item = "", False
        else:
            flush(False)
            pending, pending_item, item = line, item, False
    close_list()
    flush(True)
    return [Unit(t, i, goes_on.get(i) or "", led_by.get(i, ""), in_list.get(i, -1)) for i, t in enumerate(found)
            if not (i in goes_on and goes_on[i] is None)]


# --- what a passage's sentence vectors read (dense retrieval, services/search/vector_index.py) ---------

# The version of what `embedding_sentences` reads: part of the embedding model id (services/common/
# embedding.py), so that a change re-embeds the stored chunks (the indexer at start; an unchanged page
# of a crawl would otherwise keep its vectors for good). Raise it when the rules above read a text
# otherwise; tests/common/test_sentences.py holds a digest of what they read of the evaluation pages
# and fails until it is raised. 2: the navigation words that also start sentences ("Next-day ...").
RULES = 2
MAX_SENTENCE_VECTORS = 24          # per passage: a long table or list keeps its first rows' vectors only
# The site's name after the page's ("Charging | Acme Help Centre"); after a dash only when it names a
# help site ("Charging – Acme Help Center", as Zendesk themes write it), since a dash also joins a
# title's own parts ("Wi-Fi 6 – what it means").
_TITLE_SITE = re.compile(
    r"\s+(?:[|·]\s+[^|·]{1,60}|[-–—]\s+[^|·–—]{0,40}\b(?:help|support|docs|documentation|knowledge\s*base|faq|"
    r"community|guides?|centre|center)\b[^|·–—]{0,20})$", re.IGNORECASE)


def page_title(title: str) -> str:
    """A page title without the site name that help sites append ("Charging | Acme Help Centre",
    "Charging – Acme Support")."""
    return _TITLE_SITE.sub("", " ".join(title.split())) or title


def section_heading(text: str) -> str:
    """The heading a passage starts with (crawled passages start with their section's heading), or ''."""
    first = next((" ".join(line.split()) for line in text.split("\n") if line.strip()), "")
    if not first or "\n" not in text.strip() or _is_prose(first) or _is_row(first) or is_furniture(first):
        return ""
    return first


def embedding_sentences(title: str, text: str, limit: int = MAX_SENTENCE_VECTORS) -> list[str]:
    """The passage's quotable units (sentences, table rows), each with where it stands ("Page title >
    Section heading: sentence"): embedded one by one beside the whole passage, so a question that one
    sentence answers finds the passage even when the rest of it is about other things."""
    heading = section_heading(text)
    where = " > ".join(part for part in (page_title(title), heading) if part)
    return [f"{where}: {u.text}" if where else u.text for u in units(text, heading)][:limit]


def _loose(text: str) -> re.Pattern:
    """`text` with any run of whitespace where it has one (units are built from whitespace-collapsed lines)."""
    return re.compile(r"\s+".join(re.escape(word) for word in text.split()))


def _located(unit: str, passage: str, start: int) -> list[tuple[int, int]] | None:
    """The character ranges of `passage` a unit was made of, searched from `start`: a sentence of a line
    or a whole line, in one range; a unit joined from two lines ("Weight" / "34.5 kg" read as "Weight:
    34.5 kg", a list item with its heading), in two: the value first, then the last occurrence of the
    label before it."""
    found = _loose(unit).search(passage, start) or _loose(unit.removesuffix(".")).search(passage, start)
    if found:
        return [found.span()]
    for joint in (m.start() for m in re.finditer(": ", unit)):
        label, value = unit[:joint], unit[joint + 2:]
        if not label.strip() or not value.strip():
            continue
        right = _loose(value).search(passage, start) or _loose(value.removesuffix(".")).search(passage, start)
        if right is None:
            continue
        lefts = [m.span() for m in _loose(label).finditer(passage, 0, right.start())]
        if lefts:
            return [lefts[-1], right.span()]
    return None


def sentence_spans(passage: str, text: str, limit: int = MAX_SENTENCE_VECTORS) -> list[list[tuple[int, int]] | None]:
    """Where each of `embedding_sentences`' units stands in `passage` (the text that is encoded: `text`
    after the title line), as character ranges, in the same order; None for a unit not found (then it
    is encoded on its own). A sentence vector is pooled over these ranges' word pieces in the passage's
    own encoding: the sentence read in its context, not re-encoded with the title and heading
    prefixed (on the dev split of the help-site evaluation: page hit@3 0.867 → 0.892, at less than half
    the word pieces; bench/passage_vectors.py)."""
    heading = section_heading(text)
    at = max(0, passage.find(text))     # the title line comes first
    out: list[list[tuple[int, int]] | None] = []
    for unit in units(text, heading)[:limit]:
        ranges = _located(unit.text, passage, at)
        out.append(ranges)
        if ranges:
            at = ranges[-1][0] + 1      # the next unit starts after this one's (last) range starts
    return out
