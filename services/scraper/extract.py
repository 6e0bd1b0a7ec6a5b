"""Main content of a page without boilerplate: title, canonical URL, robots directives, sections, links."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser

from services.common.chunking import chunk_text, content_hash
from services.scraper.urls import normalize_url
from services.scraper.furniture import content_root, is_page_meta, next_element, remove_furniture
from services.scraper.rendered import (NOSCRIPT_FALLBACK_CHARS, NOSCRIPT_MIN_CHARS, attach_shadow_roots, has_noscript,
                                       read_noscript, structured_faq)
from services.scraper.scopes import SCOPE_TAB, SCOPE_TITLE, mark_scopes, within
from services.scraper.tables import (BOLD_LINE, BOLD_STYLE, PARAGRAPH_BREAK, UNMARKED, drop_menu_cells,
                                     is_layout_table, is_table, label_icon_cells, table_lines)

_BLOCKS = {"h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "blockquote", "dt", "dd", "td", "th", "figcaption",
           "summary"}
_HEADINGS = {"h1", "h2", "h3", "h4", "summary"}
# Elements that hold blocks; text written straight into one (a theme's <div class="note">Tip: ...</div>,
# an accordion's answer) is a paragraph of its own.
_CONTAINERS = {"div", "section", "article", "main", "aside", "details", "figure", "center", "body"}
# Characters that show nothing (zero-width spaces and joiners, word joiner, byte-order mark, soft
# hyphen): a theme's "&#8203;" placeholder is no heading, and a word broken by one reads whole.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad" + "".join(BOLD_LINE)))
_SHOWS_ALONE = {"img", "picture", "video", "iframe", "object", "embed", "canvas"}   # content without text
_STRUCTURE = _BLOCKS | _CONTAINERS | {"table", "ul", "ol", "dl", "tr", "hr"}
# A class that makes a short block a heading: <div class="section-title">Fees</div>.
_HEADING_NAME = re.compile(r"(^|[-_ ])(title|heading|subheading|subtitle|question)($|[-_ ])", re.IGNORECASE)
_INLINE_EMPHASIS = {"strong", "b"}
# A callout's label alone ("TIP", "Note:", VitePress' custom-block title, Microsoft Learn's alerts): it
# heads nothing and says nothing. An <h2>Important</h2> is a heading all the same.
_LABELS = frozenset("note tip tips info warning caution danger important hint attention notice".split()) | {
    "contents", "table of contents", "on this page", "in this article"}   # a table of contents' label
_LEVEL = {f"h{n}": n for n in range(1, 7)}     # a heading element's rank
MINOR_HEADING = 7        # the rank of a heading by style (a bold paragraph, a title class, a <summary>)
# An element of another name than a block or container (a <span>, a custom element such as
# <lightning-formatted-rich-text>, a <form> around the page) is text that runs on in its block, unless
# it holds blocks: then it is read as a container. These never hold any.
_LEAVES = {"-text", "-comment", "img", "input", "select", "textarea", "br", "wbr", "source", "canvas", "video",
           "audio", "picture", "embed", "math"}
_BLOCK_SELECTOR = ", ".join(sorted(_BLOCKS | _CONTAINERS - {"body"} | {"table", "ul", "ol", "dl"}))
MAX_HEADING_CHARS = 80
# <br> inside a block: "Opening hours:<br>Mon-Fri 9-18<br>Sat 10-14" reads "Opening hours: Mon-Fri 9-18,
# Sat 10-14" (a list's lines, not one run-on sentence). Elsewhere (table cells, terms) it is a space.
_LINE_BREAK = "\u2028"
_LINES = re.compile(r"(\S?)\s*\u2028[\s\u2028]*")


def _line_join(match: re.Match) -> str:
    before = match.group(1)
    return f"{before} " if not before or before in ":;,.!?-–—" else f"{before}, "


@dataclass
class Section:
    heading: str
    paragraphs: list[str] = field(default_factory=list)


@dataclass
class Page:
    title: str = ""
    canonical: str = ""
    noindex: bool = False
    nofollow: bool = False
    sections: list[Section] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        parts: list[str] = []
        for s in self.sections:
            if s.heading:
                parts.append(s.heading)
            parts.extend(s.paragraphs)
        return "\n\n".join(parts)

    def content_hash(self) -> bytes:
        return content_hash(self.title, self.text)


def robots_directives(value: str) -> tuple[bool, bool]:
    """(noindex, nofollow) of a robots meta tag or X-Robots-Tag header value."""
    tokens = {t.strip().lower() for t in value.replace(";", ",").split(",")}
    none = "none" in tokens
    return none or "noindex" in tokens, none or "nofollow" in tokens


def extract_html(html: str, url: str) -> Page:
    """The page as a reader sees it. One whose content a script renders, given only in <noscript> for
    readers without JavaScript (an app shell with a pre-rendered article), is read with that content;
    otherwise <noscript> is a page's furniture ("Enable JavaScript", a tracking pixel) and dropped."""
    page = _extract(html, url, noscript=False)
    if len(page.text) < NOSCRIPT_FALLBACK_CHARS and has_noscript(html):
        scriptless = _extract(html, url, noscript=True)
        if len(scriptless.text) >= len(page.text) + NOSCRIPT_MIN_CHARS:
            return scriptless
    return page


def _head(tree, url: str) -> Page:
    """The page's title, robots directives and canonical URL."""
    page = Page()
    node = tree.css_first("title")
    page.title = " ".join(node.text().split()) if node else ""
    for meta in tree.css("meta[name]"):
        name = (meta.attributes.get("name") or "").lower()
        if name in ("robots", "parleybot"):
            noindex, nofollow = robots_directives(meta.attributes.get("content") or "")
            page.noindex |= noindex
            page.nofollow |= nofollow
    link = tree.css_first("link[rel=canonical]")
    if link is not None and link.attributes.get("href"):
        page.canonical = normalize_url(link.attributes["href"] or "", url)
    return page


def _links(tree, body, url: str) -> list[str]:
    """The page's links to follow (absolute, each once, none marked nofollow)."""
    base = tree.css_first("base[href]")
    base_url = normalize_url(base.attributes.get("href") or "", url) if base is not None else url
    links: dict[str, None] = {}
    for a in body.css("a[href]"):
        if "nofollow" not in (a.attributes.get("rel") or "").lower():
            target = normalize_url(a.attributes.get("href") or "", base_url or url)
            if target:
                links[target] = None
    return list(links)


# React's streamed server rendering (Next.js App Router, Suspense): the page arrives with a fallback
# (a skeleton) after <template id="B:0">, and the content later in <div hidden id="S:0">, which a script
# $RC("B:0","S:0") puts in the fallback's place. Read as the browser shows it.
_REACT_REVEAL = re.compile(r"\$RC\(\s*\"(B:[\w:-]+)\"\s*,\s*\"(S:[\w:-]+)\"\s*\)")


def reveal_streamed(body) -> None:
    calls = [m.groups() for script in body.css("script") if "$RC(" in (script.text() or "")
             for m in _REACT_REVEAL.finditer(script.text() or "")]
    for boundary, segment in calls[:1000]:
        template = body.css_first(f'template[id="{boundary}"]')
        content = body.css_first(f'[id="{segment}"]')
        if template is None or content is None:
            continue
        fallback, node = [], template.next
        while node is not None and not (node.tag == "-comment" and node.html == "<!--/$-->"):
            fallback.append(node)
            node = node.next
        for part in fallback if node is not None else ():   # up to the boundary's end, if it has one
            part.decompose()
        if "hidden" in content.attrs:
            del content.attrs["hidden"]
        template.insert_before(content)     # a copy
        content.decompose()
        template.decompose()


def _extract(html: str, url: str, *, noscript: bool) -> Page:
    tree = LexborHTMLParser(html)
    page = _head(tree, url)
    body = tree.body
    if body is None:
        return page
    if not page.nofollow:
        page.links = _links(tree, body, url)
    faq = structured_faq(tree)           # before the furniture goes, with the <script>s
    attach_shadow_roots(body)
    reveal_streamed(body)                  # before the <script>s go
    if noscript:
        read_noscript(body)
    mark_scopes(body, MAX_HEADING_CHARS)   # before the furniture goes: a tab list may be a <nav> or hold <button>s
    label_icon_cells(body)                 # before the icons and screen-reader text go with the furniture
    remove_furniture(body)
    drop_menu_cells(body)
    mark_lines_of_emphasis(body)           # before the <br>s become line breaks
    for br in body.css("br"):
        br.replace_with(_LINE_BREAK)
    root = content_root(body)
    page.sections = _sections(root)
    _head_with_title(page, root, body)
    if faq:
        # An FAQ the page states as structured data (schema.org FAQPage, for search engines) whose
        # questions its HTML does not show (rendered by a script): each question a section.
        shown = _plain(page.text)
        page.sections += [Section(q, [a]) for q, a in faq if _plain(q) not in shown]
    if not page.title:
        h1 = root.css_first("h1")
        page.title = h1.text(separator=" ", strip=True) if h1 else ""
    return page


def _head_with_title(page: Page, root, body) -> None:
    """The article's title, when the theme writes it above the content container (Drupal's page-title
    block, a docs theme's page header, Freshdesk's h2 beside the help centre's name in an h1), heads the
    text before the content's first heading: the page's only h1, or else an h2 outside the container,
    that the page's <title> starts with (a help centre's name in a banner's h1 is no article's title)."""
    if root is body or root.css_first("h1") is not None:
        return
    h1s = body.css("h1")
    candidates = h1s if len(h1s) == 1 else []
    if page.title:
        candidates = [*candidates, *(h2 for h2 in body.css("h2") if not within(h2, root))]
    # The <title>'s first part, before the site's name ("Why was I charged twice? : Brightwave Support"):
    # a heading that starts with it and goes on with a control's label ("… Print") is that title.
    first = _TITLE_PARTS.split(page.title, maxsplit=1)[0].strip() if page.title else ""
    for node in candidates:
        text = " ".join(node.text(separator=" ").split())
        if text and len(text) <= MAX_HEADING_CHARS and (
                not page.title or page.title.casefold().startswith(text.casefold())):
            title = text
            break
        if len(first) >= MIN_TITLE_CHARS and text.casefold().startswith(first.casefold()):
            title = first
            break
    else:
        return
    if page.sections and not page.sections[0].heading:
        page.sections[0].heading = title
    else:
        page.sections.insert(0, Section(title))


_TITLE_PARTS = re.compile(r"\s+[|:\u2013\u2014\u00b7-]\s+")
MIN_TITLE_CHARS = 8


# Typographic quotes read as plain ones: the JSON-LD's "I'm" and the page's "I’m" are the same words.
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u201c": '"', "\u201d": '"', "\u201f": '"'})


def _plain(text: str) -> str:
    return " ".join(text.split()).casefold().translate(_QUOTES)


def _shows_nothing(node) -> bool:
    """Blank text, or an element that shows no words or figures: a heading's permalink beside it
    ("#", "¶", an icon; Starlight wraps each heading with one in a <div>), an empty <span>."""
    if node.tag == "-text":
        return not (node.text(deep=False) or "").strip()
    return node.tag not in _SHOWS_ALONE and not any(ch.isalnum() for ch in node.text(separator=""))


def _is_heading(node, text: str, bold_line: bool = False) -> bool:
    """A heading element, or a short block a theme styles as one: a paragraph that is all bold
    (<p><strong>Fees</strong></p>), an element whose class says title or heading, or one whose ARIA role
    says heading (<div role="heading" aria-level="2">); or a `bold_line` of a block paragraphed with <br>s."""
    if node.tag in _HEADINGS:
        return True
    if len(text) > MAX_HEADING_CHARS or text.endswith((".", ":", ";", ",")) or _FIGURE_FIRST.match(text):
        return False     # a price or a figure in bold ("£35 per bike") is what its card says, not a title
    if bold_line or _styled_heading(node):
        return True
    if node.tag in ("p", "div"):
        # ... or that holds one thing only, in bold or styled as a heading (SharePoint's collapsible
        # section title: <span role="heading"> in the <div> that opens it)
        children = [c for c in node.iter(include_text=True) if c.tag != "-text" or (c.text(deep=False) or "").strip()]
        return len(children) == 1 and (children[0].tag in _INLINE_EMPHASIS or _styled_heading(children[0]))
    return False


_FIGURE_FIRST = re.compile(r"[\d£$€¥₹+\u2212-]")


def _styled_heading(node) -> bool:
    attrs = node.attributes
    return bool(_HEADING_NAME.search(attrs.get("class") or "")) or attrs.get("role") == "heading" or bool(
        BOLD_STYLE.search(attrs.get("style") or ""))   # <div style="font-size:18px;font-weight:700">


_HEADING_SELECTOR = "h1, h2, h3, h4, h5, h6"


def _definitions(dl) -> list[str]:
    """A definition list as lines that read on their own: "Water tank: 1.8 litres" (its terms and
    definitions in document order, also where <div>s group them)."""
    lines, term = [], ""
    for child in dl.css("dt, dd"):
        text = " ".join(child.text(separator=" ").translate(UNMARKED).split())
        if child.tag == "dt":
            term = text
        elif text:
            lines.append(f"{term.rstrip(':')}: {text}" if term else text)
    return lines


def _block_index(root) -> tuple[set[int], dict[int, object]]:
    """The mem_ids of the elements under `root` that hold a block or container, and for those that hold a
    block, the first one in document order: the elements in order, each marking the ancestors no
    earlier one marked (linear in the page, however deep an element nests)."""
    held: set[int] = set()
    first: dict[int, object] = {}
    for element in root.css(_BLOCK_SELECTOR):
        is_block = element.tag in _BLOCKS
        parent = element.parent
        while parent is not None and (parent.mem_id not in held or (is_block and parent.mem_id not in first)):
            held.add(parent.mem_id)
            if is_block:
                first.setdefault(parent.mem_id, element)
            parent = parent.parent
    return held, first


_PARAGRAPH_GAP = re.compile("\u2028\\s*\u2028[\\s\u2028]*")
_INLINE_AROUND = {"font", "span", "u", "i", "em", "a", "big", "small", "b", "strong"}


def mark_lines_of_emphasis(body) -> None:
    """Marks (BOLD_LINE) each line in bold of a block paragraphed with <br><br>, as older sites write
    an article ("<b>Refund times</b><br>Refunds reach your card…"): the bold text alone between two
    line breaks (or the block's edges), in <font>s or <span>s of its own or not."""
    paragraphed: dict[int, bool] = {}     # block -> whether it is paragraphed with <br><br>
    for bold in body.css("b, strong"):
        if bold.parent is not None and bold.parent.tag in ("b", "strong"):
            continue   # the bold around it is marked
        unit = bold
        while unit.parent is not None and unit.parent.tag in _INLINE_AROUND and _only_content(unit.parent, unit):
            unit = unit.parent
        block = unit.parent
        if block is None or block.tag in _LEVEL or not (_at_break(unit, "prev") and _at_break(unit, "next")):
            continue
        if not any(ch.isalnum() for ch in bold.text()):
            continue
        if block.mem_id not in paragraphed:     # its HTML once, not once per line in bold
            paragraphed[block.mem_id] = PARAGRAPH_BREAK.search(block.html or "") is not None
        if not paragraphed[block.mem_id]:
            continue
        bold.insert_before(BOLD_LINE[0])
        bold.insert_after(BOLD_LINE[1])


def _only_content(parent, child) -> bool:
    return all(c.mem_id == child.mem_id or (c.tag == "-text" and not (c.text(deep=False) or "").strip())
               for c in parent.iter(include_text=True))


def _at_break(node, side: str) -> bool:
    """Whether a line break (or the edge of the element it is in) is next to `node` on `side`."""
    sibling = getattr(node, side)
    while sibling is not None and (sibling.tag == "-comment" or (
            sibling.tag == "-text" and not (sibling.text(deep=False) or "").strip())):
        sibling = getattr(sibling, side)
    return sibling is None or sibling.tag == "br"


def _br_paragraphs(text: str) -> list[tuple[str, bool]]:
    """A <br>-paragraphed block's text as (paragraph, is a bold line): its paragraphs, each bold line
    of its own ("Refund times") apart from the lines after it."""
    pieces: list[tuple[str, bool]] = []
    for paragraph in _PARAGRAPH_GAP.split(text):
        rest = paragraph.strip().strip(_LINE_BREAK).strip()
        while rest.startswith(BOLD_LINE[0]):
            end = rest.find(BOLD_LINE[1])
            after = rest[end + 1:].lstrip(" \t\n\r") if end > 0 else ""
            if end < 0 or (after and not after.startswith(_LINE_BREAK)):
                break     # bold at the start of a line that goes on ("<b>Note</b> that…")
            pieces.append((rest[1:end], True))
            rest = after.strip().strip(_LINE_BREAK).strip()
        if rest:
            pieces.append((rest.translate(UNMARKED), False))
    return pieces


@dataclass
class _Open:
    """A container being read: its children, the next one's index, the text run since its last block."""

    node: object
    children: list
    next: int = 0
    run: list[str] = field(default_factory=list)
    resume: str | None = None     # the heading whose section goes on after this scope (a tab, a callout)


class _Reader:
    """The sections of a page's content, read in document order."""

    def __init__(self, root) -> None:
        self.sections = [Section("")]
        self._holding, self._first = _block_index(root)
        self.resumed: set[int] = set()    # ids of the sections that go on after a scope (dropped if empty)
        self._levels: dict[int, int] = {}  # id of a section -> its heading's rank (h2: 2)
        self._level_of: dict[str, int] = {}  # a heading's text -> its rank where it last stood
        self._dropped: list[Section] = []

    def add(self, node, text: str, alone: bool) -> None:
        """A block's text; `alone`: the node holds nothing else (so it may be a heading). A block
        paragraphed with <br><br> is read as its paragraphs, a line of its own in bold heading those after it."""
        if node.tag != "pre" and (BOLD_LINE[0] in text or _PARAGRAPH_GAP.search(text)):
            for piece, bold_line in _br_paragraphs(text):
                self._add(node, piece, alone and not bold_line, bold_line)
            return
        self._add(node, text, alone)

    def _add(self, node, text: str, alone: bool, bold_line: bool = False) -> None:
        text = text.translate(_INVISIBLE)
        if node.tag == "pre":
            text = " ".join(text.replace(_LINE_BREAK, " ").split())   # code: no comma between its lines
        else:
            text = " ".join(_LINES.sub(_line_join, text.strip().strip(_LINE_BREAK)).split())
        if not any(ch.isalnum() for ch in text):
            return     # a callout's icon alone ("💡"), a toggle's arrow ("‣"): no words, no figures
        if is_page_meta(text) or (node.tag not in _LEVEL and text.lower().strip(" :!") in _LABELS):
            return
        if (alone or bold_line) and _is_heading(node, text, bold_line):
            self.sections.append(Section(text))
            self._levels[id(self.sections[-1])] = self._level_of[text] = _LEVEL.get(node.tag, MINOR_HEADING)
        else:
            self.sections[-1].paragraphs.append(text)

    def read(self, root) -> None:
        """A block or container: its own text between its children (text written straight into a
        theme's <div class="note"> or an accordion's answer is a paragraph too), its children in order.
        With a stack of the containers open, not recursion: a page may nest thousands of elements."""
        opened: list[_Open] = []
        self._enter(root, opened)
        while opened:
            top = opened[-1]
            if top.next == len(top.children):
                self.add(top.node, "".join(top.run), False)
                opened.pop()
                if top.resume is not None:
                    self._scope(top.resume, top.resume)
                continue
            child = top.children[top.next]
            top.next += 1
            tag = child.tag
            if tag == "-text":
                top.run.append(child.text(deep=False) or "")
            elif not self._is_structure(child):
                if tag not in ("-comment", "img", "input", "select", "textarea"):
                    top.run.append(child.text(separator=""))
            else:
                self.add(top.node, "".join(top.run), False)
                top.run.clear()
                if is_table(child) and not is_layout_table(child):
                    self.sections[-1].paragraphs.extend(table_lines(child))
                elif tag == "dl":
                    self.sections[-1].paragraphs.extend(_definitions(child))
                elif tag != "hr":
                    self._enter(child, opened)

    def _enter(self, node, opened: list[_Open]) -> None:
        """A block without blocks inside is read at once (and may be a heading); else it is opened. A
        tab's panel or a titled callout is a section of its own ("Turn on guest Wi-Fi (Android)"), after
        which the section it is in goes on."""
        resume = None
        attrs = node.attributes
        if SCOPE_TAB in attrs or SCOPE_TITLE in attrs:
            resume = self.sections[-1].heading
            tab = attrs.get(SCOPE_TAB)
            heading = (f"{resume} ({tab})" if resume else tab) if tab is not None else attrs.get(SCOPE_TITLE)
            self._scope(heading or "", resume)
        elif node.tag == "details":
            resume = self.sections[-1].heading   # after the answer, the text goes on under the heading before
        elif node.tag in _CONTAINERS and self._opens_subsection(node):
            # A card or a step written as a box with its own heading (<div class="card"><h3>Solo</h3>…):
            # the text after the box goes on under the heading it is in, not the last box's.
            resume = self.sections[-1].heading
        children = list(node.iter(include_text=True))
        if node.tag in _HEADINGS - {"summary"}:
            children = []   # a heading is read whole, even with its text in <div>s (GitBook)
        if any(self._is_structure(c) for c in children) or (node.tag == "details" and children):
            opened.append(_Open(node, children, resume=resume))
            return
        self.add(node, node.text(separator=""), resume is None)
        if resume is not None:
            self._scope(resume, resume)

    def _opens_subsection(self, node) -> bool:
        """Whether the container's first block is a heading of a lower rank than the section it is in,
        followed by more in the container (a heading wrapped alone in a <div>, as Intercom writes every
        heading, is no box of its own)."""
        level = self._levels.get(id(self.sections[-1]), 0)
        if not level:
            return False
        first = self._first.get(node.mem_id)
        if first is None or first.tag not in _LEVEL or _LEVEL[first.tag] <= level:
            return False
        while first is not None and first.mem_id != node.mem_id:
            sibling = first.next
            while sibling is not None and (sibling.tag == "-comment" or _shows_nothing(sibling)):
                sibling = sibling.next
            if sibling is not None:
                return not self._heading_goes_on(node)
            first = first.parent
        return False

    def _heading_goes_on(self, node) -> bool:
        """Whether a box that opens with a heading is one module of a page builder's column rather than a
        card: the next box after it (after its ancestors, when it is their last) holds no heading of its
        own first (Divi: a text module with "Delivery rates", then the rates table's module), and no box
        before it opens with a heading (a row of cards)."""
        if len(node.css(_HEADING_SELECTOR)) > 1:
            return False     # a box of several headed parts (an accordion, a list of cards)
        after = node
        while after is not None and after.tag != "body" and next_element(after) is None:
            after = after.parent
        after = next_element(after) if after is not None and after.tag != "body" else None
        if after is None or after.tag not in _CONTAINERS or self._titled(after):
            return False
        before = node.prev
        while before is not None and before.tag in ("-text", "-comment"):
            before = before.prev
        return not (before is not None and before.tag in _CONTAINERS and self._titled(before))

    def _titled(self, box) -> bool:
        first = self._first.get(box.mem_id)
        return first is not None and first.tag in _LEVEL

    def _is_structure(self, node) -> bool:
        """A block or container, or an element of another name that holds blocks (a <form> around the
        page, a custom element): not text that runs on in the block it is in."""
        tag = node.tag
        return tag in _STRUCTURE or (tag not in _LEAVES and node.mem_id in self._holding)

    def _scope(self, heading: str, resume: str) -> None:
        """A section for a scope or for the text after it; the section it replaces is dropped if it is
        still empty and only the one the scope went on from (between two tabs: nothing to keep)."""
        last = self.sections[-1]
        if not last.paragraphs and last.heading == resume and len(self.sections) > 1:
            # Kept alive: the sections are known by id() in `resumed` and `_levels`, and a new section
            # must not take the id of a dropped one.
            self._dropped.append(self.sections.pop())
        self.sections.append(Section(heading))
        if heading in self._level_of:
            self._levels[id(self.sections[-1])] = self._level_of[heading]
        if heading == resume:
            self.resumed.add(id(self.sections[-1]))


def _sections(root) -> list[Section]:
    reader = _Reader(root)
    reader.read(root)
    return [s for s in reader.sections if s.paragraphs or (s.heading and id(s) not in reader.resumed)]


def extract_text(text: str, url: str) -> Page:
    """A text/plain page: paragraphs separated by blank lines; the first line is the title."""
    paragraphs = [" ".join(p.split()) for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    title = paragraphs[0][:200] if paragraphs else url
    return Page(title=title, sections=[Section("", paragraphs)] if paragraphs else [])


def chunk_page(page: Page, *, max_chars: int = 1200, target_chars: int = 600) -> list[str]:
    """Chunks along sections (a heading starts a new chunk) and paragraphs, each at most about max_chars;
    each chunk carries its section heading so it reads on its own. Paragraphs (and tiny sections) are
    packed until a chunk reaches target_chars: a section's table or list stays in one passage rather than
    three of a few rows each, which neither retrieval nor the answer could read whole."""
    chunks: list[str] = []
    pending = ""
    for section in page.sections:
        body = "\n\n".join(section.paragraphs)
        if not body:
            continue
        budget = max_chars - len(section.heading) - 1 if section.heading else max_chars
        for piece in chunk_text(body, max_chars=max(200, budget), min_chars=target_chars):
            chunk = f"{section.heading}\n{piece}" if section.heading else piece
            # A tiny section joins the previous chunk rather than stand alone.
            if pending and len(pending) + 1 + len(chunk) <= max_chars and len(pending) < min(200, target_chars):
                pending = f"{pending}\n{chunk}"
            else:
                if pending:
                    chunks.append(pending)
                pending = chunk
    if pending:
        chunks.append(pending)
    return chunks
