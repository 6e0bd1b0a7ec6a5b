"""Text made storable at the edge."""

from services.common.text import storable


def test_nul_and_lone_surrogates_are_dropped_and_clean_text_is_untouched():
    assert storable("a\x00b\ud800c\udfffd") == "abcd"
    clean = "Öffnungszeiten? 営業時間 🙂"
    assert storable(clean) is clean
    assert storable("\x00") == ""
    assert storable("x\x00y").encode("utf-8") == b"xy"
