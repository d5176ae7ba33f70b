from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from voxserve.frontend.normalize import CharacterStream, normalize_text
from voxserve.frontend.segment import SegmentStream, segment_text, split_sentences


def words(texts: list[str]) -> list[str]:
    return " ".join(texts).split()


def test_splits_at_sentence_ends() -> None:
    assert split_sentences("Hello there. How are you? Fine!  Thanks.") == [
        "Hello there.",
        "How are you?",
        "Fine!",
        "Thanks.",
    ]


def test_keeps_abbreviations_initials_and_numbers_inside_sentences() -> None:
    text = "Dr. Patel met J. Smith at 10.30 a.m. today. It cost $14.99 vs. $12."
    assert split_sentences(text) == ["Dr. Patel met J. Smith at 10.30 a.m. today.", "It cost $14.99 vs. $12."]


def test_long_first_sentence_is_cut_at_a_clause() -> None:
    text = "Thank you for calling, our office hours are Monday to Friday, from nine until six. Goodbye."
    segments = segment_text(text, first_segment_max_chars=30, max_segment_chars=300)
    assert segments[0] == "Thank you for calling,"
    assert segments[-1] == "Goodbye."
    assert words(segments) == text.split()


def test_first_sentence_without_a_fitting_clause_is_cut_at_a_word() -> None:
    text = "A sentence that runs on for quite a while before it pauses, and then ends."
    assert segment_text(text, first_segment_max_chars=20, max_segment_chars=300) == [
        "A sentence that",
        "runs on for quite a while before it pauses, and then ends.",
    ]


def test_only_the_first_segment_is_kept_short() -> None:
    text = "Short one. A second sentence that is a good deal longer than the first segment limit."
    assert segment_text(text, first_segment_max_chars=20, max_segment_chars=300) == [
        "Short one.",
        "A second sentence that is a good deal longer than the first segment limit.",
    ]


def test_over_long_sentences_are_cut_and_no_word_is_lost() -> None:
    text = " ".join(["word"] * 200) + "."
    segments = segment_text(text, first_segment_max_chars=60, max_segment_chars=100)
    assert all(len(piece) <= 100 for piece in segments)
    assert words(segments) == text.split()


def test_whitespace_only_text_has_no_segments() -> None:
    assert segment_text(" \n\t ", first_segment_max_chars=60, max_segment_chars=300) == []


def test_normalize_text_drops_invisible_characters_and_keeps_joiners() -> None:
    assert normalize_text("Cafe\u0301\u200b  time\x07\n\tnow\ufeff") == "Café time now"
    assert normalize_text("a\u200db") == "a\u200db"


LIMITS = {"first_segment_max_chars": 24, "max_segment_chars": 60}
_PIECES = st.sampled_from(
    ["Hello", "there", "Dr.", "J.", "e.g.", "3.5", "3.", "$14.99", "a", "word", "sentence", "end.", "Why?", "Yes!",
     "wait…", "(aside)", "\"quoted.\"", "clause,", "semi;", "dash —", "x" * 70, " ", " ", " ", "  ", "\n", "\n\n",
     "\t", ".", ",", "é", "e\u0301"]
)  # fmt: skip


def streamed(text: str, cuts: list[int], *, growing: bool = False) -> list[str]:
    stream = SegmentStream(**LIMITS, growing=growing)
    segments: list[str] = []
    start = 0
    for cut in sorted(cuts):
        segments += stream.push(text[start:cut])
        start = cut
    return [*segments, *stream.push(text[start:]), *stream.end()]


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=60).map("".join), st.lists(st.integers(0, 400), max_size=30), st.booleans())
def test_any_cutting_of_a_text_gives_the_segments_of_the_whole(text: str, cuts: list[int], growing: bool) -> None:
    whole = streamed(text, [], growing=growing)
    assert streamed(text, [cut for cut in cuts if cut <= len(text)], growing=growing) == whole
    assert streamed(text, list(range(len(text))), growing=growing) == whole  # one character at a time
    assert "".join("".join(whole).split()) == "".join(text.split())  # every character, once, in order
    assert all(len(segment) <= LIMITS["max_segment_chars"] for segment in whole)


def test_a_segment_comes_as_soon_as_it_is_decided() -> None:
    stream = SegmentStream(**LIMITS)
    assert stream.push("Hello there.") == []  # a period may still be a decimal point or an initial
    assert stream.push(" It costs 3.") == ["Hello there."]
    assert stream.push("5 dollars, said Dr. Smith. And") == ["It costs 3.5 dollars, said Dr. Smith."]
    assert stream.push(" then a clause that runs past the limit of sixty, so it is cut at its clause") == [
        "And then a clause that runs past the limit of sixty,"
    ]
    assert stream.flush() == ["so it is cut at its clause"]
    assert stream.push("\n\nA heading\n\nAnd a paragraph") == ["A heading"]
    assert stream.end() == ["And a paragraph"]


def test_a_growing_stream_limits_each_segment_to_twice_those_before_it() -> None:
    stream = SegmentStream(first_segment_max_chars=10, max_segment_chars=40, growing=True)
    lengths = [len(segment) for segment in stream.push("Yes. " + " ".join(["word"] * 40) + ".") + stream.end()]
    assert lengths[:4] == [4, 9, 24, 39]
    limits = [min(max(2 * sum(lengths[:n]), sum(lengths[:n]) + 10), 40) for n in range(1, len(lengths))]
    assert all(length <= limit for length, limit in zip(lengths[1:], limits, strict=True))


def test_the_first_segment_of_each_response_is_short() -> None:
    stream = SegmentStream(**LIMITS)
    assert stream.push("Thank you for calling, our office hours are") == ["Thank you for calling,"]
    assert stream.end() == ["our office hours are"]
    assert stream.push("A sentence that runs on for a while") == ["A sentence that runs on"]


def test_pending_text_stays_bounded_whatever_arrives() -> None:
    stream = SegmentStream(**LIMITS)
    segments = [segment for _ in range(1000) for segment in stream.push("x" * 97)]
    assert all(len(segment) <= LIMITS["max_segment_chars"] for segment in segments)
    assert len("".join(stream.flush())) <= LIMITS["max_segment_chars"]


@settings(max_examples=300, deadline=None)
@given(
    st.text(st.sampled_from(["a", "e", "\u0301", "\u0323", "\u200b", "\u1100", "\u1161", "\u11a8", " ", "\n"])),
    st.lists(st.integers(0, 100), max_size=10),
)
def test_characters_arriving_in_pieces_normalize_as_the_whole(text: str, cuts: list[int]) -> None:
    def normalized(cuts: list[int]) -> str:
        stream = CharacterStream()
        pieces, start = [], 0
        for cut in sorted(cut for cut in cuts if cut <= len(text)):
            pieces.append(stream.push(text[start:cut]))
            start = cut
        return "".join([*pieces, stream.push(text[start:]), stream.end()])

    whole = normalized([])
    assert normalized(cuts) == whole
    assert normalized(list(range(len(text)))) == whole
    assert "\u200b" not in whole
    assert unicodedata.is_normalized("NFC", whole) or "\u200b" in text  # an invisible between a base and its mark
