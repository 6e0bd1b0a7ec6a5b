"""What a browser shows of a page beside its markup, without running its scripts: declarative shadow
roots, the <noscript> content of a page whose article a script renders, and an FAQ stated only as
schema.org JSON-LD."""

from __future__ import annotations

import json
import re

from selectolax.lexbor import LexborHTMLParser

from services.scraper.scopes import SPACE_BEFORE_MARK

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


def has_noscript(html: str) -> bool:
    return _NOSCRIPT.search(html) is not None


def read_noscript(body) -> None:
    """The content of every <noscript> in place, but short "needs JavaScript" notices."""
    for node in body.css("noscript"):
        text = node.text()
        if len(text) < NOSCRIPT_FALLBACK_CHARS and _SCRIPT_NOTICE.search(text):
            node.decompose()      # "Live chat needs JavaScript": about the page, not the product
        else:
            node.unwrap()


def attach_shadow_roots(body) -> None:
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


def structured_faq(tree) -> list[tuple[str, str]]:
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
