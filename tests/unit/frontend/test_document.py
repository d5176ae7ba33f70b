from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator

import pytest
from ebooklib import epub
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from voxserve.errors import InputTooLongError, InvalidRequestError, PayloadTooLargeError
from voxserve.frontend.document import (
    BatchItem,
    Chapter,
    detect_format,
    parse_document,
    parse_jsonl,
    parse_text,
)

CONTAINER_XML = (
    '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
    '<rootfiles><rootfile full-path="content.opf" media-type="application/oebps-package+xml"/></rootfiles>'
    "</container>"
)


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis caches character tables as tests run: in scratch, not the checkout."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


def build_epub() -> bytes:
    """A small EPUB as ebooklib writes it: a nav and a text-less cover in the spine, chapters out of file order."""
    book = epub.EpubBook()
    book.set_identifier("test-book")
    book.set_title("Test Book")
    book.set_language("en")
    first = epub.EpubHtml(title="One", file_name="one.xhtml")
    first.content = (
        "<h1>The<br/>Beginning</h1><p>It was a <em>dark</em> night &amp; cold.</p>"
        "<div>Loose text<p>Inner paragraph.</p>after it</div><script>alert(1)</script><style>p {}</style>"
    )
    second = epub.EpubHtml(title="Two", file_name="text/two.xhtml")
    second.content = "<p>No heading<br/>here.</p><blockquote><p>A quote.</p></blockquote><ul><li>Item</li></ul>"
    third = epub.EpubHtml(title="Three", file_name="three.xhtml")
    third.content = (
        "<h2>Ending</h2><section><p>Last <ruby>字<rp>(</rp><rt>ji</rt><rp>)</rp></ruby> words.</p></section>"
    )
    appendix = epub.EpubHtml(title="Appendix", file_name="appendix.xhtml")
    appendix.content = "<p>Not in the reading order.</p>"
    cover = epub.EpubHtml(title="Cover", file_name="cover.xhtml")
    cover.content = '<img src="cover.png" alt="cover"/>'
    for item in (first, second, third, appendix, cover):
        book.add_item(item)
    book.toc = [
        epub.Link("one.xhtml", "Chapter One", "one"),
        (epub.Section("Part Two"), [epub.Link("text/two.xhtml#start", "The Middle", "two"), third]),
    ]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", cover, second, first, (appendix, "no"), third]
    buffer = io.BytesIO()
    epub.write_epub(buffer, book)
    return buffer.getvalue()


def build_zip(entries: dict[str, bytes], *, mimetype: bool = True) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if mimetype:
            archive.writestr("mimetype", "application/epub+zip", zipfile.ZIP_STORED)
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_plain_text_is_one_untitled_chapter_of_blank_line_separated_paragraphs() -> None:
    text = "  First line\nof the first\tparagraph.\n\n\n Second   paragraph. \n \nThird.\n"
    assert parse_text(text, markdown=False) == [
        Chapter("", ("First line of the first paragraph.", "Second paragraph.", "Third."))
    ]


def test_chapter_pattern_starts_chapters_at_matching_lines() -> None:
    text = "Preface text.\n\nCHAPTER 1\nIt begins.\n\nStill one.\n\n  chapter 2  \n\nIt ends.\nChapter 2b stays text."
    assert parse_text(text, markdown=False, chapter_pattern=r"Chapter \d+") == [
        Chapter("", ("Preface text.",)),
        Chapter("CHAPTER 1", ("It begins.", "Still one.")),
        Chapter("chapter 2", ("It ends. Chapter 2b stays text.",)),
    ]


@pytest.mark.parametrize("pattern", ["(unclosed", "x" * 201])
def test_bad_chapter_pattern_is_an_invalid_request(pattern: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_text("Chapter 1\n\nText.", markdown=False, chapter_pattern=pattern)
    assert caught.value.param == "chapter_pattern"


def test_markdown_headings_start_chapters_and_markup_is_not_spoken() -> None:
    text = """Before any heading, *emphasis* and __strong__.

# Part One

A [link](https://example.com "title") and ![a picture](pic.png) with `code` and ~~strike~~.
Second line &amp; an escaped \\*star\\*.

Setext Title
============

Under setext.

Setext Two
----------

### A deeper heading

- first item
- second item
  continued

  with a second paragraph
  - nested item

1. numbered

> quoted
> text

```python
print("never spoken")
```

    indented code

<div>
html block
</div>

| a | b |
|---|---|
| 1 | 2 |

---

Inline <span>html</span> tags.

## Empty Chapter

## Last

Done.
"""
    assert parse_text(text, markdown=True) == [
        Chapter("", ("Before any heading, emphasis and strong.",)),
        Chapter("Part One", ("A link and with code and strike. Second line & an escaped *star*.",)),
        Chapter("Setext Title", ("Under setext.",)),
        Chapter(
            "Setext Two",
            (
                "A deeper heading",
                "first item",
                "second item continued with a second paragraph",
                "nested item",
                "numbered",
                "quoted text",
                "Inline html tags.",
            ),
        ),
        Chapter("Last", ("Done.",)),
    ]


def test_markdown_ignores_the_chapter_pattern() -> None:
    text = "# Title\n\nChapter 1\n\nText."
    assert parse_text(text, markdown=True, chapter_pattern="(") == [Chapter("Title", ("Chapter 1", "Text."))]


WORDS = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8), min_size=1, max_size=5)
# Each kind of block as written, and as it should be spoken ("" for not at all: a chapter title is not a paragraph).
MARKDOWN_BLOCKS = {
    "paragraph": ("{text}", "{text}"),
    "emphasis": ("*{text}* and _{text}_", "{text} and {text}"),
    "link": ("[**{text}**](https://example.com/page)", "{text}"),
    "heading": ("# {text}", ""),
    "subheading": ("### {text}", "{text}"),
    "item": ("- {text}", "{text}"),
    "quote": ("> {text}", "{text}"),
    "fence": ("```\n{text}\n```", ""),
}


@settings(database=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(MARKDOWN_BLOCKS)), WORDS), min_size=1, max_size=8))
def test_markdown_paragraphs_hold_the_words_without_markup(blocks: list[tuple[str, list[str]]]) -> None:
    text = "\n\n".join(MARKDOWN_BLOCKS[kind][0].format(text=" ".join(words)) for kind, words in blocks)
    spoken = " ".join(MARKDOWN_BLOCKS[kind][1].format(text=" ".join(words)) for kind, words in blocks)
    if not spoken.strip():
        with pytest.raises(InvalidRequestError):
            parse_text(text, markdown=True)
        return
    paragraphs = [paragraph for chapter in parse_text(text, markdown=True) for paragraph in chapter.paragraphs]
    assert " ".join(paragraphs).split() == spoken.split()
    assert all(set(paragraph).isdisjoint("#*_[]()`>\n") for paragraph in paragraphs)


@settings(database=None)
@given(st.text(alphabet=st.sampled_from("ab \t\n\r\u00a0"), max_size=60))
def test_plain_text_keeps_every_word_and_no_line_breaks(text: str) -> None:
    if not text.split():
        with pytest.raises(InvalidRequestError):
            parse_text(text, markdown=False)
        return
    paragraphs = parse_text(text, markdown=False)[0].paragraphs
    assert " ".join(paragraphs).split() == text.split()
    assert not any("\n" in paragraph or "\r" in paragraph for paragraph in paragraphs)


def test_epub_chapters_follow_the_spine_with_titles_from_headings_or_the_toc() -> None:
    assert parse_document(build_epub(), "epub", max_chars=10_000) == [
        Chapter("The Middle", ("No heading here.", "A quote.", "Item")),
        Chapter("The Beginning", ("It was a dark night & cold.", "Loose text", "Inner paragraph.", "after it")),
        Chapter("Ending", ("Last 字 words.",)),
    ]


def test_a_file_that_is_not_a_zip_is_not_an_epub() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_document(b"PK\x03\x04 but nothing more", "epub", max_chars=1000)
    assert caught.value.param == "file"


def test_a_zip_that_is_not_an_epub_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequestError, match="not a readable EPUB") as caught:
        parse_document(build_zip({"notes.txt": b"hello"}, mimetype=False), "epub", max_chars=1000)
    assert "notes.txt" not in caught.value.message


def test_an_epub_with_too_many_entries_is_refused() -> None:
    data = build_zip({f"f{index}.txt": b"" for index in range(2001)})
    with pytest.raises(InvalidRequestError, match="more than 2000 files"):
        parse_document(data, "epub", max_chars=1_000_000)


def test_an_epub_that_unpacks_beyond_the_limit_is_refused_before_decompressing() -> None:
    data = build_zip({"META-INF/container.xml": CONTAINER_XML.encode(), "bomb.xhtml": b"\0" * 1_000_000})
    assert len(data) < 10_000
    with pytest.raises(PayloadTooLargeError, match="50000 bytes"):
        parse_document(data, "epub", max_chars=1000)


def test_an_epub_that_reads_one_entry_many_times_is_refused() -> None:
    items = "".join(
        f'<item id="i{index}" href="big.xhtml" media-type="application/xhtml+xml"/>' for index in range(100)
    )
    opf = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Big</dc:title></metadata>'
        f'<manifest>{items}</manifest><spine><itemref idref="i0"/></spine></package>'
    )
    data = build_zip(
        {
            "META-INF/container.xml": CONTAINER_XML.encode(),
            "content.opf": opf.encode(),
            "big.xhtml": b"<p>" + b"word " * 4000 + b"</p>",
        }
    )
    with pytest.raises(PayloadTooLargeError):
        parse_document(data, "epub", max_chars=1000)


@pytest.mark.parametrize("data", [b"text\x00with a NUL", b"caf\xe9 latin-1", b"\xff\xfe\x00t\x00"])
@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_binary_uploads_are_not_text(data: bytes, fmt: str) -> None:
    with pytest.raises(InvalidRequestError, match="not UTF-8 text"):
        parse_document(data, fmt, max_chars=1000)


@pytest.mark.parametrize(
    ("data", "fmt"), [(b"", "text"), (b" \n\t\n", "text"), (b"```\ncode only\n```\n\n# Title\n", "markdown")]
)
def test_nothing_to_speak_is_an_invalid_request(data: bytes, fmt: str) -> None:
    with pytest.raises(InvalidRequestError, match="no text to speak"):
        parse_document(data, fmt, max_chars=1000)


def test_a_utf8_byte_order_mark_is_dropped() -> None:
    data = "\ufeff# Título\n\nÀ bientôt.".encode()
    assert parse_document(data, "markdown", max_chars=1000) == [Chapter("Título", ("À bientôt.",))]


def test_documents_over_max_chars_are_too_long() -> None:
    data = b"12345\n\n67890"
    assert parse_document(data, "text", max_chars=10) == [Chapter("", ("12345", "67890"))]
    with pytest.raises(InputTooLongError, match="10 characters of text; the limit is 9") as caught:
        parse_document(data, "text", max_chars=9)
    assert caught.value.param == "input"


def test_an_unknown_format_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequestError, match="unsupported document format"):
        parse_document(b"text", "pdf", max_chars=1000)


@pytest.mark.parametrize(
    ("filename", "content_type", "data", "expected"),
    [
        ("book.txt", None, b"", "text"),
        ("Book.MD", "application/octet-stream", b"", "markdown"),
        ("notes.markdown", None, b"", "markdown"),
        ("novel.epub", "text/plain", b"", "epub"),
        ("upload", "text/plain; charset=utf-8", b"", "text"),
        ("upload", "Text/Markdown", b"", "markdown"),
        ("upload", "application/epub+zip", b"", "epub"),
        ("upload.bin", "application/octet-stream", build_epub(), "epub"),
    ],
)
def test_detect_format(filename: str, content_type: str | None, data: bytes, expected: str) -> None:
    assert detect_format(filename, content_type, data) == expected


@pytest.mark.parametrize("data", [b"plain words", build_zip({"a.txt": b"a"}, mimetype=False)])
def test_undetectable_formats_name_the_accepted_ones(data: bytes) -> None:
    with pytest.raises(InvalidRequestError, match=r"\.txt.*\.md.*\.epub") as caught:
        detect_format("upload.pdf", "application/pdf", data)
    assert caught.value.param == "file"


def test_jsonl_items_keep_their_other_fields_as_options() -> None:
    lines = [
        {"id": "ch-1.a_b", "input": "Hello.", "voice": "joe", "speed": 1.25},
        {"id": "2", "input": "World\u2028again."},
    ]
    data = ("\ufeff" + "\r\n\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n  \n").encode()
    assert parse_jsonl(data, max_items=2, max_chars=100) == [
        BatchItem("ch-1.a_b", "Hello.", {"voice": "joe", "speed": 1.25}),
        BatchItem("2", "World\u2028again.", {}),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2 is not valid JSON"),
        ("[1, 2]", "line 2 is not a JSON object"),
        ('{"input": "no id"}', "line 2: id must be"),
        ('{"id": "has space", "input": "x"}', "line 2: id must be"),
        ('{"id": 7, "input": "x"}', "line 2: id must be"),
        (json.dumps({"id": "x" * 129, "input": "x"}), "line 2: id must be"),
        ('{"id": "b"}', "line 2: input must be a non-empty string"),
        ('{"id": "b", "input": "  "}', "line 2: input must be a non-empty string"),
        ('{"id": "a", "input": "again"}', "line 2: id 'a' is used by an earlier line"),
        ("[" * 100_000, "line 2 is not valid JSON"),
    ],
)
def test_bad_jsonl_lines_are_named(line: str, message: str) -> None:
    data = f'{{"id": "a", "input": "first"}}\n{line}\n'.encode()
    with pytest.raises(InvalidRequestError, match=message) as caught:
        parse_jsonl(data, max_items=10, max_chars=1000)
    assert caught.value.param == "file"


def test_jsonl_limits() -> None:
    data = b'{"id": "a", "input": "12345"}\n{"id": "b", "input": "6789"}\n'
    with pytest.raises(InvalidRequestError, match="more than 1 items"):
        parse_jsonl(data, max_items=1, max_chars=1000)
    with pytest.raises(InputTooLongError, match="9 characters of input; the limit is 8"):
        parse_jsonl(data, max_items=2, max_chars=8)
    with pytest.raises(InvalidRequestError, match="no items"):
        parse_jsonl(b"\n \n", max_items=2, max_chars=8)
    with pytest.raises(InvalidRequestError, match="not UTF-8 text"):
        parse_jsonl(b'{"id": "a", "input": "\xff"}', max_items=2, max_chars=8)


def test_a_pattern_that_backtracks_is_refused_once_the_documents_budget_is_spent() -> None:
    # ~0.1 s a line here (the backreference defeats the regex engine's shortcuts), 60 lines: well past 1 s.
    text = "\n".join("a" * 3000 + "!" for _ in range(60))
    started = time.monotonic()
    with pytest.raises(InvalidRequestError, match="too long to match") as refused:
        parse_text(text, markdown=False, chapter_pattern=r"(a+)+\1b")
    assert refused.value.param == "chapter_pattern"
    assert time.monotonic() - started < 10  # the budget is 1 s; the bound only catches a pattern left to run
