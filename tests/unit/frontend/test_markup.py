from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from voxserve.frontend.markup import MAX_HELD_CHARS, MarkupFilter, strip_markup

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)

# Pieces of LLM-style Markdown, so generated texts hit the rules far more often than random characters would.
MARKDOWN_TOKENS = [
    "word", "Hello", "déjà", "猫", " ", "  ", "\t", "\n", "\n\n", "\r\n", ".", ",", "'", '"', ":",
    "*", "**", "_", "__", "~", "~~", "`", "```", "~~~", "#", "# ", "### ", ">", "> ", "-", "- ", "---", "+ ",
    "• ", "=", "1. ", "12", "3", "[", "]", "](", "(", ")", "[ ] ", "[x] ", "!", "![", "\\", "<", ">", "<b>",
    "</b>", "<br>", "<https://www.example.com/a>", "https://example.com/a_b?q=1", "a < b", "2 * 3",
    "🚀", "✅", "👍🏽", "🇫🇷", "👨\u200d👩\u200d👧", "❤️", "1️⃣", "\u200d", "€", "snake_case",
]  # fmt: skip
markdown_texts = st.lists(st.sampled_from(MARKDOWN_TOKENS), max_size=40).map("".join)
# Prose: lines that start with a letter (so none is a list item, heading or indented), joined by single newlines.
prose_chars = st.one_of(st.characters(categories=["L", "Nd"]), st.sampled_from(" .,;:!?'\"-()"))
prose_line = st.builds(lambda first, rest: first + rest, st.characters(categories=["L"]), st.text(prose_chars))
prose_texts = st.builds(
    lambda lines, last: "\n".join(lines) + last,
    st.lists(prose_line, min_size=1, max_size=6),
    st.sampled_from(["", "\n"]),
)
EMOJI = [
    "🚀",
    "✅",
    "😀",
    "👍🏽",
    "🇫🇷",
    "👨\u200d👩\u200d👧",
    "❤️",
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # Scotland: a flag spelled in tags
]


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis caches character tables as tests run: in scratch, not the checkout."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


def cut(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted(min(at, len(text)) for at in cuts), len(text)]
    return [text[start:stop] for start, stop in itertools.pairwise(bounds)]


def stream(pieces: list[str]) -> str:
    markup_filter = MarkupFilter()
    return "".join(markup_filter.push(piece) for piece in pieces) + markup_filter.end()


def assert_well_formed(output: str) -> None:
    """Breaks are exactly two newlines, and no line starts with whitespace, the output least of all."""
    assert "\n\n\n" not in output
    assert not output[:1].isspace()
    assert all(not line[:1].isspace() for line in output.split("\n"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Before\n```python\nprint('hi')\n```\nAfter", "Before\n\nAfter"),
        ("Before\n~~~ sh\nls -l\n~~~\nAfter", "Before\n\nAfter"),
        ("Before\n```\nx\n\n\ny\n```\n\n\nAfter", "Before\n\nAfter"),
        ("````\n```\nstill code\n````\nAfter", "After"),
        ("> ```\n> code\n> ```\nAfter", "After"),
        ("Intro\n```\ncode that never closes\n# not a heading", "Intro\n\n"),
        ("```print(1)``` inline", "print(1) inline"),
    ],
)
def test_code_blocks_are_dropped_for_a_paragraph_break(text: str, expected: str) -> None:
    assert strip_markup(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Run `pip install voxserve` now.", "Run pip install voxserve now."),
        ("Pass `**kwargs` and `<div>` as is.", "Pass **kwargs and <div> as is."),
        ("Nest ``a ` b`` fine", "Nest a  b fine"),
        ("An open `tick ends at the line end\n**x**", "An open tick ends at the line end\nx"),
    ],
)
def test_inline_code_keeps_its_text(text: str, expected: str) -> None:
    assert strip_markup(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("**bold**, *italic*, __bold__, _italic_", "bold, italic, bold, italic"),
        ("***both*** and ~~struck~~", "both and struck"),
        ("2 * 3 = 6 and 2*3 = 6", "2 * 3 = 6 and 2*3 = 6"),
        ("**2 * 3** is six", "2 * 3 is six"),
        ("snake_case, MAX__SIZE and x___y stay", "snake_case, MAX__SIZE and x___y stay"),
        ("__init__ and _private", "init and private"),
        ("about ~5 minutes in ~/work", "about ~5 minutes in ~/work"),
        (r"\*not emphasis\* and C:\Users", "*not emphasis* and C:\\Users"),
    ],
)
def test_emphasis_markers_are_dropped(text: str, expected: str) -> None:
    assert strip_markup(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# Title\nText", "Title\n\nText"),
        ("Text\n### Sub heading\nMore", "Text\n\nSub heading\n\nMore"),
        ("#hashtag and ####### seven", "#hashtag and ####### seven"),
        ("Intro:\n- one\n* two\n+ three\n• four", "Intro:\n\none\n\ntwo\n\nthree\n\nfour"),
        ("- [ ] todo\n- [x] done", "todo\n\ndone"),
        ("- outer\n  - inner", "outer\n\ninner"),
        ("1. First\n2) Second", "1. First\n\n2) Second"),
        ("2024 was good. 1.5 million -- flag", "2024 was good. 1.5 million -- flag"),
        ("> quoted\n> on\n>\n> > deeper", "quoted\non\n\ndeeper"),
        ("a\n\n---\n\nb\n***\nc\n_ _ _\nd", "a\n\nb\n\nc\n\nd"),
        ("Setext title\n===\nBody", "Setext title\n\nBody"),
    ],
)
def test_line_markers_are_dropped_and_blocks_end_paragraphs(text: str, expected: str) -> None:
    assert strip_markup(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("See [the docs](https://example.com/docs) now", "See the docs now"),
        ("![a cat](cat.png) and ![](blank.png)", "a cat and "),
        ("[wiki](https://en.wikipedia.org/wiki/Foo_(bar)) x", "wiki x"),
        ('[titled](https://x.org "A title") x', "titled x"),
        ("[**bold** `code`](u)", "bold code"),
        ("[1] and [sic] and [a] (b) and a]b", "[1] and [sic] and [a] (b) and a]b"),
        ("an open [bracket\nnext", "an open [bracket\nnext"),
        ("<https://www.example.com/a?b> and <mailto:me@example.org>", "example.com and me@example.org"),
        ("write to <me@example.org>", "write to me@example.org"),
        ("bare https://example.com/a_b?q=1 stays", "bare https://example.com/a_b?q=1 stays"),
    ],
)  # fmt: skip
def test_links_become_their_text(text: str, expected: str) -> None:
    assert strip_markup(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<b>bold</b> and <i class='x'>it</i>", "bold and it"),
        ("one<br>two<BR/>three", "one two three"),
        ("<!-- hidden -->shown", "shown"),
        ("a < b, 3 <4, x<=y, <3", "a < b, 3 <4, x<=y, <3"),
        ("if a<b then\nnext", "if a<b then\nnext"),
    ],
)
def test_html_tags_are_dropped(text: str, expected: str) -> None:
    assert strip_markup(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("🚀 Launch ✅ done 😀", "Launch  done "),
        ("Thumbs 👍🏽, family 👨\u200d👩\u200d👧, flag 🇫🇷, love ❤️.", "Thumbs , family , flag , love ."),
        ("Step 1️⃣ and #️⃣", "Step 1 and #"),
        ("Stars ★ ticks ✓ ✔ boxes ☐ ▶ ⭐", "Stars  ticks   boxes   "),
        ("Prices: 5 €, £3, $2, ¥1, ₹9", "Prices: 5 €, £3, $2, ¥1, ₹9"),
        ("Arrows → stay, ‼ too", "Arrows → stay, ‼ too"),
        ("क्\u200dष keeps its joiner", "क्\u200dष keeps its joiner"),
    ],
)
def test_emoji_are_dropped(text: str, expected: str) -> None:
    assert strip_markup(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("one\ntwo", "one\ntwo"),
        ("one\n\n\n\ntwo", "one\n\ntwo"),
        ("one  \n \t \ntwo", "one  \n\ntwo"),
        ("\n\n# Title\n\ntext", "Title\n\ntext"),
        ("   indented\n\tline", "indented\nline"),
        ("one\r\ntwo", "one\ntwo"),
        ("**\n\nword", "word"),
    ],
)
def test_newlines_keep_paragraphs_apart(text: str, expected: str) -> None:
    assert strip_markup(text) == expected


def test_text_streams_as_soon_as_it_is_decided() -> None:
    markup_filter = MarkupFilter()
    assert markup_filter.push("Hello, wor") == "Hello, wor"
    assert markup_filter.push("ld. See [the") == "ld. See "
    assert markup_filter.push(" docs](https://exa") == "the docs"
    assert markup_filter.push("mple.com) and **bo") == " and bo"
    assert markup_filter.push("ld**") == "ld"
    assert markup_filter.end() == ""


def test_a_construct_held_past_the_bound_is_released_as_text() -> None:
    markup_filter = MarkupFilter()
    output = markup_filter.push("[" + "a" * (MAX_HELD_CHARS + 50))
    assert output.startswith("[aaa")
    assert markup_filter.held_chars <= MAX_HELD_CHARS
    assert output + markup_filter.end() == "[" + "a" * (MAX_HELD_CHARS + 50)


def test_link_targets_and_code_are_dropped_as_they_come() -> None:
    markup_filter = MarkupFilter()
    assert markup_filter.push("[a](") == "a"
    for _ in range(1000):
        assert markup_filter.push("https://example.com/") == ""
        assert markup_filter.held_chars == 0
    assert markup_filter.push(") then\n```\n") == " then\n\n"
    for _ in range(1000):
        assert markup_filter.push("print('[`<*_') ") == ""
        assert markup_filter.held_chars == 0
    assert markup_filter.push("\n```\nout") + markup_filter.end() == "out"


def test_end_readies_the_filter_for_a_new_text() -> None:
    markup_filter = MarkupFilter()
    assert markup_filter.push("```\ncode") + markup_filter.end() == ""
    assert markup_filter.push("# Title") + markup_filter.end() == "Title"


@PROPERTY_SETTINGS
@given(text=markdown_texts, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_cutting_gives_the_same_text(text: str, cuts: list[int]) -> None:
    whole = strip_markup(text)
    assert stream(cut(text, cuts)) == whole
    assert stream(list(text)) == whole
    assert_well_formed(whole)


@PROPERTY_SETTINGS
@given(
    text=st.text(st.characters(exclude_categories=[]), max_size=200),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_any_string_is_taken_and_cutting_never_matters(text: str, cuts: list[int]) -> None:
    whole = strip_markup(text)
    assert stream(cut(text, cuts)) == whole
    assert_well_formed(whole)


@PROPERTY_SETTINGS
@given(text=markdown_texts)
def test_held_back_text_stays_bounded(text: str) -> None:
    markup_filter = MarkupFilter()
    for char in text * 20:
        markup_filter.push(char)
        assert markup_filter.held_chars <= MAX_HELD_CHARS


@PROPERTY_SETTINGS
@given(text=prose_texts, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_prose_passes_unchanged(text: str, cuts: list[int]) -> None:
    assert strip_markup(text) == text
    assert stream(cut(text, cuts)) == text


@PROPERTY_SETTINGS
@given(text=prose_texts, inserts=st.lists(st.tuples(st.integers(min_value=0), st.sampled_from(EMOJI)), max_size=5))
def test_emoji_anywhere_in_prose_are_dropped(text: str, inserts: list[tuple[int, str]]) -> None:
    with_emoji = text
    for position, emoji in inserts:
        at = position % (len(with_emoji) + 1)
        with_emoji = with_emoji[:at] + emoji + with_emoji[at:]
    assert strip_markup(with_emoji) == text


@PROPERTY_SETTINGS
@given(char=st.characters(categories=["L", "N", "P", "Sc", "Sm"], exclude_characters="*`"))
def test_letters_digits_punctuation_and_currency_stay(char: str) -> None:
    assert strip_markup(f"a{char}b") == f"a{char}b"


HOSTILE_TEXTS = {
    "brackets": "[" * 200_000,
    "markup-soup": "`[*_<a!~\\>(]" * 16_000,
    "open-tags": "<a" * 100_000,
    "list-lines": "\n-" * 100_000,
    "mixed": ("[x](" + "(" * 50 + " ![*a* `b` <c " + "_" * 5 + "\n# ```~~~\n> 1. [ ] " * 3) * 1200,
}


def cpu_seconds(text: str) -> float:
    started = time.process_time()
    strip_markup(text)
    return time.process_time() - started


@pytest.mark.parametrize("text", HOSTILE_TEXTS.values(), ids=HOSTILE_TEXTS.keys())
def test_hostile_input_runs_in_linear_time(text: str) -> None:
    """Four times the text costs about four times the CPU (quadratic work would cost sixteen): a ratio, so a slow
    or busy machine does not decide it. The best of a few runs of each size sheds one-off stalls."""
    whole = text[:120_000]
    quarter = whole[: len(whole) // 4]
    small = min(cpu_seconds(quarter) for _ in range(3))
    large = min(cpu_seconds(whole) for _ in range(2))
    assert large < 8 * max(small, 0.005)
    assert large < 10.0


def test_hostile_input_in_small_pieces_stays_linear_and_bounded() -> None:
    text = "".join(HOSTILE_TEXTS.values())[::7][:60_000]
    markup_filter = MarkupFilter()
    started = time.process_time()
    for start in range(0, len(text), 3):
        markup_filter.push(text[start : start + 3])
        assert markup_filter.held_chars <= MAX_HELD_CHARS
    markup_filter.end()
    assert time.process_time() - started < 1.0
