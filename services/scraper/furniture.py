"""What of a page is not its content: elements that never are, a theme's furniture recognised by its
class or id, the lines a theme writes about the page (votes, author, dates, copyright, a pager), and
the element that holds the content."""

from __future__ import annotations

import re

# Text for screen readers only: "Skip to content", a search box's label (in a table cell, what its icon
# means: services/scraper/tables.py reads it there first).
SCREEN_READER_ONLY = (".sr-only, .visually-hidden, .visuallyhidden, .screen-reader-text, .show-for-sr, "
                      "[class*=-visually-hidden], [class*=-sr-only]")   # a design system's own (govuk-, usa-)
# Hidden from every reader; but the panel a disclosure toggle opens (`aria-controls` naming its id on an
# element with `aria-expanded`: SharePoint's collapsible sections, jQuery UI accordions) is content the
# reader opens, whatever hides it until then.
_HIDDEN = "[aria-hidden=true]"
# Elements that are never content.
# A link that says it is a button (Zendesk's "Follow") is an action, not text; a disclosure toggle
# (aria-expanded, aria-controls) carries its panel's title and is read.
# A link that prints the page (Freshdesk's "Print" in the article's heading) is an action too; a search
# form (role=search) is never content, wherever it is (a help centre's hero search inside <main>), nor
# the choices of a drop-down (a "jump to collection" <select> beside it).
_NEVER = "script, style, noscript, template, svg, iframe, button, footer, select, datalist, " \
         "a[role=button]:not([aria-expanded]):not([aria-controls]), " \
         "a[href^='javascript:print'], a[href^='javascript:window.print'], " \
         "[role=banner], [role=contentinfo], [role=dialog], [role=search], " \
         f".cookie-banner, .sidebar, {SCREEN_READER_ONLY}, [data-elementor-type=header], [data-elementor-type=footer], " \
         ".mw-editsection, .mw-jump-link, #siteSub, #siteNotice, #catlinks, .printfooter"   # MediaWiki's
_DROP = f"{_NEVER}, {_HIDDEN}"
# Navigation is links. A <nav> of text (Webflow's dropdown writes an FAQ's answer in one) is content.
_NAVIGATION = "nav, [role=navigation]"
MAX_NAV_LINK_SHARE = 0.25    # of a <nav>'s text in links, at most, for a <nav> with a paragraph to be content
# Never content either, unless they hold the page's content: a <header> inside the article (its h1
# and summary, as Zendesk, Docusaurus and GitBook themes write it) is the article's; a <form> around
# the whole page (ASP.NET WebForms, SharePoint, DNN) holds it all. A site's header or a search form
# holds neither.
_DROP_UNLESS_CONTENT = "header, form"
# The content container of common help-centre and CMS themes, best first (the page's body otherwise).
_MAIN = ("main", "article", "[role=main]", "#content", ".content", ".article-body", ".article-content",
         ".entry-content", ".post-content", ".markdown-body", "#main", ".main-content")
MAIN_SHARE = 0.7     # of several candidates for the content container, one holding this share of their text is it
# Page furniture by its class or id, as themes name it (the idea of Mozilla Readability's "unlikely
# candidates"): cookie and consent banners, sidebars, breadcrumbs, feedback widgets, share bars,
# related-article lists, pagination.
_FURNITURE_NAME = re.compile(
    r"(?:^|[-_ ])(?:cookie|consent|gdpr|sidebar|side-?nav|breadcrumb|feedback|helpful|newsletter|subscribe|"
    r"no-?print|print-none|hidden-print|print:hidden|"   # what a page leaves out of its printout is no part of its text
    r"related|see-also|recommended|pagination|skip-link|toolbar|topbar|navbar|masthead|site-header|"
    r"site-footer|social|disqus|advert|sponsor|table-of-contents|(?:return|back)-to-top|more-questions|"
    r"article-info|post-date|entry-date|"   # the article's meta (Joomla's article-info, WordPress' post date)
    r"version-?(?:badge|picker|select(?:or)?|switcher|dropdown)|email-?sign-?up|"   # which docs version is shown (Docusaurus)
    r"last-?modifi(?:ed|cation)|"     # XWiki's xdocLastModification
    r"(?:banner|menu|vote|votes|rating|share|sharing|toc|promo|pager|modal|popup|comments?|footer|navigation|"
    r"search|byline|author|reactions?|credits?|tags?|doc-?info)\d*(?:$|[-_ ]))"   # numbered: Mobirise's footer3
    # a part's meta line: entry-meta, post-meta, node__meta (Drupal), td-page-meta (Docsy), CardViewer__meta,
    # article-meta-row (Salesforce); not a wrapper that only names a field of meta (HubSpot's ..._meta_field)
    r"|[-_]meta(?:$| |__|-(?:row|info|bar|line|list|wrapper|container)(?:$| ))",
    re.IGNORECASE)
# What holds the page's content is never furniture, whatever its class ("layout has-sidebar"; Prism's
# <div class="code-toolbar"> around a code block).
_HOLDS_CONTENT = "main, article, [role=main], h1, .article-body, pre"
# The elements a theme's furniture is made of (a heading's id is an anchor of its topic: never furniture).
_FURNITURE_TAGS = ", ".join(f"{tag}[class], {tag}[id], {tag}[data-testid]"
                           for tag in ("div", "section", "aside", "ul", "ol", "p", "span", "dl", "nav"))
_HEADED = "h2, h3, h4, h5, h6"     # the headings inside a part of the page
# An aside that is a callout of the text (a tip, a warning) is content; other asides are sidebars.
_CALLOUT_NAME = re.compile(r"note|tip|warning|caution|callout|alert|info|important|notice|hint", re.IGNORECASE)
# A theme's widgets that say things about the page, not about the product: votes on it, its author and
# date. Short blocks only.
_PAGE_META = re.compile(
    r"(?:was this (?:article|page|answer|information|content|section)? ?(?:helpful|useful)"
    r"|did this (?:article )?(?:answer|solve) your (?:question|problem)|did this (?:page|article) help(?: you)?\b"
    r"|\d+ (?:out )?of \d+ (?:people |users )?found this (?:article )?helpful"
    r"|(?:(?-i:[A-Z][\w'.-]*(?: [A-Z][\w'.-]*){0,3})\s*[\u2022\u00b7|\u2013-]?\s*)?(?:last )?(?:updated|modified|edited) "
    r"(?:over |about |almost |less than )?(?:an?|\d+) (?:minute|hour|day|week|month|year)s? ago"
    r"|(?:written|owned|posted|authored|verified) by \S.{0,60}?(?:updated|published|$)"
    # counts of the page's readers: "3 min read", "1,284 views", "9 likes"
    r"|\d+ min(?:ute)?s? read(?:\s*[\u2022\u00b7|]\s*[^.!?]{0,60})?$|[\d,.]+k? (?:views?|likes?)$"
    r"|(?:last )?(?:updated|modified|published|update)(?: on)?:? (?:\d{1,2} [a-z]+ \d{4}|[a-z]+ \d{1,2},? \d{4}"
    r"|\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4})(?: by (?-i:[A-Z][\w'.-]*(?: [A-Z][\w'.-]*){0,3}))?"
    r"(?:: [^\n]{1,100} \((?-i:(?=[a-f]*\d)[0-9a-f]{6,40})\))?$"   # Docsy's "Last modified <date>: <commit> (a1b2c3d)"
    # the site's copyright line ("Copyright © 2024 ..."); a pager's "Previous <page> Next <page>"
    r"|(?:copyright|\u00a9|\(c\))\s*(?:\u00a9\s*)?(?:19|20)\d\d\b"
    r"|powered by \S[^.!?]{0,40}$"     # the platform's credit line ("Powered by Zoho Learn")
    # a site builder's badge: "Made with Strikingly", "Built on Bubble", "Create a website with Zoho Sites"
    r"|(?:(?:made|built|created|designed|hosted) (?:with|on|in|using|by)|create (?:a|your) (?:free )?(?:website|site) with)"
    r"\s*(?:strikingly|tilda|softr|bubble|wix|squarespace|webflow|carrd|weebly|jimdo|wordpress(?:\.com)?|zoho sites|"
    r"godaddy|framer|canva|mobirise|webnode|site123|hostinger|zyro|ionos|yola|linktree|beacons|notion|super|ghost|duda|"
    r"google sites|blogger|odoo|shopify|ecwid|squarespace)\b[^.!?]{0,20}$"
    r"|(?-i:Previous|PREVIOUS|\u2190)[^.!?;:,]{0,80}(?-i:Next|NEXT|\u2192)[^.!?;:,]{0,80}$"
    # links about the page itself, alone on their line: "Edit this page · Report a problem", "Return to top"
    r"|(?:(?:edit (?:this (?:page|article)|on github)|report (?:a problem|an issue)(?: with this page)?"
    r"|improve this (?:page|article)|suggest (?:an )?edits?|view (?:page )?source|(?:back|return) to top"
    r"|print (?:this )?(?:page|article))[\s\u00b7\u2022|]*)+$"
    r")", re.IGNORECASE)
MAX_PAGE_META_CHARS = 120


def remove_furniture(body) -> None:
    """Removes what is never content, and what is not unless it holds the content."""
    disclosed = {i for toggle in body.css("[aria-controls][aria-expanded]")
                 for i in (toggle.attributes.get("aria-controls") or "").split()}
    opened = _collapsed_panels(body)
    for junk in body.css(_DROP):
        if ((disclosed and junk.attributes.get("id") in disclosed) or junk.mem_id in opened) \
                and not junk.css_matches(_NEVER):
            continue     # a collapsed panel: hidden only until its toggle opens it
        junk.decompose()
    for nav in body.css(_NAVIGATION):
        if not _reads_as_text(nav):
            nav.decompose()
    for node in list(body.css(_DROP_UNLESS_CONTENT)):
        if node.css_first(_HOLDS_CONTENT) is None and not any(
                p.tag in ("main", "article") or p.attributes.get("role") == "main" for p in _ancestors(node, body)):
            node.decompose()
    _drop_furniture(body)
    _drop_calls_to_contact(body)
    _drop_actions(body)
    _drop_tables_of_contents(body)
    _drop_more_articles(body)


def _collapsed_panels(body) -> set[int]:
    """Hidden text right after a toggle that names no panel (Coda's collapsed heading: a button with
    aria-expanded in the heading's box, the aria-hidden content after the box): the mem_ids of such
    panels. A panel that is mostly links (a menu behind its button) is not one."""
    opened: set[int] = set()
    for toggle in body.css("[aria-expanded]:not([aria-controls])"):
        for holder in (toggle, toggle.parent):
            panel = next_element(holder) if holder is not None else None
            if panel is not None and panel.attributes.get("aria-hidden") == "true":
                if _reads_as_prose(panel):
                    opened.add(panel.mem_id)
                break
    return opened


def next_element(node):
    """The element after `node` among its siblings (text and comments passed over), or None."""
    after = node.next
    while after is not None and after.tag in ("-text", "-comment"):
        after = after.next
    return after


# The box a theme closes an article with, asking the reader to get in touch: "Still need help?",
# "Need more help?", "Still can't find an answer?", "Have more questions?" (its heading, then a line
# and a button). The box goes whole, when it is small; the same words in the article's text stay.
_CALL_TO_CONTACT = re.compile(
    r"(?:still )?(?:need|have|got) (?:more |any |further |other )?(?:help|questions?|assistance)"
    r"(?: with this(?: article| page)?)?\??"
    r"|still (?:can'?t|cannot|didn'?t) find (?:an |the |your |what you(?:'re| are) looking for)?(?:answer)?\??"
    r"|(?:can'?t|didn'?t) find what you(?:'re| are| were) looking for\??|didn'?t find (?:an |your |the )?answer\??"
    r"|(?:still stuck\?* ?)?how can we help(?: you)?\?*|still stuck\?*", re.IGNORECASE)
MAX_CALL_TO_CONTACT_CHARS = 300     # the box's whole text, at most
_CALL_HEADS = "h2, h3, h4, h5, h6, strong, b, p, div, span"


def _drop_calls_to_contact(body) -> None:
    for head in list(body.css(_CALL_HEADS)):
        # Its own text only: the whole text of every <div> would cost a walk of its subtree each,
        # quadratic in a deeply nested page.
        if head.parent is None or not _CALL_TO_CONTACT.fullmatch(" ".join((head.text(deep=False) or "").split())):
            continue
        box = head.parent
        while box is not None and box.tag not in ("div", "section", "aside") and box is not body:
            box = box.parent
        if box is not None and box is not body and box.css_first(_HOLDS_CONTENT) is None and \
                len(" ".join(box.text(separator=" ").split())) <= MAX_CALL_TO_CONTACT_CHARS:
            box.decompose()


# Controls written as other elements: what says it is a button (a chat launcher's <div role="button">)
# unless it opens a panel, and a row of links styled as buttons ("Print", "Subscribe to article",
# "Download PDF"). A question is never a control (an accordion's head without ARIA).
_BUTTON_ROLE = "[role=button]:not([aria-expanded]):not([aria-controls])"
_BUTTON_STYLE = re.compile(r"(?:^|[-_ ])(?:btn|button)(?:$|[-_ ])", re.IGNORECASE)
MAX_ACTION_CHARS = 40


def _drop_actions(body) -> None:
    for node in list(body.css(_BUTTON_ROLE)):
        label = " ".join(node.text(separator=" ").split())
        if len(label) <= MAX_ACTION_CHARS and not label.endswith("?") and node.css_first(_HOLDS_CONTENT) is None:
            node.decompose()
    for row in list(body.css("div, p")):
        children = [c for c in row.iter() if c.tag != "-comment"]
        if children and not (row.text(deep=False) or "").strip() and all(
                c.tag == "-text" or (c.tag == "a" and _BUTTON_STYLE.search(c.attributes.get("class") or ""))
                for c in children) and any(c.tag == "a" for c in children):
            row.decompose()


def _drop_tables_of_contents(body) -> None:
    """A list whose every item names a heading of the page is its table of contents, however it is
    named or written (Wiki.js: <div role="list"> of <div role="listitem"> without links)."""
    headings = {" ".join(h.text(separator=" ").split()).casefold()
                for h in body.css(f"{_HEADED}, [role=heading]")}
    if len(headings) < 2:
        return
    for listing in list(body.css("ul, ol, [role=list]")):
        if listing.parent is None:
            continue     # inside a table of contents already removed
        items = [c for c in listing.iter() if c.tag == "li" or c.attributes.get("role") == "listitem"]
        if len(items) >= 2 and all(_label(item) in headings for item in items):
            listing.decompose()


# The heading of a list of other articles: "Related articles", "More in Running payroll", "See also".
_MORE_ARTICLES = re.compile(
    r"(?:related|similar|popular|recommended|other|more|recent(?:ly viewed)?|top|trending|promoted|latest)"
    r"(?: help)? (?:articles|questions|topics|guides|posts|docs|links|resources|reading|pages|information|help)"
    r"(?: in (?:this|the same) (?:section|category|collection))?"
    r"|articles in this (?:section|category|collection)|more in \S.{0,60}|see also|read next|you (?:may|might) also like",
    re.IGNORECASE)


MAX_WRAPPERS = 3     # <div>s around a heading or a list, each holding only it


def _drop_more_articles(body) -> None:
    """A heading of other articles with only a list of links under it (in its own box, or the list right
    after it), the list with it."""
    # Innermost first: a box inside another is gone before the outer one is read (nested boxes: linear).
    for heading in reversed(body.css(_HEADED)):
        if heading.parent is None or not _MORE_ARTICLES.fullmatch(" ".join(heading.text(separator=" ").split())):
            continue
        # The heading may sit in wrappers of its own (Liferay: <div class="portlet-header"><div><h2>), and
        # the list in others beside them (<div class="portlet-body"><ul>).
        branch, box = heading, heading.parent
        for _ in range(MAX_WRAPPERS):
            if box is None or box is body or box.tag != "div" or _only_child(box) is None:
                break
            branch, box = box, box.parent
        if box is not None and box is not body and box.tag in ("div", "section", "aside", "nav"):
            # Only lists of links beside the heading; the first other child ends the look, and a box of
            # other boxes is never walked (nested boxes, or many headings in one box: linear).
            lists = 0
            for child in box.iter():
                if child.mem_id == branch.mem_id or child.tag == "-comment" or (
                        child.tag == "-text" and not (child.text() or "").strip()):
                    continue
                for _ in range(MAX_WRAPPERS):
                    if child.tag != "div" or _only_child(child) is None:
                        break
                    child = _only_child(child)
                if child.tag not in ("ul", "ol") or not _only_links(child):
                    lists = 0
                    break
                lists += 1
            if lists:
                box.decompose()
                continue
        after = heading.next
        while after is not None and (after.tag == "-comment" or (after.tag == "-text" and not (after.text() or "").strip())):
            after = after.next
        if after is not None and after.tag in ("ul", "ol") and _only_links(after):
            after.decompose()
            heading.decompose()


def _only_child(node):
    """The one element in `node`, when it holds nothing else (no text of its own), else None."""
    found = None
    for child in node.iter():
        if child.tag == "-comment" or (child.tag == "-text" and not (child.text() or "").strip()):
            continue
        if child.tag == "-text" or found is not None:
            return None
        found = child
    return found


def _only_links(node) -> bool:
    """A list (or a block) whose text is all in links."""
    if node.tag == "-text":
        return False
    text = "".join(node.text(separator=" ").split())
    return bool(text) and "".join(" ".join(a.text(separator=" ") for a in node.css("a")).split()) == text


def _label(item) -> str:
    """A list item's link text (or its text), as a heading's text is compared."""
    link = item.css_first("a")
    return " ".join((link if link is not None else item).text(separator=" ").split()).casefold()


def _reads_as_text(nav) -> bool:
    """A <nav> holding a paragraph whose text is mostly not links."""
    return nav.css_first("p") is not None and _reads_as_prose(nav)


def _reads_as_prose(node) -> bool:
    """Text mostly not in links."""
    text = len(" ".join(node.text(separator=" ").split()))
    links = sum(len(" ".join(a.text(separator=" ").split())) for a in node.css("a"))
    return text > 0 and links <= MAX_NAV_LINK_SHARE * text


# A "menu" with headings of its own and text mostly not in links is a price list (GoDaddy's
# <div class="widget widget-menu">), not navigation.
_MENU = re.compile(r"(?<![a-z0-9])menu(?![a-z0-9])", re.IGNORECASE)


def is_page_meta(text: str) -> bool:
    """A short block that speaks of the page (its votes, author, date, copyright, pager), not the product."""
    # after a separator whose author went with the theme's author block: "· Updated 14 October 2026"
    return len(text) <= MAX_PAGE_META_CHARS and _PAGE_META.match(text.lstrip(" \u2022\u00b7|\u2013-")) is not None


def content_root(body):
    """The page's content container: the first of _MAIN's selectors that names one element, or of
    several one that holds most of their text; else the body. A listing page's <article> cards, or
    several <div class="content"> boxes, are not the page's content one by one."""
    for selector in _MAIN:
        nodes = _outermost(body.css(selector))
        if len(nodes) == 1:
            if _not_the_content(nodes[0], body):
                continue
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


# A container named as the content that holds less than this share of the page's text, and not its one
# h1, is not its content: GoDaddy's site builder gives its header widget role="main".
MIN_MAIN_SHARE = 0.2


def _not_the_content(node, body) -> bool:
    headings = body.css("h1")
    if len(headings) != 1 or node.css_first("h1") is not None:
        return False
    return len(node.text(separator=" ").split()) < MIN_MAIN_SHARE * len(body.text(separator=" ").split())


def _outermost(found: list) -> list:
    """The nodes of `found` that are inside none of the others. Each element is walked past once:
    what is known of an ancestor (whether it or one above it is one of `found`) is kept, so thousands
    of nested candidates cost their number, not its square."""
    ids = {n.mem_id for n in found}
    covered: dict[int, bool] = {}    # element -> it or an element above it is one of `found`
    outermost = []
    for node in found:
        path, parent, inside = [], node.parent, False
        while parent is not None:
            known = covered.get(parent.mem_id)
            if known is not None:
                inside = known
                break
            path.append(parent.mem_id)
            if parent.mem_id in ids:
                inside = True
                break
            parent = parent.parent
        for mem_id in path:
            covered[mem_id] = inside
        if not inside:
            outermost.append(node)
    return outermost


def _ancestors(node, body) -> list:
    found, parent = [], node.parent
    while parent is not None and parent is not body:
        found.append(parent)
        parent = parent.parent
    return found


_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def _names(node) -> str:
    """Its class, id and test id (React apps name their parts in data-testid), camelCase words apart
    ("menuPane": "menu-Pane", as DNN and Salesforce name them)."""
    attrs = node.attributes
    return _CAMEL.sub("-", f"{attrs.get('class') or ''} {attrs.get('id') or ''} {attrs.get('data-testid') or ''}")


# A name that says what a part is not: Weebly's content is <div class="wsite-elements wsite-not-footer">.
_NEGATED = re.compile(r"(?<![a-z0-9])(?:not|non)[-_][a-z0-9]+", re.IGNORECASE)


def _drop_furniture(body) -> None:
    """Removes the theme's furniture, recognised by its class or id (_FURNITURE_NAME) unless it holds
    the content, and asides that are no callout of the text."""
    kept: set[int] = set()    # what a price list holds, whatever its name
    for node in list(body.css(_FURNITURE_TAGS)):
        if node.mem_id in kept:
            continue
        # A section's id is often an anchor of its topic (<section id="pagination"> of an API guide).
        names = _CAMEL.sub("-", f"{node.attributes.get('class') or ''} {node.attributes.get('data-testid') or ''}") \
            if node.tag == "section" else _names(node)
        names = _NEGATED.sub(" ", names)
        if not _FURNITURE_NAME.search(names):
            continue
        if not _FURNITURE_NAME.search(_MENU.sub(" ", names)) and node.css_first(_HEADED) is not None \
                and _reads_as_prose(node):
            kept.update(inner.mem_id for inner in node.css(_FURNITURE_TAGS))
        elif node.css_first(_HOLDS_CONTENT) is None:
            node.decompose()
    for node in list(body.css("aside, [role=complementary]")):   # XWiki's side panels: a div in that role
        if node.parent is None or (node.tag == "aside" and _is_quote(node)):
            continue     # a quotation in the text (Discourse: <aside class="quote"><blockquote>)
        if not _CALLOUT_NAME.search(f"{_names(node)} {node.attributes.get('role') or ''}") and (
                node.tag == "aside" or node.css_first("main, article, [role=main]") is None):
            node.decompose()


def _is_quote(aside) -> bool:
    """An aside that holds a blockquote and no list of links or headings of its own."""
    return aside.css_first("blockquote") is not None and aside.css_first("ul, ol, nav, h1, h2, h3, h4, h5, h6") is None
