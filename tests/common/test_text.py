"""Text made storable at the edge."""

from services.common.text import StorableStream, is_blank, storable


def test_nul_and_lone_surrogates_are_dropped_and_clean_text_is_untouched():
    assert storable("a\x00b\ud800c\udfffd") == "abcd"
    clean = "Öffnungszeiten? 営業時間 🙂"
    assert storable(clean) is clean
    assert storable("\x00") == ""
    assert storable("x\x00y").encode("utf-8") == b"xy"


def test_controls_escapes_and_bidi_overrides_are_dropped_but_line_breaks_and_tabs_kept():
    assert storable("a\x1b[31mred\x1b[0m b") == "ared b"
    assert storable("x\x1b]0;title\x07y") == "xy"
    assert storable("bell\x07 del\x7f c1\x85 end") == "bell del c1 end"
    assert storable("one\ttwo\nthree\r\n") == "one\ttwo\nthree\r\n"
    assert storable("abc\u202edcba\u202c") == "abcdcba"
    assert storable("isolate\u2066x\u2069") == "isolatex"


def test_blank_is_what_a_reader_cannot_tell_from_empty():
    assert is_blank("") and is_blank("   \n\t") and is_blank("\u200b\u200d\ufeff") and is_blank("\u00a0\u2028")
    assert not is_blank(" a ") and not is_blank("🙂") and not is_blank("\u200b?")
    # Marks with nothing to sit on and the blank fillers show nothing either.
    for invisible in ("\ufe0f", "\u034f", "\u0301\u0301", "\u3164", "\u115f\u1160", "\uffa0", "\u2800",
                      "\u200b\ufe0f \u3164"):
        assert is_blank(invisible), repr(invisible)
    for shown in ("\u2764\ufe0f", "a\u0301", "\u3131", "\u2801", "한"):
        assert not is_blank(shown), repr(shown)


def test_a_stream_cut_anywhere_comes_out_as_the_whole_text_made_storable():
    """An LLM's pieces may cut an escape sequence in two: no part of one gets through, whatever the cuts."""
    texts = ["ok \x1b[31mred\x1b[0m done", "a\x00b\u202ec", "x\x1b]0;title\x07y",
             "link \x1b]8;;http://e.example\x1b\\here\x1b]8;;\x1b\\ end", "z\x1b", "plain text"]
    for text in texts:
        want = storable(text)
        for i in range(len(text) + 1):
            for j in range(i, len(text) + 1):
                stream = StorableStream()
                got = stream.feed(text[:i]) + stream.feed(text[i:j]) + stream.feed(text[j:]) + stream.flush()
                assert got == want, (text, i, j)
    stream = StorableStream()
    assert stream.feed("colour \x1b[3") == "colour "   # held back until the sequence ends
    assert stream.feed("1mred") == "red"
