"""What documentation generators show apart from the flow of a section: content tabs, titled callouts,
accordions.

The extractor marks them before reading a page (`mark_scopes`), and its reader heads each apart: a tab's
panel by its label ("Update now (Android)"), a callout by its own title, an accordion's panel by its
button's label (an FAQ's question); the section goes on after tabs and callouts.
"""

from __future__ import annotations

import html
import re

from selectolax.lexbor import LexborHTMLParser

# A documentation generator's callout (MkDocs' admonition, Docusaurus' theme-admonition, Bootstrap's
# alert) and its title element. A title that only says what kind of callout it is ("Warning", "tip") is
# dropped; another ("Rotate the password") heads the callout's text, and the text after the callout
# returns to the section it is in.
_CALLOUT_BOX = re.compile(r"admonition|callout|alert", re.IGNORECASE)
_CALLOUT_TITLE = re.compile(r"title|heading", re.IGNORECASE)
_CALLOUT_KINDS = frozenset(
    "note tip tips info information warning caution danger important hint success example abstract summary "
    "quote question attention notice remember error bug failure check todo".split())
# A heading's own permalink ("¶", "#", a zero-width space): not part of the heading's text.
_PERMALINK = "a.headerlink, a.hash-link, a.anchor-link, a.anchorjs-link, a.heading-anchor"
_PERMALINK_TEXT = re.compile(r"[\s¶#§\u200b\u200c\u200d\ufeff🔗]*")
# A button that shows and hides the text after it (Bootstrap's accordion, the WAI-ARIA disclosure
# pattern): its label, often an FAQ's question, heads that text. Other buttons are controls, and the
# extractor drops them.
_DISCLOSURE = ("button[aria-expanded], button[aria-controls], button[data-bs-toggle=collapse], "
               "button[data-toggle=collapse], button[class*=accordion], button[class*=collaps], "
               "button[class*=faq], "   # the last three: accordions scripted by class (w3schools' pattern)
               "a[role=button][aria-expanded], a[role=button][aria-controls]")   # a link in a button's role
# An FAQ's question may be longer than a heading usually is.
MAX_QUESTION_CHARS = 200
_HEADING_TAGS = frozenset("h1 h2 h3 h4 h5 h6".split())
SPACE_BEFORE_MARK = re.compile(r"\s+(?=[?!.,:;])")   # "for 12 pounds ." read from inline markup
# Attributes the extractor marks elements with before reading them (never in a page's own markup).
SCOPE_TAB = "data-parley-tab"
SCOPE_TITLE = "data-parley-title"


def mark_scopes(body, max_title_chars: int) -> None:
    """Marks what a documentation generator shows apart from the flow of its section, so that the reader
    heads it apart: each panel of content tabs by its tab's label (ARIA tabs as Docusaurus and Bootstrap
    write them, MkDocs' and sphinx-design's tab sets), callouts by their own title. Tab lists and callout titles that only
    name the kind of callout are removed; so are headings' permalinks. An accordion's button becomes
    the heading of its panel (a <summary>, or its heading's text when it is inside one)."""
    for link in body.css(_PERMALINK):
        link.decompose()
    # Each heading's own links (a descendant selector "h3 a" climbs every link's ancestors: quadratic
    # in a deeply nested page).
    for heading in body.css(", ".join(sorted(_HEADING_TAGS))):
        for link in heading.css("a[href^='#']"):
            if _PERMALINK_TEXT.fullmatch(link.text()):
                link.decompose()
    for tablist in body.css("[role=tablist]"):
        tabs = tablist.css("[role=tab]")
        labels = [" ".join(t.text(separator=" ").split()) for t in tabs]
        # Each tab's own panel, by the id it names (aria-controls, or a Bootstrap tab's href="#id"):
        # two tab sets side by side in one container are told apart. Else the panels near the list.
        panels = [_controlled(body, t) for t in tabs]
        if not all(panels) or len({p.mem_id for p in panels}) != len(panels):
            holder = tablist.parent
            while holder is not None and holder.css_first("[role=tabpanel]") is None and holder.tag != "body":
                holder = holder.parent
            panels = holder.css("[role=tabpanel]") if holder is not None else []
        if labels and len(labels) == len(panels):
            for label, panel in zip(labels, panels):
                panel.attrs[SCOPE_TAB] = label
                if "aria-hidden" in panel.attrs:
                    del panel.attrs["aria-hidden"]   # an inactive tab's panel is content all the same
            if any(within(panel, tablist) for panel in panels):
                for tab in tabs:     # an accordion written as a tab list holds its panels (Odoo's FAQ)
                    tab.decompose()
            else:
                tablist.decompose()
    for set_selector, label_selector, panel_selector in _TAB_SETS:
        for tabs in body.css(set_selector):
            labels = tabs.css(label_selector)
            panels = [p for p in tabs.css(panel_selector) if _nearest(p, set_selector) == tabs.mem_id]
            labels = [t for t in labels if _nearest(t, set_selector) == tabs.mem_id]
            if labels and len(labels) == len(panels):
                for label, panel in zip(labels, panels):
                    panel.attrs[SCOPE_TAB] = " ".join(label.text(separator=" ").split())
                for label in labels:
                    label.decompose()
    for box in body.css("div[class], aside[class], section[class]"):
        if not _CALLOUT_BOX.search(box.attributes.get("class") or ""):
            continue
        title = next((c for c in box.iter() if c.tag != "-text"), None)
        if title is None or not _CALLOUT_TITLE.search(title.attributes.get("class") or ""):
            continue
        text = " ".join(title.text(separator=" ").split())
        if text and text.lower().rstrip(":") not in _CALLOUT_KINDS and len(text) <= max_title_chars:
            box.attrs[SCOPE_TITLE] = text
        title.decompose()
    for button in body.css(_DISCLOSURE):
        label = SPACE_BEFORE_MARK.sub("", " ".join(button.text(separator=" ").split()))
        if _TOGGLE_ACTION.fullmatch(label):
            continue     # "Show all sections": a control, dropped with the page's other buttons
        # The toggle's state word in an element of its own (GOV.UK: "Check you are eligible" + "Show")
        for part in button.css("span, div, i, em"):
            if part.parent is not None and _TOGGLE_ACTION.fullmatch(" ".join(part.text(separator=" ").split())):
                part.decompose()
        label = SPACE_BEFORE_MARK.sub("", " ".join(button.text(separator=" ").split()))
        if button.attributes.get("role") == "tab" or not label or len(label) > (
                MAX_QUESTION_CHARS if label.endswith("?") else max_title_chars):
            continue
        # What the toggle opens stays named on what replaces it: the furniture step keeps a hidden panel
        # a toggle opens (services/scraper/furniture.py).
        state = {name: button.attributes.get(name) or "" for name in _TOGGLE_STATE if name in button.attributes}
        if button.parent is not None and button.parent.tag in _HEADING_TAGS:
            for name, value in state.items():
                button.parent.attrs[name] = value
            button.unwrap()
        else:
            marks = "".join(f' {name}="{html.escape(value)}"' for name, value in state.items())
            button.replace_with(LexborHTMLParser(f"<summary{marks}>{html.escape(label)}</summary>").css_first("summary"))
    # A button that holds a paragraph is text shown as a control: Redoc writes each response of an API
    # operation ("409 The shipment has already been fully refunded") as a button that opens its schema.
    for button in body.css("button"):
        if button.css_first("p") is not None:
            text = " ".join(button.text(separator=" ").split())
            button.replace_with(LexborHTMLParser(f"<p>{html.escape(text)}</p>").css_first("p"))


# Content tabs written without ARIA roles, as (the set, a tab's label, a tab's panel): MkDocs Material's
# tabbed sets and sphinx-design's tab sets (radio inputs, then labels and panels).
_TAB_SETS = ((".tabbed-set", ".tabbed-labels > label", ".tabbed-content > .tabbed-block"),
             (".sd-tab-set", "label.sd-tab-label", ".sd-tab-content"),
             # page builders' tabs, labels first and panels after: Kadence Blocks, Zoho Sites, Sitecore SXA
             (".kt-tabs-wrap", ".kt-tabs-title-list > .kt-title-item", ".kt-tabs-content-wrap > .kt-tab-inner-content"),
             (".zptabs-container", ".zptabs-name-container .zptab", ".zptabs-content-container .zptab-content"),
             (".tabs", ".tabs-heading > li", ".tabs-container > .tab"))


def _nearest(node, selector: str):
    """The mem_id of the nearest ancestor matching `selector` (one of _TAB_SETS' set selectors), or None."""
    name = selector.lstrip(".")
    parent = node.parent
    while parent is not None:
        if name in (parent.attributes.get("class") or "").split():
            return parent.mem_id
        parent = parent.parent
    return None


# What a disclosure toggle says it does, beside its title (GOV.UK's accordion: "Check you are eligible"
# and "Show"), or all it says (a "Show all sections" control).
_TOGGLE_ACTION = re.compile(r"(?:show|hide|expand|collapse|open|close)(?: all| this)?(?: sections?| answers?)?",
                            re.IGNORECASE)


_TOGGLE_STATE = ("aria-controls", "aria-expanded")


def within(node, container) -> bool:
    """Whether `container` is one of `node`'s ancestors."""
    parent = node.parent
    while parent is not None:
        if parent.mem_id == container.mem_id:
            return True
        parent = parent.parent
    return False


def _controlled(body, tab):
    """The element a tab names as its panel (aria-controls, Bootstrap's data-bs-target, or href="#id", on
    the tab or on its link: Magento's <li role="tab"><a href="#id">), if there is one."""
    attrs = tab.attributes
    if not any(attrs.get(name) for name in ("aria-controls", "data-bs-target", "data-target", "href")):
        link = tab.css_first("a[href^='#']")
        attrs = link.attributes if link is not None else attrs
    target = ((attrs.get("aria-controls") or "").split(" ")[0]
              or (attrs.get("data-bs-target") or attrs.get("data-target") or "").removeprefix("#")
              or (attrs.get("href") or "").removeprefix("#"))
    if not target or target == attrs.get("href") or '"' in target or "\\" in target:
        return None
    return body.css_first(f'[id="{target}"]')
