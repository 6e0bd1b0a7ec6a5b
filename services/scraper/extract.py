"""Main content of a page without boilerplate: title, canonical URL, robots directives, sections, links."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser

from services.common.chunking import chunk_text, content_hash
from services.scraper.fetching import normalize_url
from services.scraper.scopes import SCOPE_TAB, SCOPE_TITLE, SPACE_BEFORE_MARK, mark_scopes
from services.scraper.tables import table_lines

# Elements that are never content.
_DROP = "script, style, noscript, template, svg, iframe, button, nav, footer, " \
        "[role=navigation], [role=banner], [role=contentinfo], [role=dialog], [aria-hidden=true], " \
        ".cookie-banner, .sidebar"
# Never content either, unless they hold the page's content: a <header> inside the article (its h1
# and summary, as Zendesk, Docusaurus and GitBook themes write it) is the article's; a <form> around
# the whole page (ASP.NET WebForms, SharePoint, DNN) holds it all. A site's header or a search form
# holds neither.
_DROP_UNLESS_CONTENT = "header, form"
# The content container of common help-centre and CMS themes, best first (the page's body otherwise).
_MAIN = ("main", "article", "[role=main]", "#content", ".content", ".article-body", ".article-content",
         ".entry-content", ".post-content", ".markdown-body", "#main", ".main-content")
MAIN_SHARE = 0.7     # of several candidates for the content container, one holding this share of their text is it
_BLOCKS = {"h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "blockquote", "dt", "dd", "td", "th", "figcaption",
           "summary"}
_HEADINGS = {"h1", "h2", "h3", "h4", "summary"}
# Elements that hold blocks; text written straight into one (a theme's <div class="note">Tip: ...</div>,
# an accordion's answer) is a paragraph of its own.
_CONTAINERS = {"div", "section", "article", "main", "aside", "details", "figure", "center", "body"}
_STRUCTURE = _BLOCKS | _CONTAINERS | {"table", "ul", "ol", "dl", "tr", "hr"}
# Page furniture by its class or id, as themes name it (the idea of Mozilla Readability's "unlikely
# candidates"): cookie and consent banners, sidebars, breadcrumbs, feedback widgets, share bars,
# related-article lists, pagination.
_FURNITURE_NAME = re.compile(
    r"(?:^|[-_ ])(?:cookie|consent|gdpr|sidebar|side-?nav|breadcrumb|feedback|helpful|newsletter|subscribe|"
    r"related|see-also|recommended|pagination|skip-link|toolbar|topbar|navbar|masthead|site-header|"
    r"site-footer|social|disqus|advert|sponsor|table-of-contents|"
    r"(?:banner|menu|vote|votes|rating|share|sharing|toc|promo|pager|modal|popup|comments?)(?:$|[-_ ]))",
    re.IGNORECASE)
# What holds the page's content is never furniture, whatever its class ("layout has-sidebar"; Prism's
# <div class="code-toolbar"> around a code block).
_HOLDS_CONTENT = "main, article, [role=main], h1, .article-body, pre"
# The elements a theme's furniture is made of (a heading's id is an anchor of its topic: never furniture).
_FURNITURE_TAGS = ", ".join(f"{tag}[class], {tag}[id]" for tag in ("div", "section", "aside", "ul", "ol", "p", "span"))
# An aside that is a callout of the text (a tip, a warning) is content; other asides are sidebars.
_CALLOUT_NAME = re.compile(r"note|tip|warning|caution|callout|alert|info|important|notice|hint", re.IGNORECASE)
# A class that makes a short block a heading: <div class="section-title">Fees</div>.
_HEADING_NAME = re.compile(r"(^|[-_ ])(title|heading|subheading|subtitle|question)($|[-_ ])", re.IGNORECASE)
_INLINE_EMPHASIS = {"strong", "b"}
# An element of another name than a block or container (a <span>, a custom element such as
# <lightning-formatted-rich-text>, a <form> around the page) is text that runs on in its block, unless
# it holds blocks: then it is read as a container. These never hold any.
_LEAVES = {"-text", "-comment", "img", "input", "select", "textarea", "br", "wbr", "source", "canvas", "video",
           "audio", "picture", "embed", "math"}
_BLOCK_SELECTOR = ", ".join(sorted(_BLOCKS | _CONTAINERS - {"body"} | {"table", "ul", "ol", "dl"}))
# A theme's widgets that say things about the page, not about the product: votes on it, its author and
# date. Short blocks only.
_PAGE_META = re.compile(
    r"(?:was this (?:article|page|answer|information|content|section)? ?(?:helpful|useful)"
    r"|did this (?:article )?(?:answer|solve) your (?:question|problem)"
    r"|\d+ (?:out )?of \d+ (?:people |users )?found this (?:article )?helpful"
    r"|(?:last )?(?:updated|modified|edited) (?:over |about |almost |less than )?(?:an?|\d+) (?:minute|hour|day|week|month|year)s? ago"
    r"|written by \S.{0,60}?(?:updated|$)"
    r"|(?:last )?(?:updated|modified|published)(?: on)?:? (?:\d{1,2} [a-z]+ \d{4}|[a-z]+ \d{1,2},? \d{4}"
    r"|\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4})(?: by (?-i:[A-Z][\w'.-]*(?: [A-Z][\w'.-]*){0,3}))?$"
    # the site's copyright line ("Copyright © 2024 ..."); a pager's "Previous <page> Next <page>"
    r"|(?:copyright|\u00a9|\(c\))\s*(?:\u00a9\s*)?(?:19|20)\d\d\b"
    r"|(?-i:Previous|PREVIOUS|\u2190)[^.!?;:,]{0,80}(?-i:Next|NEXT|\u2192)[^.!?;:,]{0,80}$"
    r")", re.IGNORECASE)
MAX_PAGE_META_CHARS = 120
# Declarative shadow DOM: a custom element's content, rendered by the browser without a script.
_SHADOW_ROOT = "template[shadowrootmode], template[shadowroot]"
_TEMPLATE_START = re.compile(r'\A<template(?:[^">]|"[^"]*")*>')
MAX_SHADOW_DEPTH = 8
# A page that shows less text than this without a script is read with its <noscript> content too,
# when that adds at least NOSCRIPT_MIN_CHARS (an article, not "Please turn on scripts to vote").
NOSCRIPT_FALLBACK_CHARS = 200
NOSCRIPT_MIN_CHARS = 100
_NOSCRIPT = re.compile(r"<noscript", re.IGNORECASE)
_SCRIPT_NOTICE = re.compile(r"\bjavascript\b", re.IGNORECASE)
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
    if len(page.text) < NOSCRIPT_FALLBACK_CHARS and _NOSCRIPT.search(html):
        scriptless = _extract(html, url, noscript=True)
        if len(scriptless.text) >= len(page.text) + NOSCRIPT_MIN_CHARS:
            return scriptless
    return page


def _extract(html: str, url: str, *, noscript: bool) -> Page:
    tree = LexborHTMLParser(html)
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
    base = tree.css_first("base[href]")
    base_url = normalize_url(base.attributes.get("href") or "", url) if base is not None else url
    body = tree.body
    if body is None:
        return page
    if not page.nofollow:
        seen = set()
        for a in body.css("a[href]"):
            rel = (a.attributes.get("rel") or "").lower()
            if "nofollow" in rel:
                continue
            target = normalize_url(a.attributes.get("href") or "", base_url or url)
            if target and target not in seen:
                seen.add(target)
                page.links.append(target)
    faq = _structured_faq(tree)           # before _DROP, which removes the <script>s
    _attach_shadow_roots(body)
    if noscript:
        for node in body.css("noscript"):
            text = node.text()
            if len(text) < NOSCRIPT_FALLBACK_CHARS and _SCRIPT_NOTICE.search(text):
                node.decompose()      # "Live chat needs JavaScript": about the page, not the product
            else:
                node.unwrap()
    mark_scopes(body, MAX_HEADING_CHARS)   # before _DROP: a tab list may be a <nav> or hold <button>s
    for junk in body.css(_DROP):
        junk.decompose()
    for node in list(body.css(_DROP_UNLESS_CONTENT)):
        if node.css_first(_HOLDS_CONTENT) is None and not any(
                p.tag in ("main", "article") or p.attributes.get("role") == "main" for p in _ancestors(node, body)):
            node.decompose()
    _drop_furniture(body)
    for br in body.css("br"):
        br.replace_with(_LINE_BREAK)
    root = _content_root(body)
    page.sections = _sections(root)
    if faq:
        # An FAQ the page states as structured data (schema.org FAQPage, for search engines) whose
        # questions its HTML does not show (rendered by a script): each question a section.
        shown = " ".join(page.text.split()).casefold()
        page.sections += [Section(q, [a]) for q, a in faq if " ".join(q.split()).casefold() not in shown]
    if not page.title:
        h1 = root.css_first("h1")
        page.title = h1.text(separator=" ", strip=True) if h1 else ""
    return page


def _attach_shadow_roots(body) -> None:
    """Declarative shadow DOM (<template shadowrootmode="open">) is rendered where it stands: its
    content takes the template's place. Other templates are inert markup for scripts (dropped)."""
    for _ in range(MAX_SHADOW_DEPTH):        # a shadow root's content may hold shadow roots of its own
        templates = body.css(_SHADOW_ROOT)
        if not templates:
            return
        for template in templates:
            start = _TEMPLATE_START.match(template.html or "")
            inner = (template.html or "")[start.end():].removesuffix("</template>") if start else ""
            fragment = LexborHTMLParser(f"<body>{inner}</body>").body
            for child in list(fragment.iter(include_text=True)) if fragment is not None else []:
                template.insert_before(child)
            template.decompose()


def _structured_faq(tree) -> list[tuple[str, str]]:
    """(question, answer) of the page's schema.org FAQPage in JSON-LD, answers' markup removed."""
    found: list[tuple[str, str]] = []
    for script in tree.css('script[type="application/ld+json"]'):
        try:
            data = json.loads(script.text(deep=True) or "null")
        except ValueError:
            continue
        stack = [data]
        while stack and len(found) < 200:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(reversed(item))
            elif isinstance(item, dict):
                kind = item.get("@type")
                if kind == "Question" or (isinstance(kind, list) and "Question" in kind):
                    answer = item.get("acceptedAnswer")
                    answer = answer[0] if isinstance(answer, list) and answer else answer
                    text = answer.get("text") if isinstance(answer, dict) else None
                    if isinstance(item.get("name"), str) and isinstance(text, str):
                        question = " ".join(item["name"].split())
                        text = SPACE_BEFORE_MARK.sub("", " ".join(
                            LexborHTMLParser(f"<p>{text}</p>").body.text(separator=" ").split()))
                        if question and text:
                            found.append((question, text))
                else:
                    stack.extend(v for k, v in item.items() if k in ("@graph", "mainEntity", "hasPart"))
    return found


def _content_root(body):
    """The page's content container: the first of _MAIN's selectors that names one element, or of
    several one that holds most of their text; else the body. A listing page's <article> cards, or
    several <div class="content"> boxes, are not the page's content one by one."""
    for selector in _MAIN:
        found = body.css(selector)
        ids = {n.mem_id for n in found}
        nodes = [n for n in found if not any(p.mem_id in ids for p in _ancestors(n, body))]   # outermost only
        if len(nodes) == 1:
            return nodes[0]
        if nodes:
            sizes = [len(n.text(separator=" ")) for n in nodes]
            if max(sizes) >= MAIN_SHARE * sum(sizes):
                return nodes[sizes.index(max(sizes))]
            # The page's article among "More in this category" cards: the one that holds its h1.
            titled = [n for n in nodes if n.css_first("h1") is not None]
            if len(titled) == 1 and len(body.css("h1")) == 1:
                return titled[0]
    return body


def _ancestors(node, body) -> list:
    found, parent = [], node.parent
    while parent is not None and parent is not body:
        found.append(parent)
        parent = parent.parent
    return found


_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def _names(node) -> str:
    """Its class and id, camelCase words apart ("menuPane": "menu-Pane", as DNN and Salesforce name them)."""
    attrs = node.attributes
    return _CAMEL.sub("-", f"{attrs.get('class') or ''} {attrs.get('id') or ''}")


def _drop_furniture(body) -> None:
    """Removes the theme's furniture, recognised by its class or id (_FURNITURE_NAME) unless it holds
    the content, and asides that are no callout of the text."""
    for node in list(body.css(_FURNITURE_TAGS)):
        # A section's id is often an anchor of its topic (<section id="pagination"> of an API guide).
        names = _CAMEL.sub("-", node.attributes.get("class") or "") if node.tag == "section" else _names(node)
        if _FURNITURE_NAME.search(names) and node.css_first(_HOLDS_CONTENT) is None:
            node.decompose()
    for node in list(body.css("aside")):
        if not _CALLOUT_NAME.search(f"{_names(node)} {node.attributes.get('role') or ''}"):
            node.decompose()


def _is_heading(node, text: str) -> bool:
    """A heading element, or a short block a theme styles as one: a paragraph that is all bold
    (<p><strong>Fees</strong></p>), an element whose class says title or heading, or one whose ARIA role
    says heading (<div role="heading" aria-level="2">)."""
    if node.tag in _HEADINGS:
        return True
    if len(text) > MAX_HEADING_CHARS or text.endswith((".", ":", ";", ",")):
        return False
    if _HEADING_NAME.search(node.attributes.get("class") or "") or node.attributes.get("role") == "heading":
        return True
    if node.tag in ("p", "div"):
        children = [c for c in node.iter(include_text=True) if c.tag != "-text" or (c.text(deep=False) or "").strip()]
        return len(children) == 1 and children[0].tag in _INLINE_EMPHASIS
    return False


def _definitions(dl) -> list[str]:
    """A definition list as lines that read on their own: "Water tank: 1.8 litres" (its terms and
    definitions in document order, also where <div>s group them)."""
    lines, term = [], ""
    for child in dl.css("dt, dd"):
        text = " ".join(child.text(separator=" ").split())
        if child.tag == "dt":
            term = text
        elif text:
            lines.append(f"{term.rstrip(':')}: {text}" if term else text)
    return lines


def _holding_blocks(root) -> set[int]:
    """The mem_ids of the elements under `root` that hold a block: each block's ancestors, each marked
    once (linear in the page, however deep an element nests)."""
    held: set[int] = set()
    for block in root.css(_BLOCK_SELECTOR):
        parent = block.parent
        while parent is not None and parent.mem_id not in held:
            held.add(parent.mem_id)
            parent = parent.parent
    return held


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
        self._holding = _holding_blocks(root)
        self.resumed: set[int] = set()    # ids of the sections that go on after a scope (dropped if empty)

    def add(self, node, text: str, alone: bool) -> None:
        """A block's text; `alone`: the node holds nothing else (so it may be a heading)."""
        if node.tag == "pre":
            text = " ".join(text.replace(_LINE_BREAK, " ").split())   # code: no comma between its lines
        else:
            text = " ".join(_LINES.sub(_line_join, text.strip().strip(_LINE_BREAK)).split())
        if not text or (len(text) <= MAX_PAGE_META_CHARS and _PAGE_META.match(text)):
            return
        if alone and _is_heading(node, text):
            self.sections.append(Section(text))
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
                if tag == "table":
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
        children = list(node.iter(include_text=True))
        if node.tag in _HEADINGS - {"summary"}:
            children = []   # a heading is read whole, even with its text in <div>s (GitBook)
        if any(self._is_structure(c) for c in children) or (node.tag == "details" and children):
            opened.append(_Open(node, children, resume=resume))
            return
        self.add(node, node.text(separator=""), resume is None)
        if resume is not None:
            self._scope(resume, resume)

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
            self.sections.pop()
        self.sections.append(Section(heading))
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
