"""What a passage's sentence vectors read: its quotable units, each with its page title and heading."""

from services.common.sentences import embedding_sentences, page_title, section_heading, sentence_spans, split_sentences, units


def test_the_site_name_after_a_bar_is_not_part_of_the_page_title():
    assert page_title("Charging your battery | Acme Help Centre") == "Charging your battery"
    assert page_title("Returns · Shop help") == "Returns"
    assert page_title("Getting started") == "Getting started"


def test_the_site_name_after_a_dash_goes_only_when_it_names_a_help_site():
    assert page_title("Charging your battery – Acme Help Center") == "Charging your battery"
    assert page_title("Setup - Acme Support") == "Setup"
    assert page_title("Install — Acme Docs") == "Install"
    assert page_title("Wi-Fi 6 – what it means") == "Wi-Fi 6 – what it means"
    assert page_title("E-bike range - how far can I go?") == "E-bike range - how far can I go?"


def test_each_sentence_and_table_row_reads_with_its_page_title_and_section_heading():
    text = ("Storage in winter\nKeep the pack indoors between 10 and 20 °C. Charge it to about 60% first.\n"
            "Shelf life\n2 years")
    assert section_heading(text) == "Storage in winter"
    assert embedding_sentences("Battery care | Acme Help", text) == [
        "Battery care > Storage in winter: Keep the pack indoors between 10 and 20 °C.",
        "Battery care > Storage in winter: Charge it to about 60% first.",
        "Battery care > Storage in winter: Shelf life: 2 years",
    ]


def test_menus_and_page_furniture_get_no_vector_and_long_passages_are_capped():
    text = "Related articles\nCharging\nBattery care\nWas this article helpful? Yes / No"
    assert embedding_sentences("Help", text) == []
    many = "\n".join(f"Step {i}: turn the dial to position number {i} and wait a moment." for i in range(40))
    assert len(embedding_sentences("Help", many, limit=24)) == 24
    assert section_heading("A single line of prose without any heading above it at all.") == ""


def test_a_sentence_that_names_a_menu_path_is_prose_not_a_breadcrumb():
    from services.common.sentences import is_furniture, units

    assert is_furniture("Home > Help > Billing") and is_furniture("Help Centre / Bikes / Ridge")
    line = "We never sell your data. You can download all of it at any time from Settings > Account > Export."
    assert not is_furniture(line) and not is_furniture("Go to Settings > Account > Export to download.")
    assert [u.text for u in units(line)] == [
        "We never sell your data.", "You can download all of it at any time from Settings > Account > Export."]


def test_a_short_list_entry_that_names_a_term_and_its_meaning_is_quoted():
    from services.common.sentences import units

    text = ("Payout schedule\nChoose how often you're paid in Settings → Payments:\n"
            "Daily — every business day, for all funds that have become available.\nWeekly — every Monday.\n"
            "Step 2.\nYes.")
    found = [u.text for u in units(text)]
    assert "Weekly — every Monday." in found
    assert "Step 2." not in found and "Yes." not in found     # still fragments: no term and meaning


def test_a_short_item_with_a_figure_in_a_list_without_full_stops_is_quoted_with_its_heading():
    from services.common.sentences import units

    text = ("Requirements\nA smartphone that has received a security update in the last 12 months\n"
            "Bluetooth 5.0\nApp version 5.2 or later for firmware 4.x bikes\n"
            "Firmware 4\nThe bike's firmware is updated over the air. It takes about ten minutes.")
    found = [u.text for u in units(text)]
    assert "Requirements: Bluetooth 5.0" in found
    # a heading after a sentence is still a heading, never quoted, even with a figure in it
    assert not any("Firmware 4" in t and ":" in t for t in found)
    assert "The bike's firmware is updated over the air." in found


def test_each_sentence_is_found_where_it_stands_in_the_encoded_passage():
    text = ("Storage in winter\nKeep the pack  indoors between 10 and 20 °C. Charge it to about 60% first.\n"
            "Shelf life\n2 years\nKeep the pack indoors between 10 and 20 °C.")
    passage = f"Battery care\n{text}"
    spans = sentence_spans(passage, text)
    assert len(spans) == len(embedding_sentences("Battery care", text)) == 4
    read = [[" ".join(passage[a:b].split()) for a, b in ranges] for ranges in spans]
    # a sentence of a line; a table row joined from two lines ("Shelf life" / "2 years") in two ranges
    assert read == [["Keep the pack indoors between 10 and 20 °C."], ["Charge it to about 60% first."],
                    ["Shelf life", "2 years"], ["Keep the pack indoors between 10 and 20 °C."]]
    assert spans[3][0][0] > spans[0][0][0]      # a repeated sentence: its own place, not the first one's
    assert all(a > len("Battery care") for ranges in spans for a, _ in ranges)   # never in the title line


def test_a_list_item_quoted_with_its_heading_is_found_in_two_places():
    text = "Requirements\nBluetooth 5.0\niOS 15 or later\nAndroid 10 or later"
    passage = f"Help\n{text}"
    units = embedding_sentences("Help", text)
    spans = sentence_spans(passage, text)
    assert len(spans) == len(units) and spans
    for unit, ranges in zip(units, spans):
        assert ranges is not None
        assert unit.endswith(": ".join(" ".join(passage[a:b].split()) for a, b in ranges))


def test_a_passage_s_first_line_is_its_heading_however_long_and_a_label_still_pairs():
    from services.common.sentences import units

    text = ("Shot runs too slow or drips (over 40 seconds)\nGrind coarser by one step at a time.\n"
            "Posted in Troubleshooting — last modified 14 October 2026")
    assert [u.text for u in units(text)] == ["Grind coarser by one step at a time."]
    assert [u.text for u in units("Weight\n34.5 kg")] == ["Weight: 34.5 kg"]


def test_each_sentence_of_a_defined_term_keeps_the_term():
    from services.common.sentences import units

    text = ("Undertow – dark roast: A blend of Brazil and Sumatra. Cuts through milk beautifully. Recommended: 90 °C, grind 7.\n"
            "Note: Keep the bag sealed. Store it away from light always.")
    found = [u.text for u in units(text)]
    assert found[:3] == ["Undertow – dark roast: A blend of Brazil and Sumatra.",
                         "Undertow – dark roast: Cuts through milk beautifully.",
                         "Undertow – dark roast: Recommended: 90 °C, grind 7."]
    assert not any(t.startswith("Note: Store") for t in found)     # a callout's label is no term


def test_a_full_stop_after_an_abbreviation_does_not_end_the_sentence():
    """The quoted answer to "max kids on the haul?" was "22 kg, rack limit 25 kg).": the sentence naming
    the third child was cut at "max."."""
    text = ("Up to 2 children on the bench. A third child can ride on the rear rack (max. 22 kg, rack limit "
            "25 kg). Prices are incl. VAT and shown e.g. in the app. Ask Dr. Okafor at the shop, No. 12 Quay St.")
    assert [u.text for u in units(text)] == [
        "Up to 2 children on the bench.",
        "A third child can ride on the rear rack (max. 22 kg, rack limit 25 kg).",
        "Prices are incl. VAT and shown e.g. in the app.",
        "Ask Dr. Okafor at the shop, No. 12 Quay St.",
    ]


def test_an_abbreviation_that_takes_a_figure_ends_a_sentence_before_a_word():
    assert split_sentences("Can I pay by cheque? No. Each order is paid by card.") == [
        "Can I pay by cheque?", "No.", "Each order is paid by card."]
    assert split_sentences("The limit is the max. After that we charge 2%.") == [
        "The limit is the max.", "After that we charge 2%."]
    assert split_sentences("© 2026 Acme Ltd. All rights reserved.") == ["© 2026 Acme Ltd.", "All rights reserved."]


def test_list_items_that_go_on_a_sentence_are_quoted_with_its_start():
    """"tap the link in the email ... (valid for 30 minutes), and" was quoted alone, and so was the
    unfinished "You can open an account if you:"."""
    text = ("Move to a new phone\nInstall the app on your new phone.\nConfirm your identity:\n"
            "tap the link in the email we send you (valid for 30 minutes), and\n"
            "record a short selfie video, which we compare with your photo.\n"
            "You can open an account if you:\nare 18 or older,\nlive in one of the 11 supported countries.\n"
            "Requirements\niPhone with Face ID running iOS 16 or later.")
    assert [u.text for u in units(text, "Move to a new phone")] == [
        "Install the app on your new phone.",
        "Confirm your identity: tap the link in the email we send you (valid for 30 minutes).",
        "Confirm your identity: record a short selfie video, which we compare with your photo.",
        "You can open an account if you: are 18 or older.",
        "You can open an account if you: live in one of the 11 supported countries.",
        "iPhone with Face ID running iOS 16 or later.",
    ]
    passage = f"Moving\n{text}"
    spans = sentence_spans(passage, text)
    assert all(spans), spans
    assert [passage[a:b] for a, b in spans[3]] == ["You can open an account if you:\nare 18 or older"]
    assert [passage[a:b] for a, b in spans[2]] == [
        "Confirm your identity", "record a short selfie video, which we compare with your photo."]


def test_a_lead_is_quoted_with_its_short_list_and_not_at_all_before_a_long_one():
    """"You can choose one of three options:" was quoted alone: it promises what it does not say."""
    text = ("My box wasn't delivered\nIf your box hasn't arrived by 23:59, report it. You can choose one of three options:\n"
            "Next-day redelivery — Details: A new box, delivered free the next day; Where available: London only\n"
            "Full refund — Details: Everything you paid, returned in 5–10 working days\n"
            "Sprigbox credit — Details: 110% of what you paid, added straight away\n"
            "Long-term storage\nBefore a long trip:\n"
            + "".join(f"Check item number {n} of the bike carefully before you leave.\n" for n in range(1, 9))
            + "After 30 days the battery sleeps. To wake it, connect the charger.")
    found = units(text, "My box wasn't delivered", lists=True)
    lead = next(u for u in found if u.text == "You can choose one of three options:")
    assert lead.goes_on == ("Next-day redelivery — Details: A new box, delivered free the next day; Where available: "
                            "London only; Full refund — Details: Everything you paid, returned in 5–10 working days; "
                            "Sprigbox credit — Details: 110% of what you paid, added straight away.")
    assert any(u.text.startswith("Full refund —") for u in found)        # each item is a unit of its own too
    assert not any(u.text == "Before a long trip:" for u in found)      # eight items: past the limit
    assert sum(u.text.startswith("Check item number") for u in found) == 8
    assert not any(u.goes_on for u in found if u is not lead)
    # What sentence vectors read is unchanged: the lead alone, without its list.
    plain = units(text, "My box wasn't delivered")
    assert not any(u.goes_on for u in plain) and any(u.text == "Before a long trip:" for u in plain)


def test_a_sentence_that_starts_like_page_furniture_is_content():
    """"Next-day redelivery ..." read as a "Next article" link, "Print the return label ..." as "Print"."""
    text = ("Delivery options\n"
            "Next-day orders placed on a Friday after 14:00, or at the weekend, arrive on Tuesday.\n"
            "Print the return label, or show the QR code at a drop-off point if you don't have a printer.\n"
            "Next-day delivery costs £4.99.\nPrint the return label at home.\n"
            "Next article\nPrint this page\nBack to top\nCopyright 2026 Acme Ltd\n"
            "Copyright 2026 Acme Ltd. All rights reserved. Registered in England and Wales, company no. 01234567.\n"
            "Cookie settings: We use cookies to give you the best experience. By continuing to browse, you agree.\n"
            "Written by Jane Smith, Customer Success Manager, on 12 March 2026 at 10:00")
    assert [u.text for u in units(text, "Delivery options")] == [
        "Next-day orders placed on a Friday after 14:00, or at the weekend, arrive on Tuesday.",
        "Print the return label, or show the QR code at a drop-off point if you don't have a printer.",
        "Next-day delivery costs £4.99.",
        "Print the return label at home.",
    ]


def test_a_lead_quotes_its_items_without_what_joins_them_and_stops_at_a_question():
    text = ("Damaged parcels\nYou have two options when a parcel arrives damaged:\n"
            "Request a replacement sent by next-day courier, or\n"
            "Ask for a full refund to your original payment method; and\n"
            "Can I keep the damaged item?\nYes, you can keep it or recycle it.")
    found = units(text, "Damaged parcels", lists=True)
    lead = found[0]
    assert lead.goes_on == ("Request a replacement sent by next-day courier; "
                            "Ask for a full refund to your original payment method.")
    assert [u.in_list for u in found[1:3]] == [lead.position, lead.position]
    assert found[-1].text == "Yes, you can keep it or recycle it." and found[-1].in_list == -1


# What embedding_sentences() reads of every passage of the evaluation pages (1,688 passages as extracted
# now), by sentences.RULES, the version that is part of the embedding model id.
READ_BY_RULES = {2: "b7598c2c1cd6f48db1645fc00ae774969e43bafeda815245fc299e9692eee275"}


def test_what_the_sentence_vectors_read_changes_only_with_the_rules_version():
    import hashlib
    import json
    from pathlib import Path

    from services.common.sentences import RULES, embedding_sentences
    from services.scraper.extract import chunk_page, extract_html

    sites = Path(__file__).resolve().parents[2] / "bench" / "eval" / "sites"
    read = []
    for f in sorted(sites.rglob("*.html")):
        page = extract_html(f.read_text(encoding="utf-8"), "http://site.test/" + f.relative_to(sites).as_posix())
        read += [embedding_sentences(page.title, c) for c in chunk_page(page)]
    assert hashlib.sha256(json.dumps(read).encode()).hexdigest() == READ_BY_RULES.get(RULES), (
        f"embedding_sentences() read the evaluation pages ({len(read)} passages) otherwise. If the sentence "
        "rules changed, raise sentences.RULES (stored chunks are then embedded again) and record the new "
        "digest under it; if only the extraction did (the pages' passages), record it under the same version")
