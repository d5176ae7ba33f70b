from __future__ import annotations

from voxserve.frontend.normalize import normalize_text
from voxserve.frontend.segment import segment_text, split_sentences


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
