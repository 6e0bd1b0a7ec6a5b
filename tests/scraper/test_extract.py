"""Extraction: main content without boilerplate, title, canonical, robots directives, bounded chunks."""

from __future__ import annotations

import json

from datetime import datetime, timezone

from services.scraper.crawler import parse_sitemap
from services.scraper.extract import chunk_page, extract_html, extract_text, robots_directives
from services.scraper.encodings import looks_like_html
from services.scraper.isolation import extract

PAGE = """<!doctype html><html><head><title>Refunds | Shop</title>
<link rel="canonical" href="/help/refunds"><meta name="robots" content="nofollow"></head>
<body><header>Shop menu</header><nav><a href="/a">A</a></nav>
<main><h1>Refunds</h1><p>Annual plans are refunded within <b>14 days</b>.</p>
<ul><li><p>Monthly plans are not refunded.</p></li></ul>
<script>var tracking = 1;</script><a href="/b">b</a></main>
<footer>Copyright Shop</footer></body></html>"""


def test_main_content_without_boilerplate():
    page = extract_html(PAGE, "https://shop.example/x")
    assert page.title == "Refunds | Shop"
    assert page.canonical == "https://shop.example/help/refunds"
    assert page.nofollow and not page.noindex
    assert page.links == []                       # nofollow: no links to follow
    text = page.text
    assert "Annual plans are refunded within 14 days." in text
    assert "Monthly plans are not refunded." in text
    for junk in ("Shop menu", "Copyright", "tracking"):
        assert junk not in text


def test_links_are_absolute_without_fragments():
    page = extract_html('<body><a href="b.html#top">b</a><a href="mailto:x@y">m</a>'
                        '<a href="https://other.example/">o</a><a rel="nofollow" href="/n">n</a></body>',
                        "http://site.example:80/dir/a.html")
    assert page.links == ["http://site.example/dir/b.html", "https://other.example/"]


def test_robots_directives():
    assert robots_directives("noindex, follow") == (True, False)
    assert robots_directives("none") == (True, True)
    assert robots_directives("") == (False, False)


def test_chunks_follow_headings_and_stay_bounded():
    sections = "".join(f"<h2>Part {i}</h2>" + "".join(f"<p>{'Sentence number %d of part %d. ' % (j, i) * 8}</p>"
                                                       for j in range(6)) for i in range(5))
    page = extract_html(f"<html><body><main>{sections}</main></body></html>", "http://x.example/")
    chunks = chunk_page(page, max_chars=600)
    assert len(chunks) > 5
    assert all(len(c) <= 600 for c in chunks)
    assert all(c.startswith("Part ") for c in chunks)   # every chunk carries its section heading
    assert {c.split("\n", 1)[0] for c in chunks} == {f"Part {i}" for i in range(5)}


def test_content_hash_ignores_boilerplate():
    a = extract_html(PAGE, "https://shop.example/x")
    b = extract_html(PAGE.replace("Copyright Shop", "Copyright Shop 2027"), "https://shop.example/x")
    c = extract_html(PAGE.replace("14 days", "30 days"), "https://shop.example/x")
    assert a.content_hash() == b.content_hash() != c.content_hash()


def test_plain_text():
    page = extract_text("Release notes\n\nVersion 2 is out.\n", "http://x.example/notes.txt")
    assert page.title == "Release notes"
    assert chunk_page(page) == ["Release notes\nVersion 2 is out."]


def test_an_html_document_served_as_plain_text_is_read_as_html():
    html = ("\ufeff <!-- generated --> <!DOCTYPE html><html><head><title>Plans</title></head><body>"
            "<nav>Home | Plans | Contact</nav><main><h1>Plans</h1><p>The lime plan costs 9 euros.</p></main></body></html>")
    page = extract("text/plain", html, "http://x.example/plans")
    assert page.title == "Plans" and "9 euros" in page.text and "<" not in page.text and "Contact" not in page.text
    note = "Markup\n\nWrite <html> at the top of a page.\n"
    assert extract("text/plain", note, "http://x.example/markup.txt").text == extract_text(note, "x").text
    # Comments are skipped by search: a run of them is read at once (a backtracking pattern took seconds).
    assert not looks_like_html("<!---->" * 5000 + "x") and looks_like_html("<!---->" * 500 + "<html>")


def test_sitemaps():
    index = b'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><sitemap><loc> http://x/a.xml.gz </loc></sitemap></sitemapindex>'
    urlset = (b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>http://x/p</loc></url>'
              b'<url><loc>http://x/q</loc><lastmod>2026-03-01</lastmod></url>'
              b'<url><loc>http://x/r</loc><lastmod>2026-03-01T10:00:00+02:00</lastmod></url></urlset>')
    assert parse_sitemap(index) == ([], ["http://x/a.xml.gz"])
    assert parse_sitemap(urlset) == ([
        ("http://x/p", None),
        ("http://x/q", datetime(2026, 3, 1, tzinfo=timezone.utc)),
        ("http://x/r", datetime(2026, 3, 1, 8, tzinfo=timezone.utc)),
    ], [])
    assert parse_sitemap(b"not xml") == ([], [])


def test_table_rows_are_one_line_with_their_column_headings():
    page = extract_html(
        "<html><body><main><h2>At a glance</h2><table>"
        "<tr><th></th><th>Ridge</th><th>Haul</th></tr>"
        "<tr><td>Weight</td><td>34.5 kg</td><td>47.2 kg</td></tr></table>"
        "<table><tr><th>Colours</th><td><p>Moss Green, Slate Grey</p></td></tr></table></main></body></html>",
        "http://x.example/")
    assert page.sections[0].paragraphs == ["Weight — Ridge: 34.5 kg; Haul: 47.2 kg", "Colours: Moss Green, Slate Grey"]


def test_a_section_is_packed_to_the_target_not_cut_after_every_few_rows():
    rows = "".join(f"<tr><td>Row {i}</td><td>{i} kg</td></tr>" for i in range(30))
    page = extract_html(f"<html><body><main><h2>Specs</h2><table>{rows}</table></main></body></html>",
                        "http://x.example/")
    chunks = chunk_page(page)
    assert len(chunks) == 1 and chunks[0].startswith("Specs\nRow 0: 0 kg\nRow 1: 1 kg")


THEMED = """<html><head><title>Descaling | Brewer Help</title></head><body>
<div class="cookie-consent">We use cookies to improve your visit. <a href="/privacy">Accept</a></div>
<div class="layout has-sidebar">
<div class="sidebar-articles"><h4>Articles in this section</h4><ul><li><a href="/a">Cleaning</a></li></ul></div>
<div class="article-body">
<h1>Descaling your machine</h1>
<p><strong>How often to descale</strong></p>
<p>Descale every 3 months or after 80 litres.</p>
<div class="section-title">What you need</div>
<div class="note">Tip: use <b>two</b> tablets per cycle.</div>
<aside class="warning">Never use vinegar: it damages the pump seals.</aside>
<aside class="promo-box">Buy tablets in our shop</aside>
<details><summary>How long does descaling take?</summary><div>About 25 minutes in total.</div></details>
<dl><dt>Water tank</dt><dd>1.8 litres</dd><dt>Drip tray</dt><dd>0.4 litres</dd></dl>
<h2 id="pagination">Pagination</h2><p>Lists come in pages of 25.</p>
</div></div>
<div class="article-feedback">Was this article helpful? <a href="#">Yes</a> <a href="#">No</a></div>
<ul class="related-articles"><li><a href="/b">Cleaning the steam wand</a></li></ul>
</body></html>"""


def test_theme_markup_keeps_its_text_and_drops_its_furniture():
    """Text written straight into a theme's divs (notes, accordion answers), callout asides, definition
    lists and headings styled as bold paragraphs or titled divs are content; cookie banners, sidebars,
    feedback widgets and related-article lists (named by their class) are not."""
    page = extract_html(THEMED, "https://brewer.example/help/descaling")
    by_heading = {s.heading: s.paragraphs for s in page.sections}
    assert by_heading["How often to descale"] == ["Descale every 3 months or after 80 litres."]
    # The <details> answers its question; after it, the text goes on under the heading before it.
    assert [(s.heading, s.paragraphs) for s in page.sections[2:5]] == [
        ("What you need", ["Tip: use two tablets per cycle.", "Never use vinegar: it damages the pump seals."]),
        ("How long does descaling take?", ["About 25 minutes in total."]),
        ("What you need", ["Water tank: 1.8 litres", "Drip tray: 0.4 litres"])]
    assert by_heading["Pagination"] == ["Lists come in pages of 25."]     # an anchor id is no furniture
    for junk in ("cookies", "Articles in this section", "Cleaning", "helpful", "Buy tablets"):
        assert junk not in page.text


def test_text_without_blocks_is_read():
    page = extract_html("<html><body><div>Opening hours<br>Mon to Fri 9:00 to 17:00</div>"
                        "<span>Closed on bank holidays.</span></body></html>", "https://x.example/")
    assert page.text == "Opening hours, Mon to Fri 9:00 to 17:00\n\nClosed on bank holidays."


def test_a_listing_of_article_cards_is_read_whole():
    cards = "".join(f"<article><h2>Guide {i}</h2><p>Guide {i} explains step {i} of the setup.</p></article>"
                    for i in range(3))
    page = extract_html(f"<html><body><h1>All guides</h1>{cards}</body></html>", "https://x.example/")
    assert all(f"Guide {i} explains step {i} of the setup." in page.text for i in range(3))
    one = extract_html("<html><body><div class='content'>Menu</div><div class='content'><p>"
                       + "The whole article text is here, long enough to be the content. " * 5
                       + "</p></div></body></html>", "https://x.example/")
    assert "Menu" not in one.text and "The whole article text" in one.text


def test_thousands_of_nested_elements_are_read():
    deep = "<div>" * 5000 + "<p>Deep text is still content.</p>" + "</div>" * 5000
    assert extract_html(f"<html><body>{deep}</body></html>", "https://x.example/").text == "Deep text is still content."


def _sections(html: str) -> list[tuple[str, list[str]]]:
    return [(s.heading, s.paragraphs) for s in extract_html(html, "https://help.example/x").sections]


def test_content_tabs_are_sections_headed_by_their_label_and_the_section_goes_on_after_them():
    aria = """<main><h2>Update now<a class="hash-link" href="#update">\u200b</a></h2><p>Pick your device.</p>
    <div class="tabs-container"><ul role="tablist"><li role="tab">iOS</li><li role="tab">Android</li></ul>
    <div><div role="tabpanel"><p>Tap Check now.</p></div><div role="tabpanel" hidden>Tap Install now.</div></div></div>
    <p>Nodes restart for 8 minutes.</p><h2>Channels</h2><p>Stable is the default.</p></main>"""
    assert _sections(aria) == [
        ("Update now", ["Pick your device."]), ("Update now (iOS)", ["Tap Check now."]),
        ("Update now (Android)", ["Tap Install now."]), ("Update now", ["Nodes restart for 8 minutes."]),
        ("Channels", ["Stable is the default."])]
    mkdocs = """<article class="md-content__inner"><h2>Guest Wi-Fi<a class="headerlink" href="#g">¶</a></h2>
    <div class="tabbed-set"><input type="radio" id="t1" checked><input type="radio" id="t2">
    <div class="tabbed-labels"><label for="t1">iOS</label><label for="t2">Web dashboard</label></div>
    <div class="tabbed-content"><div class="tabbed-block"><ol><li>Tap Done.</li></ol></div>
    <div class="tabbed-block"><p>Click Save.</p></div></div></div></article>"""
    assert _sections(mkdocs) == [("Guest Wi-Fi (iOS)", ["Tap Done."]), ("Guest Wi-Fi (Web dashboard)", ["Click Save."])]


def test_a_callout_s_own_title_heads_its_text_and_a_title_naming_its_kind_is_dropped():
    html = """<main><h2>Limits</h2><p>Up to 50 guests.</p>
    <div class="admonition tip"><p class="admonition-title">Rotate the password</p><p>Turn on Rotate.</p></div>
    <div class="theme-admonition alert"><div class="admonitionHeading_x"><svg></svg>warning</div>
    <div class="admonitionContent_y"><p>Not in bridge mode.</p></div></div><p>Guests get IPv6.</p></main>"""
    assert _sections(html) == [("Limits", ["Up to 50 guests."]), ("Rotate the password", ["Turn on Rotate."]),
                               ("Limits", ["Not in bridge mode.", "Guests get IPv6."])]


def test_cells_spanning_rows_and_columns_stand_in_each_place_they_cover():
    html = """<main><table><thead><tr><th>Group</th><th>Feature</th><th>Lite</th><th>Duo</th><th>Max</th></tr></thead>
    <tbody><tr><td rowspan="2">Physical</td><th scope="row">Weight</th><td>240 g</td><td>465 g</td><td>1.09 kg</td></tr>
    <tr><th scope="row">Warranty</th><td colspan="2">2 years</td><td>3 years</td></tr>
    <tr><th scope="row">Nodes</th><td colspan="3">Up to 8</td></tr></tbody></table>
    <table><thead><tr><th rowspan="2">Feature</th><th colspan="2">One</th></tr><tr><th>Value</th><th>Notes</th></tr></thead>
    <tr><td>Price</td><td>€649</td><td>Chalk or Slate</td></tr></table></main>"""
    assert _sections(html)[0][1] == [
        "Physical – Weight — Lite: 240 g; Duo: 465 g; Max: 1.09 kg",
        "Physical – Warranty — Lite, Duo: 2 years; Max: 3 years",
        "Nodes: Up to 8",                           # the group spans two rows only
        "Price — One Value: €649; One Notes: Chalk or Slate"]


def test_sphinx_design_tab_sets_and_nested_tab_sets_keep_their_own_labels():
    html = """<div role="main"><h2>Install</h2><div class="sd-tab-set docutils">
    <input checked id="a" type="radio"><label class="sd-tab-label" for="a">pip</label>
    <div class="sd-tab-content docutils"><p>Run pip install.</p>
      <div class="tabbed-set"><input id="c" type="radio"><div class="tabbed-labels"><label for="c">Linux</label></div>
      <div class="tabbed-content"><div class="tabbed-block"><p>Use python3.</p></div></div></div></div>
    <input id="b" type="radio"><label class="sd-tab-label" for="b">conda</label>
    <div class="sd-tab-content docutils"><p>Run conda install.</p></div></div></div>"""
    assert _sections(html) == [("Install (pip)", ["Run pip install."]), ("Install (pip) (Linux)", ["Use python3."]),
                               ("Install (conda)", ["Run conda install."])]


def test_an_accordion_s_button_heads_its_panel_and_other_buttons_are_dropped():
    html = """<main><h1>Troubleshooting</h1>
    <div class="accordion"><h2 class="accordion-header"><button class="accordion-button" data-bs-toggle="collapse"
      data-bs-target="#c1" aria-expanded="false" aria-controls="c1">How do I reset the device?</button></h2>
      <div id="c1" class="accordion-collapse collapse"><div class="accordion-body">Hold the power button for 10
      seconds.</div></div></div>
    <div class="faq-item"><button aria-expanded="false" aria-controls="f2">Why is the <em>light</em> red?</button>
      <div id="f2" hidden>The battery is below 10 percent.</div></div>
    <p>Still stuck? <button type="button">Chat with us</button></p></main>"""
    assert _sections(html) == [("Troubleshooting", []), ("How do I reset the device?", ["Hold the power button for 10 seconds."]),
                               ("Why is the light red?", ["The battery is below 10 percent.", "Still stuck?"])]


def test_an_element_whose_aria_role_is_heading_is_a_heading():
    html = """<div class="article"><div role="heading" aria-level="1">Shipping</div>
    <div role="heading" aria-level="2">Delivery times</div><div>Orders ship within 2 business days.</div>
    <div role="heading" aria-level="2">Costs</div><div>Shipping is free over EUR 50.</div></div>"""
    assert _sections(html) == [("Shipping", []), ("Delivery times", ["Orders ship within 2 business days."]),
                               ("Costs", ["Shipping is free over EUR 50."])]


def test_markup_of_help_centre_platforms_keeps_its_content():
    """Markup real help-centre exports use: a <form> around the whole page (ASP.NET, DNN), an article's
    own <header> with its h1 and summary, a heading whose text is in a <div> (GitBook), blocks inside a
    custom element or a <span> (Salesforce), a code block in Prism's "code-toolbar" wrapper; a search form, the site's header, a camelCase-named menu and the page's votes, author and
    date are not content."""
    html = """<html><head><title>Meters</title></head><body><form id="Form" method="post">
    <header class="site"><a href="/">Severn</a> <form role="search"><input name="q"><span>Search help</span></form></header>
    <div id="dnn_MenuPane" class="menuPane"><div><a href="/bills">Bills and payments</a></div></div>
    <div class="contentPane"><article>
      <header><h1>Reading your meter</h1><p class="lead">Most meters are under the pavement outside.</p></header>
      <p>Written by Marta Kowalski · Updated over 2 months ago</p>
      <h2><div>How to read it</div></h2><p>Read the black numbers only.</p>
      <lightning-formatted-rich-text><span part="rich-text">
        <div class="slds-text-heading_medium">Average usage</div><div>A home of 4 people uses 165 cubic metres a year.</div>
      </span></lightning-formatted-rich-text>
      <div class="code-toolbar"><pre><code>meter read --id 42
meter send</code></pre></div>
      <div>Was this article helpful?</div><p>12 of 15 people found this helpful</p>
    </article></div></form></body></html>"""
    page = extract_html(html, "https://water.example/meters")
    assert [(s.heading, s.paragraphs) for s in page.sections] == [
        ("Reading your meter", ["Most meters are under the pavement outside."]),
        ("How to read it", ["Read the black numbers only."]),
        ("Average usage", ["A home of 4 people uses 165 cubic metres a year.", "meter read --id 42 meter send"]),
    ]
    for junk in ("Severn", "Search help", "Bills", "Marta", "helpful"):
        assert junk not in page.text


def test_two_tab_sets_in_one_container_find_their_panels_by_id():
    """Bootstrap writes a tab list and its panels as siblings: two tab sets in one container are told
    apart by the ids the tabs name; an inactive panel hidden with aria-hidden is content all the same."""
    html = """<html><body><main><h2>Choose a method</h2>
    <ul class="nav nav-tabs" role="tablist"><li><a role="tab" href="#app" aria-controls="app">Authenticator app</a></li>
      <li><a role="tab" href="#sms">Text message</a></li></ul>
    <div class="tab-content"><div class="tab-pane active" id="app" role="tabpanel"><p>Codes change every 30 seconds.</p></div>
      <div class="tab-pane" id="sms" role="tabpanel" aria-hidden="true"><p>Texted codes expire after 5 minutes.</p></div></div>
    <h2>Turning it off</h2>
    <ul class="nav nav-tabs" role="tablist"><li><a role="tab" href="#mobile">Mobile app</a></li>
      <li><a role="tab" href="#web">Online banking</a></li></ul>
    <div class="tab-content"><div id="mobile" role="tabpanel"><p>You cannot turn it off in the app.</p></div>
      <div id="web" role="tabpanel"><p>Call us to turn it off.</p></div></div>
    </main></body></html>"""
    page = extract_html(html, "https://bank.example/2fa")
    assert [(s.heading, s.paragraphs) for s in page.sections] == [
        ("Choose a method (Authenticator app)", ["Codes change every 30 seconds."]),
        ("Choose a method (Text message)", ["Texted codes expire after 5 minutes."]),
        ("Turning it off (Mobile app)", ["You cannot turn it off in the app."]),
        ("Turning it off (Online banking)", ["Call us to turn it off."]),
    ]


def test_an_accordion_scripted_by_class_heads_its_panel_and_a_long_question_stays_whole():
    long_question = ("If I sign up for an annual membership and move away from the area, "
                     "can I get a refund for the remaining months?")
    html = f"""<html><body><main><h2>Kit</h2>
    <button class="accordion">Do you rent climbing shoes?</button>
    <div class="panel"><p>Yes, shoe hire is 4 pounds.</p></div>
    <button type="button" aria-expanded="false" aria-controls="p1"><span>{long_question}</span></button>
    <div id="p1"><p>Yes, minus a 25 pound admin fee.</p></div>
    <button class="btn btn-primary">Book a session</button>
    </main></body></html>"""
    page = extract_html(html, "https://climb.example/faq")
    assert [(s.heading, s.paragraphs) for s in page.sections] == [
        ("Kit", []),
        ("Do you rent climbing shoes?", ["Yes, shoe hire is 4 pounds."]),
        (long_question, ["Yes, minus a 25 pound admin fee."]),
    ]


def test_a_table_whose_first_row_is_bold_has_that_row_as_its_head():
    """Help-centre editors (Zendesk, Intercom, Freshdesk) write a table's head as a bold first row of <td>s."""
    html = """<html><body><main><h2>Payouts</h2><table><tbody>
    <tr><td><strong>Plan</strong></td><td><strong>Payout schedule</strong></td><td><b>Instant payouts</b></td></tr>
    <tr><td>Starter</td><td>Weekly</td><td>No</td></tr><tr><td>Scale</td><td>Daily</td><td>Yes</td></tr></tbody></table>
    <table><tr><td><strong>Note:</strong> fees apply</td><td>to all plans</td></tr><tr><td>Refunds</td><td>none</td></tr></table>
    </main></body></html>"""
    page = extract_html(html, "https://pay.example/payouts")
    assert page.sections[0].paragraphs == [
        "Starter — Payout schedule: Weekly; Instant payouts: No",
        "Scale — Payout schedule: Daily; Instant payouts: Yes",
        "Note: fees apply: to all plans",    # bold only in part: a row like the others
        "Refunds: none",
    ]


def test_the_article_holding_the_h1_is_the_content_among_other_articles_cards():
    """A knowledge-base theme without <main>: the page's <article> beside "More in this category" cards
    that outweigh it; the article with the page's h1 is the content. A date line is the page's, not the text's."""
    cards = "".join(f"<article><h3>Card {i}</h3><p>{'Another article about paper and prints. ' * 6}</p></article>"
                    for i in range(4))
    html = f"""<html><body><div id="content"><article><h1>Custom sizes</h1><p>Updated on 2 April 2024</p>
    <p>Prints come in any size from 9x13 cm to 60x90 cm.</p></article>
    <section><h2>More in Printing</h2>{cards}</section></div></body></html>"""
    page = extract_html(html, "https://prints.example/kb/custom-sizes")
    assert [(s.heading, s.paragraphs) for s in page.sections] == [
        ("Custom sizes", ["Prints come in any size from 9x13 cm to 60x90 cm."])]


def test_an_faq_stated_only_as_structured_data_is_read():
    """A page whose FAQ is rendered by a script shows none of it in its HTML; its schema.org FAQPage
    (JSON-LD, for search engines) has every question and answer. Questions the HTML shows are not repeated."""
    ld = {"@context": "https://schema.org", "@graph": [{"@type": "WebPage", "name": "FAQ"}, {
        "@type": "FAQPage", "mainEntity": [
            {"@type": "Question", "name": "Can I bring a guest?",
             "acceptedAnswer": {"@type": "Answer", "text": "<p>Yes, one guest per visit for <b>12 pounds</b>.</p>"}},
            {"@type": "Question", "name": "Do you rent shoes?",
             "acceptedAnswer": {"@type": "Answer", "text": "Shoe hire is 4 pounds."}}]}]}
    html = f"""<html><head><script type="application/ld+json">{json.dumps(ld)}</script>
    <script type="application/ld+json">{{not json</script></head>
    <body><main><h1>Membership FAQ</h1><h2>Do you rent shoes?</h2><p>Shoe hire is 4 pounds.</p>
    <div id="faq-app"></div></main></body></html>"""
    page = extract_html(html, "https://climb.example/faq")
    assert [(s.heading, s.paragraphs) for s in page.sections] == [
        ("Membership FAQ", []), ("Do you rent shoes?", ["Shoe hire is 4 pounds."]),
        ("Can I bring a guest?", ["Yes, one guest per visit for 12 pounds."])]


def test_elements_nested_thousands_deep_are_read():
    """Custom elements nested 20,000 deep around one block: each level is a container, its text a
    paragraph, the block at the bottom read too (whether an element holds blocks is found once per
    page: a query of each element's subtree was quadratic in such a page)."""
    depth = 20_000
    html = "<html><body><main><div>" + "<x-a>y " * depth + "<p>z</p>" + "</x-a>" * depth + "</div></main></body></html>"
    page = extract_html(html, "https://x.example/")
    assert page.sections[0].paragraphs[-1] == "z" and page.text.count("y") == depth


def test_a_declarative_shadow_root_is_read_where_it_stands_and_an_inert_template_is_not():
    """<template shadowrootmode> is rendered by the browser in place (a web component's table); a
    plain <template> is markup a script may clone, never shown as it is."""
    html = """<html><body><main><h1>Tariffs</h1><p>Off-peak charging follows your tariff.</p>
    <tariff-table><template shadowrootmode="open"><style>table{}</style><h2>Supported tariffs</h2>
    <table><tr><th>Supplier</th><th>Window</th></tr><tr><td>EDF</td><td>00:00 to 05:00</td></tr></table>
    </template></tariff-table>
    <template id="row"><p>Placeholder row</p></template></main></body></html>"""
    page = extract_html(html, "https://volt.example/tariffs")
    assert [(s.heading, s.paragraphs) for s in page.sections] == [
        ("Tariffs", ["Off-peak charging follows your tariff."]),
        ("Supported tariffs", ["EDF — Window: 00:00 to 05:00"])]


def test_an_article_given_only_in_noscript_is_read_and_a_javascript_notice_is_not():
    """An app shell whose article a script renders, pre-rendered inside <noscript>: the page shows
    nothing else, so the <noscript> content is the page; its "needs JavaScript" notice is not."""
    shell = """<html><head><title>Schedules - Volt Help</title></head><body>
    <noscript><iframe src="https://tags.example/ns.html"></iframe></noscript>
    <div id="app"><div class="topbar"><a href="/">Volt Help</a></div></div>
    <noscript><div><h1>Scheduling</h1><p>Schedules are stored on the charger, so they keep working when
    the Wi-Fi drops.</p><h2>Boost</h2><p>Boost mode charges at full power (7.4 kW) for 60 minutes.</p></div></noscript>
    <noscript><div>Live chat needs JavaScript. Email help@volt.example instead.</div></noscript></body></html>"""
    page = extract_html(shell, "https://volt.example/schedules")
    assert [s.heading for s in page.sections] == ["Scheduling", "Boost"]
    assert "7.4 kW" in page.text and "JavaScript" not in page.text

    # A page with content of its own: its <noscript> is only a notice, whatever it says.
    page = extract_html(PAGE.replace("</main>", "<noscript><p>Please turn on scripts to vote.</p></noscript></main>"),
                        "https://shop.example/x")
    assert "Annual plans are refunded within 14 days." in page.text and "vote" not in page.text


def test_lines_of_code_broken_by_br_get_no_comma_between_them():
    """A list's lines broken by <br> read "Mon-Fri 9-18, Sat 10-14"; a code block's (Prism, Docusaurus)
    must not: a comma after "--status" would change the command."""
    html = """<main><h1>Sync</h1><p>Opening hours:<br>Mon-Fri 9-18<br>Sat 10-14</p>
    <pre><code><span>tally sync --status</span><br><span>tally sync --force</span><br></code></pre></main>"""
    page = extract_html(html, "https://tally.example/sync")
    assert page.sections[0].paragraphs == ["Opening hours: Mon-Fri 9-18, Sat 10-14",
                                           "tally sync --status tally sync --force"]


def test_a_pages_copyright_pager_and_update_byline_are_dropped_and_sentences_like_them_are_not():
    html = """<main><h1>Refunds</h1><p>Updated on 2 April 2024 by Lena Vogt</p>
    <p>Refunds take 5 days.</p><p>Copyright of your photos stays with you.</p>
    <p>Previous versions are kept until the next update</p>
    <div><a href="/a"><span>Previous</span><span>Plans</span></a><a href="/b"><span>Next</span><span>Invoices</span></a></div>
    <p>Copyright © 2024 Shop Ltd | Terms of use</p><p>© 2023 Shop Ltd · Impressum</p></main>"""
    page = extract_html(html, "https://shop.example/refunds")
    assert page.sections[0].paragraphs == ["Refunds take 5 days.", "Copyright of your photos stays with you.",
                                           "Previous versions are kept until the next update"]


def test_a_nav_of_text_is_content_and_a_nav_of_links_is_not():
    """Webflow's dropdown writes an FAQ's answer in a <nav>: text, not links, so it is read; a menu,
    a table of contents, a pager are links, and dropped."""
    html = """<body><nav class="navbar"><a href="/">Home</a> <a href="/faq">FAQ</a><p><a href="/book">Book now</a></p></nav>
    <main><h1>Rider FAQ</h1>
    <div class="faq-item w-dropdown"><div class="faq-question w-dropdown-toggle" role="button">
    <div class="faq-question-text">Is there a deposit?</div></div>
    <nav class="faq-answer w-dropdown-list"><div class="w-richtext"><p>We place a <strong>€150 hold</strong> on your
    card, released within 7 days (<a href="/terms">terms</a>).</p></div></nav></div>
    <nav aria-label="On this page"><ul><li><a href="#a">Deposit</a></li><li><a href="#b">Prices</a></li></ul></nav>
    </main></body>"""
    page = extract_html(html, "https://bikes.example/faq")
    assert [(s.heading, s.paragraphs) for s in page.sections] == [
        ("Rider FAQ", []),
        ("Is there a deposit?", ["We place a €150 hold on your card, released within 7 days (terms)."])]


def test_a_callouts_label_alone_screen_reader_text_reader_counts_and_footers_are_not_content():
    """VitePress' "TIP" over its callout's text heads nothing (the text stays in its section); text for
    screen readers only, "3 min read", "1,284 Views", a byline with "Updated 11 days ago", a <div> footer
    of the article (BetterDocs, Elementor) are the page's, not the product's."""
    html = """<body><a class="skip-link screen-reader-text" href="#c">Skip to content</a>
    <main><h1>Ignore rules</h1><p>Owned by Priya Natarajan Last updated: Mar 12, 2024</p><p>3 min read</p>
    <div class="article-info">Anjali Menon • Updated 11 days ago 1,284 Views</div>
    <div data-testid="reactions-container"><span>Be the first to like this</span></div><p>Did this page help you?</p>
    <p><span class="author">Support team</span> · Updated 14 October 2026</p>
    <p>Rules are read from the top.</p>
    <div class="tip custom-block"><p class="custom-block-title">TIP</p><p>Files over 5 GB need --multipart.</p></div>
    <h2>Important</h2><p>Patterns are case-sensitive.</p>
    <label class="sr-only" for="q">Search the knowledge base</label>
    <div class="betterdocs-entry-footer"><h5>What are your Feelings</h5><p>Powered by BetterDocs</p></div></main>
    <div data-elementor-type="footer"><p>Solwick Energy Ltd, Leeds</p></div></body>"""
    page = extract_html(html, "https://docs.example/ignore")
    assert [(s.heading, s.paragraphs) for s in page.sections] == [
        ("Ignore rules", ["Rules are read from the top.", "Files over 5 GB need --multipart."]),
        ("Important", ["Patterns are case-sensitive."])]


def test_a_two_column_table_with_a_head_keeps_the_values_heading_and_an_h1_above_the_content_heads_it():
    """"Days 8-14: 600" would lose what 600 counts; a key-value table without a head reads "Weight: 2 kg".
    Drupal's page-title block writes the page's h1 above the content region: it heads the intro."""
    html = """<body><div class="region--content-above"><h1 class="page-title">Warm-up schedule</h1></div>
    <div id="content"><p>New senders warm up over three weeks.</p>
    <table><thead><tr><th>Days since first send</th><th>Maximum per hour</th></tr></thead>
    <tbody><tr><td>Days 8–14</td><td>600</td></tr></tbody></table>
    <table><tr><td>Weight</td><td>2 kg</td></tr></table></div></body>"""
    page = extract_html(html, "https://mail.example/warm-up")
    assert [(s.heading, s.paragraphs) for s in page.sections] == [
        ("Warm-up schedule", ["New senders warm up over three weeks.", "Days 8–14 — Maximum per hour: 600",
                              "Weight: 2 kg"])]

    # A help centre's name in its banner's h1 is no article's title (the <title> does not start with it).
    banner = html.replace("<body>", "<head><title>Sending limits : Mailfox Support</title></head><body>").replace(
        "Warm-up schedule", "Mailfox Support")
    assert extract_html(banner, "https://mail.example/warm-up").sections[0].heading == ""


def test_an_icon_only_cell_reads_as_what_its_icon_means_and_a_row_spanning_cell_once():
    """Ticks and crosses in a plan comparison say "Included" in an alt text, an SVG's label or title, or
    text for screen readers only; a cell with words keeps its words; a note across the row reads once."""
    html = """<main><h2>Cover at a glance</h2><table><thead><tr><th>Cover</th><th>Essential</th><th>Complete</th></tr></thead>
    <tbody><tr><td>Dental illness</td><td><img src="tick.png" alt="Included"></td>
    <td><svg role="img" aria-label="Included"><use href="#tick"/></svg></td></tr>
    <tr><td>Behaviour</td><td><span class="icon-cross" aria-hidden="true"></span><span class="sr-only">Not included</span></td>
    <td><svg role="img"><title>Up to</title></svg> £500</td></tr>
    <tr><td colspan="3">Claims over £1,000 need a vet's report.</td></tr></tbody></table></main>"""
    assert _sections(html)[0][1] == [
        "Dental illness — Essential: Included; Complete: Included",
        "Behaviour — Essential: Not included; Complete: £500",
        "Claims over £1,000 need a vet's report."]


def test_the_text_after_a_grid_of_cards_goes_on_under_the_heading_the_grid_is_in():
    """Cards (or steps) written as boxes with their own headings: the text after the grid is the section's,
    not the last card's. A heading wrapped alone in a <div> (Intercom writes each so) still heads what follows."""
    html = """<main><h1>Plans</h1><h2>Prices</h2><div class="cards">
    <div class="card"><h3>Solo</h3><p>£8 a month.</p></div><div class="card"><h3>Family</h3><p>£14 a month.</p></div></div>
    <p>Students get 40% off Solo.</p>
    <div class="subheading"><h2>Billing</h2></div><p>You are billed monthly.</p>
    <div class="subheading"><h3>Refunds</h3></div><p>Within 14 days.</p></main>"""
    assert _sections(html) == [("Plans", []), ("Prices", []), ("Solo", ["£8 a month."]), ("Family", ["£14 a month."]),
                               ("Prices", ["Students get 40% off Solo."]), ("Billing", ["You are billed monthly."]),
                               ("Refunds", ["Within 14 days."])]


def test_an_article_title_in_an_h2_above_the_content_heads_it_beside_a_banners_h1():
    """Freshdesk: the help centre's name in the banner's h1, the article's title in an h2 with a Print
    link, above the article body: the <title>'s first part is the heading, the banner's name is not."""
    html = """<html><head><title>Why was I charged twice? : Brightwave Support</title></head><body>
    <header class="banner"><h1 class="heading">Brightwave Support</h1></header>
    <section class="main"><h2 class="heading">Why was I charged twice? <a href="javascript:print();">Print</a></h2>
    <article class="article-body"><p>Most double charges are a pending authorisation.</p>
    <h3>Refunds</h3><p>Within 5 working days.</p></article></section></body></html>"""
    page = extract_html(html, "https://help.example/charged-twice")
    assert [(s.heading, s.paragraphs) for s in page.sections] == [
        ("Why was I charged twice?", ["Most double charges are a pending authorisation."]),
        ("Refunds", ["Within 5 working days."])]


def test_a_heading_wrapped_with_its_permalink_heads_what_follows_and_invisible_characters_are_no_text():
    """Starlight wraps each heading with an icon link to it in a <div>: still a heading of the section, not a
    box of its own. A theme's zero-width-space placeholder is no heading; a soft hyphen does not split a word."""
    html = """<main><h1>Bandwidth limits</h1><p>Caps are per device.</p>
    <div class="sl-heading-wrapper level-h2"><h2 id="global">Set a global limit</h2><a class="sl-anchor-link" href="#global">
    <span aria-hidden="true"><svg><path d="m1 1"/></svg></span><span class="sr-only">Section titled “Set a global limit”</span></a></div>
    <p>The lowest accepted value is 64 KB/s.</p>
    <div class="card"><h3>Schedules</h3><a href="/s">Open schedules</a></div><p>Presets follow the local clock.</p>
    <div class="tab-nav-title">&#8203;</div><p>Overnight caps are off by de&shy;fault.</p></main>"""
    assert _sections(html) == [("Bandwidth limits", ["Caps are per device."]),
                               ("Set a global limit", ["The lowest accepted value is 64 KB/s."]),
                               ("Schedules", ["Open schedules"]),
                               ("Set a global limit", ["Presets follow the local clock.",
                                                       "Overnight caps are off by default."])]


def test_a_collapsed_panel_its_toggle_opens_is_content_and_a_print_hidden_pager_is_not():
    """SharePoint's collapsible section: the panel is display:none and aria-hidden until its header (with
    aria-controls and aria-expanded) opens it; the title in that header is a <span role="heading">. Hidden
    parts nothing opens stay out, as does a pager Tailwind hides from print (Nextra)."""
    html = """<main><h1>Remote access</h1><p>Sessions last 12 hours.</p>
    <div class="CanvasZone--collapsible"><div role="button" aria-expanded="false" aria-controls="zone-1">
    <span class="CanvasZone-collapsibleTitle" role="heading" aria-level="2">Troubleshooting</span>
    <i aria-hidden="true" class="icon"></i></div>
    <div id="zone-1" style="display: none;" aria-hidden="true"><p>Error 809: UDP ports 500 and 4500 are blocked.</p></div></div>
    <div aria-hidden="true"><p>Decorative duplicate of the title.</p></div>
    <div class="mb-8 flex print:hidden"><a title="Cursor pagination" href="/p">Cursor pagination</a>
    <a title="Webhook signatures" href="/w">Webhook signatures</a></div></main>"""
    assert _sections(html) == [("Remote access", ["Sessions last 12 hours."]),
                               ("Troubleshooting", ["Error 809: UDP ports 500 and 4500 are blocked."])]


def test_links_about_the_page_and_a_last_modified_commit_line_are_dropped_and_sentences_like_them_are_not():
    """Docsy's "Last modified <date>: <commit message> (hash)", a line of links about the page itself, and
    Zendesk's "Have more questions? Submit a request" and "Return to top" boxes are no content."""
    html = """<main><h1>Plans</h1><p>Pro costs $12 a month.</p>
    <p>Edit this page to change your plan name.</p><p>Updated 2 April 2024: new colours (facade)</p>
    <div class="td-page-meta__lastmod">Last modified March 4, 2024: <a href="/c/a1b2c3d">Clarify pricing (a1b2c3d)</a></div>
    <p><a href="/edit">Edit this page</a> &middot; <a href="/issues">Report a problem</a></p>
    <div class="article-more-questions">Have more questions? <a href="/requests/new">Submit a request</a></div>
    <div class="article-return-to-top"><a href="#top">Return to top</a></div></main>"""
    assert _sections(html) == [("Plans", ["Pro costs $12 a month.", "Edit this page to change your plan name.",
                                          "Updated 2 April 2024: new colours (facade)"])]


def test_a_parts_meta_line_tags_and_a_breadcrumb_nav_are_furniture_and_an_aria_grid_is_a_table():
    """CMS themes' meta lines (WordPress' entry-meta and post date, Drupal's node__meta, Joomla's
    article-info list, Salesforce's article-meta-row), a tags field, a breadcrumb written as text in a
    <nav> (Rank Math) are no content; HubSpot's rich-text wrapper named ..._meta_field holds the article.
    A table of ARIA grid roles (Coda) reads as a table."""
    html = """<main><nav class="rank-math-breadcrumb"><p><a href="/">Home</a> &raquo; Help</p></nav>
    <h1>Deliveries</h1><div class="entry-meta"><time class="wp-block-post-date">March 4, 2024</time></div>
    <div class="node__meta">By webteam, 12 March, 2024</div>
    <dl class="article-info"><dt>Details</dt><dd class="createdby">Written by: Sara Holt</dd><dd>Hits: 2714</dd></dl>
    <span class="hs_cos_wrapper hs_cos_wrapper_meta_field"><p>We deliver on Tuesdays.</p></span>
    <div class="slds-grid article-meta-row"><span>Article Number</span><span>000012345</span></div>
    <div role="grid"><div role="row"><span role="columnheader">Box</span><span role="columnheader">Price</span></div>
    <div role="row"><span role="gridcell">Small</span><span role="gridcell">£20</span></div></div>
    <div class="field--tags"><div class="field__label">Tags</div><a href="/t/1">Resident services</a></div></main>"""
    assert _sections(html) == [("Deliveries", ["We deliver on Tuesdays.", "Small — Price: £20"])]


def test_a_link_that_is_a_button_is_an_action_and_a_disclosure_link_is_read():
    """Zendesk's article header: <a role="button">Follow</a> is no text; a link that opens an answer
    (aria-expanded) heads it."""
    html = """<main><h1>Claims</h1><a class="article-subscribe" role="button" href="/sub">Follow</a>
    <p>Claims are paid within 10 days.</p>
    <a role="button" aria-expanded="false" aria-controls="a1" href="#a1">Can I claim twice?</a>
    <div id="a1"><p>Yes, once per policy year each.</p></div></main>"""
    assert _sections(html) == [("Claims", ["Claims are paid within 10 days."]),
                               ("Can I claim twice?", ["Yes, once per policy year each."])]


def test_a_small_box_asking_the_reader_to_get_in_touch_is_dropped_and_the_words_in_the_text_are_not():
    """Help-centre themes close each article with "Still need help? … Contact us" (Heroic KB, Zoho Desk,
    Bootstrap cards): the box goes whole; a section of the article under the same words stays."""
    long_answer = "Call 0800 123 456 on weekdays between 9:00 and 17:00, or write to help@example.com. " * 4
    html = f"""<main><h1>Returns</h1><p>Returns are free within 30 days. Still need help? Ask in the shop.</p>
    <section class="hkb-article__contact"><h3>Still need help?</h3><p>Our team replies within one working day.</p>
    <a href="/contact">Contact us</a></section>
    <div class="card"><div class="card-body"><h2 class="h5">Can't find what you're looking for?</h2>
    <a href="/new">Submit a ticket</a></div></div>
    <div><h2>Need help?</h2><p>{long_answer}</p></div></main>"""
    sections = _sections(html)
    assert sections[0] == ("Returns", ["Returns are free within 30 days. Still need help? Ask in the shop."])
    assert sections[1][0] == "Need help?" and len(sections) == 2


def test_controls_written_as_other_elements_and_the_platforms_credit_line_are_not_content():
    """A chat launcher's <div role="button">, a row of links styled as buttons (KnowledgeOwl's Print /
    Subscribe / Download PDF) and "Powered by …" are no text; a question in a role=button (an accordion
    head without ARIA state) and a link styled as a button inside a sentence stay."""
    html = """<main><h1>Invoices</h1><div class="hg-article-buttons"><a class="btn btn-sm" href="#">Print</a>
    <a class="btn btn-sm" href="/sub">Subscribe to article</a><a class="btn" href="/pdf">Download PDF</a></div>
    <p>Invoices are sent on the 1st. <a class="btn" href="/pay">Pay now</a> or within 14 days.</p>
    <div role="button" class="faq-q">Can I change the date?</div><div class="faq-a"><p>Yes, once a year.</p></div>
    <div class="zl-powered-by">Powered by Zoho Learn</div></main>
    <div role="button" class="LaChatButton">Chat with us</div>"""
    assert _sections(html) == [("Invoices", ["Invoices are sent on the 1st. Pay now or within 14 days.",
                                             "Can I change the date?", "Yes, once a year."])]


def test_an_faq_in_json_ld_the_page_shows_with_curly_quotes_is_read_once_and_icons_alone_are_no_text():
    """Rank Math writes the FAQ's JSON-LD with "I'm" and the page with "I’m": the same question, read once.
    A callout's icon alone ("💡", Ghost) is no paragraph."""
    ld = json.dumps({"@context": "https://schema.org", "@type": "FAQPage", "mainEntity": [
        {"@type": "Question", "name": "What happens if I'm not home?",
         "acceptedAnswer": {"@type": "Answer", "text": "We leave the box with a neighbour."}}]})
    html = f"""<html><head><script type="application/ld+json">{ld}</script></head><body><main><h1>Delivery</h1>
    <div class="kg-callout-card"><div class="kg-callout-emoji">💡</div><div class="kg-callout-text">Boxes stay cold for 24 hours.</div></div>
    <h3>What happens if I’m not home?</h3><p>We leave the box with a neighbour.</p></main></body></html>"""
    assert _sections(html) == [("Delivery", ["Boxes stay cold for 24 hours."]),
                               ("What happens if I’m not home?", ["We leave the box with a neighbour."])]


def test_a_wrapper_named_by_what_it_is_not_a_header_in_main_s_role_and_a_price_menu_are_read_as_they_are():
    """Weebly's content is <div class="wsite-not-footer">; GoDaddy's site builder gives its header widget
    role="main" (the FAQ is outside it) and names a price list "widget-menu"; a link menu stays out."""
    weebly = """<body><div id="wsite-content" class="wsite-elements wsite-not-footer"><h2>Classes</h2>
    <p>A taster evening costs £35 and lasts 2 hours.</p></div><div class="wsite-footer">© Studio</div></body>"""
    assert _sections(weebly) == [("Classes", ["A taster evening costs £35 and lasts 2 hours."])]
    godaddy = """<body><div data-ux="Header" role="main"><a href="/">Pawfect Grooming</a>
    <ul class="nav-menu"><li><a href="/">Home</a></li><li><a href="/faq">FAQ</a></li></ul></div>
    <div class="widget widget-faq"><h1>Frequently Asked Questions</h1>
    <h4>How long does a groom take?</h4><p>Most dogs are ready within 3 hours, and we text you when they are.</p></div>
    <div class="widget widget-menu widget-menu-menu-4"><h2>Grooming Prices</h2>
    <h4>Full groom, up to 25 lb</h4><p>$65.00</p><p>Bath, breed-style haircut, nails and ears.</p></div></body>"""
    sections = _sections(godaddy)
    assert ("How long does a groom take?", ["Most dogs are ready within 3 hours, and we text you when they are."]) in sections
    assert ("Full groom, up to 25 lb", ["$65.00", "Bath, breed-style haircut, nails and ears."]) in sections
    assert not any("Home" in line for _, lines in sections for line in lines)


def test_an_accordion_written_as_a_tab_list_keeps_its_panels():
    """Odoo's FAQ snippet: role=tablist around both the questions (role=tab, data-bs-target) and the
    answers (role=tabpanel); the questions head the answers."""
    html = """<main><h1>Aquarium care</h1><div id="acc" class="accordion" role="tablist">
    <div class="card"><a href="#" role="tab" data-bs-toggle="collapse" aria-expanded="false" data-bs-target="#t1">How should I acclimatise new fish?</a>
    <div class="collapse" role="tabpanel" id="t1"><div class="card-body"><p>Float the sealed bag for 15 minutes.</p></div></div></div>
    <div class="card"><a href="#" role="tab" data-bs-toggle="collapse" aria-expanded="false" data-bs-target="#t2">Can I collect my order?</a>
    <div class="collapse" role="tabpanel" id="t2"><div class="card-body"><p>Yes, Thursday to Saturday 10:00–16:00.</p></div></div></div>
    </div></main>"""
    text = extract_html(html, "http://x.test/a").text
    assert "Float the sealed bag for 15 minutes." in text and "Thursday to Saturday 10:00–16:00" in text
    assert text.index("How should I acclimatise new fish?") < text.index("Float the sealed bag")


def test_a_button_holding_a_paragraph_is_text_and_more_page_furniture_of_docs_and_wikis_goes():
    """Redoc writes an operation's responses as buttons; Docusaurus' version badge, XWiki's last-modified
    line and side panels (role=complementary), DokuWiki's docInfo, Slab's verification line and
    contact boxes ("Still stuck? How can we help?", "Still need help with this?") are about the page."""
    html = """<body><div id="rightPanels" class="panels right" role="complementary"><div class="panel">
    <h1 class="xwikipaneltitle">Quick Links</h1><ul><li><a href="/a">Safety contacts</a></li></ul></div></div>
    <main><span class="theme-doc-version-badge badge">Version: 4.0</span><h1>Refunds</h1>
    <div class="xdocLastModification">Last modified by Mercy Okafor on 2024/02/11</div>
    <div class="post-verification"><span>Verified by Ines Carvalho · Expires in 3 months</span></div>
    <h3>Responses</h3><button class="sc-gsDKAQ"><strong>409 </strong><div class="redoc-markdown">
    <p>The shipment has already been fully refunded</p></div></button><button>Copy</button>
    <p>Refunds are paid within 5 business days.</p>
    <div class="csh-contact"><p class="csh-contact-title">Still stuck? How can we help?</p><a class="csh-contact-button" href="/chat">Chat with us</a></div>
    <div class="cv-kb-article-contact"><p>Still need help with this?</p><a href="/c">Contact us about this article</a></div>
    <div class="docInfo"><bdi>refunds.txt</bdi> · Last modified: 2024/03/14 10:12 by mkoenig</div></main></body>"""
    assert _sections(html) == [("Refunds", []), ("Responses", ["409 The shipment has already been fully refunded",
                                                                   "Refunds are paid within 5 business days."])]


def test_a_list_naming_the_page_s_headings_is_its_table_of_contents_and_a_bold_styled_row_heads_a_table():
    """Wiki.js writes its table of contents as <div role="list"> items without links (with the label
    "Table of Contents"); Jimdo's editor bolds a table's head row with an inline style."""
    html = """<body><div class="toc-card"><div class="overline">Table of Contents</div><div role="list">
    <div role="listitem"><div class="v-list-item__title">Requirements</div></div>
    <div role="listitem"><div class="v-list-item__title">Delivery costs</div></div></div></div>
    <main><h1>Ordering honey</h1><p>We deliver across the country.</p>
    <h2>Requirements</h2><p>Orders need at least 2 jars.</p>
    <h2>Delivery costs</h2><table class="j-table"><tr><td><span style="font-weight: bold;">Order</span></td>
    <td><span style="font-weight: bold;">Cost</span></td></tr><tr><td>2–6 jars</td><td>€4.90</td></tr>
    <tr><td>7 jars or more</td><td>free</td></tr></table>
    <ul><li>Jars are packed in paper.</li><li>Requirements differ abroad.</li></ul></main></body>"""
    sections = _sections(html)
    assert sections[0] == ("Ordering honey", ["We deliver across the country."])
    assert sections[1] == ("Requirements", ["Orders need at least 2 jars."])
    assert sections[2][0] == "Delivery costs" and "7 jars or more — Cost: free" in sections[2][1]
    assert "Jars are packed in paper." in sections[2][1] and len(sections) == 3


def test_lists_of_other_articles_under_their_heading_and_a_category_tag_are_not_content():
    """"More in <collection>" (Front), "Related articles" in a section named only by its data-testid
    (LiveChat), "Popular articles" right before its list; a contact box asking "Didn't find what you were
    looking for?" (Re:amaze); a category tag above the title (Webflow). A section whose links are a
    sentence's stays."""
    html = """<main><div class="article-category-tag">Installation</div><h1>Paying staff</h1>
    <p>Payroll runs on the 25th; see <a href="/a">pay dates</a>.</p>
    <h2>See also</h2><p>Payslips are emailed the same day, as <a href="/b">payslips</a> explains.</p>
    <section aria-labelledby="more"><h2 id="more">More in Running payroll</h2><ul><li><a href="/c">Changing your pay date</a></li>
    <li><a href="/d">Paying a leaver</a></li></ul></section>
    <section data-testid="related-articles"><h2>Related reading</h2><ul><li><a href="/e">Bringing a guest</a></li></ul></section>
    <h3>Popular articles</h3><ul><li><a href="/f">Plans and pricing</a></li><li><a href="/g">Refunds</a></li></ul>
    <div class="faq-contact-cta well"><h4>Didn't find what you were looking for?</h4><p>Our crew replies within a few hours.</p>
    <a class="btn btn-primary" href="/contact">Contact Us</a></div></main>"""
    assert _sections(html) == [("Paying staff", ["Payroll runs on the 25th; see pay dates."]),
                               ("See also", ["Payslips are emailed the same day, as payslips explains."])]


def test_streamed_react_content_a_gov_uk_accordion_and_its_controls_read_as_shown():
    """Next.js streams a Suspense boundary's content into <div hidden id="S:0">, which $RC puts in place
    of the fallback; GOV.UK's accordion buttons carry a visually hidden comma and a "Show" state word,
    and a "Show all sections" control."""
    streamed = """<body><main><h1>Disputes</h1><h2>Timeline</h2><!--$?--><template id="B:0"></template>
    <div class="animate-pulse">Loading…</div><!--/$--><h2>Contact</h2><p>Call us on 0800 000.</p></main>
    <div hidden id="S:0"><p>A merchant has up to 45 days to respond.</p></div>
    <script>$RC("B:0","S:0")</script></body>"""
    assert _sections(streamed) == [("Disputes", []), ("Timeline", ["A merchant has up to 45 days to respond."]),
                                   ("Contact", ["Call us on 0800 000."])]
    unclosed = streamed.replace("<!--/$-->", "")     # no end of the boundary: nothing after it goes
    assert ("Contact", ["Call us on 0800 000."]) in _sections(unclosed)
    govuk = """<main><h1>Apply</h1><div class="govuk-accordion__controls"><button type="button"
    class="govuk-accordion__show-all" aria-expanded="false"><span>Show all sections</span></button></div>
    <h3 class="govuk-accordion__section-heading"><button type="button" aria-controls="c1" aria-expanded="false">
    <span class="govuk-accordion__section-heading-text">Check you are eligible</span>
    <span class="govuk-visually-hidden">, </span><span class="govuk-accordion__section-toggle">
    <span class="govuk-accordion__section-toggle-text">Show</span></span></button></h3>
    <div id="c1" class="govuk-accordion__section-content"><p>You must be 18 or over.</p></div></main>"""
    assert _sections(govuk) == [("Apply", []), ("Check you are eligible", ["You must be 18 or over."])]


def test_a_tab_naming_its_panel_by_its_link_and_a_related_list_in_wrappers_of_its_own():
    """Magento Page Builder: <li role="tab"><a href="#id"> names a panel that has no tabpanel role;
    Liferay's Asset Publisher: the "Related help" heading and its list each in wrappers of their own."""
    html = """<main><h1>Delivery</h1><ul role="tablist" class="tabs-navigation">
    <li role="tab" class="tab-header"><a href="#T1" class="tab-title"><span>Tools</span></a></li>
    <li role="tab" class="tab-header"><a href="#T2" class="tab-title"><span>Live plants</span></a></li></ul>
    <div class="tabs-content"><div data-content-type="tab-item" id="T1"><p>Tools ship within 2 days.</p></div>
    <div data-content-type="tab-item" id="T2"><p>Plants ship on Mondays only.</p></div></div>
    <section class="portlet"><div class="portlet-content"><div class="portlet-header"><div><h2 class="portlet-title-text">Related help</h2></div></div>
    <div class="portlet-content-container"><div class="portlet-body"><ul class="title-list">
    <li><a href="/a">What to do after a burst pipe</a></li><li><a href="/b">How to make a complaint</a></li></ul></div></div>
    </div></section></main>"""
    sections = _sections(html)
    assert [s for s in sections if s[1]] == [("Delivery (Tools)", ["Tools ship within 2 days."]),
                                            ("Delivery (Live plants)", ["Plants ship on Mondays only."])]
    assert not any("Related help" in s[0] for s in sections)


def test_a_short_block_bold_by_its_inline_style_is_a_heading():
    """Salesforce's and page builders' rich text: <div style="font-size:18px;font-weight:700"> heads what
    follows; a bold sentence (it ends with a full stop) stays a sentence."""
    html = """<main><h1>Scooter battery</h1><div>A full charge takes 6.5 hours.</div>
    <div style="font-size:18px;font-weight:700;margin-top:16px">Range in winter</div>
    <div>Below 5 °C, expect about 30% less range.</div>
    <div style="font-weight: bold">Never charge below 0 °C.</div></main>"""
    assert _sections(html) == [("Scooter battery", ["A full charge takes 6.5 hours."]),
                               ("Range in winter", ["Below 5 °C, expect about 30% less range.", "Never charge below 0 °C."])]


def test_panels_hidden_until_their_toggle_opens_them_are_read_and_a_hidden_menu_is_not():
    """The WAI-ARIA accordion: a <button aria-expanded aria-controls> (in a heading or not) and its
    aria-hidden panel; Coda's collapsed heading: an icon button with aria-expanded and no aria-controls,
    the hidden content right after the heading's box. A hidden list of links behind a button stays out."""
    html = """<main><h1>Studio FAQ</h1>
    <h3><button aria-expanded="false" aria-controls="p1">Can I pause my plan?</button></h3>
    <div id="p1" aria-hidden="true"><p>Yes, for up to 3 months a year.</p></div>
    <button aria-expanded="false" aria-controls="p2">Do you invoice monthly?</button>
    <div id="p2" aria-hidden="true"><p>On the 1st of each month.</p></div>
    <div class="kr-collapsible"><button type="button" aria-expanded="false" aria-label="Expand section"><span aria-hidden="true"></span></button>
    <div role="heading" aria-level="3">Source files</div></div>
    <div class="kr-collapsed-content" aria-hidden="true"><p>Source files are included on the Studio package.</p></div>
    <div class="more"><button aria-expanded="false"></button><div aria-hidden="true"><ul><li><a href="/a">Home</a></li>
    <li><a href="/b">Pricing</a></li></ul></div></div></main>"""
    assert _sections(html) == [("Studio FAQ", []), ("Can I pause my plan?", ["Yes, for up to 3 months a year."]),
                               ("Do you invoice monthly?", ["On the 1st of each month."]),
                               ("Source files", ["Source files are included on the Studio package."])]


def test_a_bold_price_is_no_title_and_a_site_builder_s_badge_is_no_text():
    """Hosted builders bold a card's price by inline style ("£35 per bike"): it stays under the card's
    title. "Made with Strikingly", "Built on Bubble" and an e-mail sign-up box are the builder's."""
    html = """<main><h1>Bike hire</h1><h3>Half day (4 hours)</h3>
    <p><span style="font-size:28px;font-weight:700">£35 per bike</span></p><p>Pick up from 9:00 or 13:30.</p>
    <div data-testid="EmailSignupContainer"><p>Get the timetable by email</p></div>
    <div class="s-strikingly-badge"><a href="https://strikingly.com">Made with Strikingly</a></div>
    <a class="bubble-badge" href="https://bubble.io">Built on Bubble</a></main>"""
    assert _sections(html) == [("Bike hire", []), ("Half day (4 hours)", ["£35 per bike", "Pick up from 9:00 or 13:30."])]


def test_a_page_builder_s_text_module_heads_the_modules_after_it_and_a_row_of_cards_does_not():
    """Divi and WPBakery put a heading in a text module and the table it heads in the next module; a row
    of cards, or a box of several headed answers, ends with the box, and what follows goes on under the
    heading before."""
    divi = """<main><h1>Shipping</h1><div class="et_pb_column">
    <div class="et_pb_text"><div class="et_pb_text_inner"><h2>Delivery rates</h2><p>We ship from Leeds.</p></div></div>
    <div class="et_pb_code"><table><tr><th>Service</th><th>Price</th></tr><tr><td>Next day</td><td>£8.50</td></tr></table></div>
    <div class="et_pb_text"><div class="et_pb_text_inner"><p>Orders over £60 ship free.</p></div></div></div></main>"""
    sections = _sections(divi)
    assert sections[1][0] == "Delivery rates" and "Orders over £60 ship free." in sections[1][1]
    assert any("£8.50" in line for line in sections[1][1]) and len(sections) == 2
    cards = """<main><h1>Plans</h1><h2>Pricing</h2><div class="row"><div class="card"><h3>Solo</h3><p>£10 a month.</p></div>
    <div class="card"><h3>Team</h3><p>£30 a month.</p></div></div><div class="note"><p>Prices include VAT.</p></div></main>"""
    assert ("Pricing", ["Prices include VAT."]) in _sections(cards)


def test_numbered_furniture_names_are_furniture():
    """Mobirise numbers its blocks (<section class="footer3">), Brizy its popups (brz-popup2)."""
    html = """<body><section class="features1"><h2>Opening hours</h2><p>Open daily 10:00–22:00.</p></section>
    <div class="brz-popup2 brz-popup2--fade"><h3>Free sample pack</h3><p>Feel our paper stocks.</p></div>
    <section class="footer3 cid-abc"><p>© 2024 Climb Co. All Rights Reserved</p></section></body>"""
    assert _sections(html) == [("Opening hours", ["Open daily 10:00–22:00."])]


def test_page_builders_tabs_written_by_class_labels_first_then_panels():
    """Kadence Blocks (and Zoho Sites, Sitecore SXA) write every tab's label first, then every panel."""
    html = """<main><h1>Piano tuning</h1><div class="wp-block-kadence-tabs"><div class="kt-tabs-wrap">
    <ul class="kt-tabs-title-list"><li class="kt-title-item"><a href="#t1"><span>Home pianos</span></a></li>
    <li class="kt-title-item"><a href="#t2"><span>Schools</span></a></li></ul>
    <div class="kt-tabs-content-wrap"><div class="wp-block-kadence-tab kt-tab-inner-content"><p>A tuning takes 90 minutes.</p></div>
    <div class="wp-block-kadence-tab kt-tab-inner-content"><p>We tune in the holidays.</p></div></div></div></div></main>"""
    assert _sections(html) == [("Piano tuning (Home pianos)", ["A tuning takes 90 minutes."]),
                               ("Piano tuning (Schools)", ["We tune in the holidays."])]


def test_an_aside_holding_a_quotation_is_text_and_a_sidebar_aside_is_not():
    """Discourse writes a quoted warning in a post as <aside class="quote"><blockquote>."""
    html = """<body><aside class="sidebar-links"><h3>Guides</h3><ul><li><a href="/a">Admin</a></li></ul></aside>
    <main><h1>Single sign-on</h1><p>SSO is on the Business plan.</p>
    <aside class="quote no-group"><blockquote><p>Changes can take up to 2 business days.</p></blockquote></aside></main></body>"""
    assert _sections(html) == [("Single sign-on", ["SSO is on the Business plan.", "Changes can take up to 2 business days."])]


def test_a_print_link_a_search_form_and_a_drop_down_inside_the_content_are_no_text():
    """Freshdesk writes "Print" as a link in the article's heading; an Intercom-style help centre puts its
    search form and a "jump to collection" drop-down inside <main>."""
    html = """<body><main><header><div class="container"><form role="search" action="/search">
    <label for="q">Search the Help Centre</label><input id="q" type="search"></form>
    <select id="jump"><option>Getting started</option><option selected>Deliveries</option></select></div></header>
    <h1>Skipping a week <a href="javascript:print();" class="print--icon"><span>Print</span></a></h1>
    <p>Skip any week until 23:59, five days before it.</p></main></body>"""
    assert _sections(html) == [("Skipping a week", ["Skip any week until 23:59, five days before it."])]


_LAYOUT_PAGE = """<html><head><title>Returns - Acme Kettles</title></head><body>
<table width="100%" border="0"><tr><td colspan="2"><font size="5"><b>Acme Kettles Support</b></font></td></tr>
<tr><td width="180" valign="top"><font size="2"><a href="/">Home</a><br><a href="/returns">Returns</a><br>
<a href="/shipping">Shipping</a><br><a href="/warranty">Warranty</a><br><a href="/contact">Contact us</a></font></td>
<td valign="top"><font face="Arial" size="4"><b>Returns policy</b></font><br><br>
You can return any kettle within <b>30 days</b> of delivery.<br><br>
<b>How to start a return</b><br>Open the order and press "Return item".<br>We email you a prepaid label.<br><br>
<strong>Refund times</strong><br>Refunds reach your card 5 to 7 working days after the parcel arrives.<br><br>
<table border="1"><tr><th>Country</th><th>Return shipping</th></tr><tr><td>Ireland</td><td>£4.95</td></tr></table>
<br><b>Note</b> that opened kettles can be returned only if faulty.</td></tr>
<tr><td colspan="2"><font size="1">© 2009 Acme Kettles Ltd</font></td></tr></table></body></html>"""


def test_a_page_laid_out_in_a_table_reads_as_its_article():
    """An older site: the page is a table (header row, menu column, article cell, footer), the article
    paragraphed with <br><br>, its headings bold lines; a data table inside stays a table."""
    page = extract_html(_LAYOUT_PAGE, "http://x.test/returns")
    sections = {s.heading: s.paragraphs for s in page.sections}
    assert sections["Returns policy"] == ["You can return any kettle within 30 days of delivery."]
    assert sections["How to start a return"] == ['Open the order and press "Return item". We email you a prepaid label.']
    assert sections["Refund times"] == [
        "Refunds reach your card 5 to 7 working days after the parcel arrives.",
        "Ireland — Return shipping: £4.95",
        "Note that opened kettles can be returned only if faulty."]   # bold that a line goes on from heads nothing
    assert "Warranty" not in page.text and "Contact us" not in page.text      # the menu column
    assert "\ue000" not in page.text and "\ue001" not in page.text


def test_a_data_table_with_paragraphs_in_a_cell_is_still_read_as_rows():
    html = ("<main><table><tr><th>Plan</th><th>Price</th></tr><tr><td>Solo</td><td>€5<br><br>billed yearly</td></tr>"
            "<tr><td>Duo</td><td>€8</td></tr></table></main>")
    assert extract_html(html, "http://x.test/").sections[0].paragraphs == [
        "Solo — Price: €5 billed yearly", "Duo — Price: €8"]
