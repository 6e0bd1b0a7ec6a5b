"""Main content of a page without boilerplate: title, canonical URL, robots directives, sections, links."""

from __future__ import annotations

from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser

from services.common.chunking import chunk_text, content_hash
from services.scraper.fetching import normalize_url

# Elements that are never content.
_DROP = "script, style, noscript, template, svg, iframe, form, button, nav, header, footer, aside, " \
        "[role=navigation], [role=banner], [role=contentinfo], [aria-hidden=true], .cookie-banner, .sidebar"
_MAIN = ("main", "article", "[role=main]", "#content", ".content")
_BLOCKS = {"h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "blockquote", "dt", "dd", "td", "th", "figcaption"}
_HEADINGS = {"h1", "h2", "h3", "h4"}


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
    for junk in body.css(_DROP):
        junk.decompose()
    for br in body.css("br"):
        br.replace_with(" ")
    root = next((n for sel in _MAIN if (n := body.css_first(sel)) is not None), body)
    page.sections = _sections(root)
    if not page.title:
        h1 = root.css_first("h1")
        page.title = h1.text(separator=" ", strip=True) if h1 else ""
    return page


def _cell_text(node) -> str:
    return " ".join(node.text(separator=" ").split())


def _in_row(node, root) -> bool:
    parent = node.parent
    while parent is not None and parent is not root and parent.tag != "body":
        if parent.tag == "tr":
            return True
        parent = parent.parent
    return False


def _row_text(cells: list[str], header: list[str] | None) -> str:
    """A table row as one line that reads on its own: "Weight: 34.5 kg", or with the column headings of a
    table of several columns, "Weight — Trailhead Ridge: 34.5 kg; Trailhead Haul: 47.2 kg"."""
    if header and len(header) == len(cells) and len(cells) > 2:
        values = "; ".join(f"{h}: {v}" if h else v for h, v in zip(header[1:], cells[1:]) if v)
        return f"{cells[0]} — {values}" if cells[0] else values
    if len(cells) == 2 and cells[0] and cells[1]:
        return f"{cells[0].rstrip(':')}: {cells[1]}"
    return "; ".join(c for c in cells if c)


def _sections(root) -> list[Section]:
    sections = [Section("")]
    header: list[str] | None = None      # the column headings of the table being read
    for node in root.traverse():
        if node.tag == "table":
            header = None
        if node.tag == "tr":
            cells = node.css("th, td")
            texts = [_cell_text(c) for c in cells]
            if len(cells) > 1 and all(c.tag == "th" for c in cells):
                header = texts
            elif any(texts):
                sections[-1].paragraphs.append(_row_text(texts, header))
            continue
        if node.tag not in _BLOCKS or _in_row(node, root):
            continue
        # Only innermost blocks, so a <li><p>..</p></li> is read once.
        if any(child.tag in _BLOCKS for child in list(node.traverse())[1:]):
            continue
        text = " ".join(node.text(separator="").split())
        if not text:
            continue
        if node.tag in _HEADINGS:
            sections.append(Section(text))
        else:
            sections[-1].paragraphs.append(text)
    found = [s for s in sections if s.paragraphs or s.heading]
    if not any(s.paragraphs for s in found):
        # No block structure (text straight in divs): fall back to the visible text.
        text = root.text(separator="\n", strip=True)
        paragraphs = [" ".join(line.split()) for line in text.split("\n") if line.strip()]
        return [Section("", paragraphs)] if paragraphs else []
    return found


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
