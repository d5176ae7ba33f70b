"""Uploaded long-form text (plain, Markdown, EPUB) and batch files (JSONL) to plain, speakable text.

Uploads are hostile input: every failure, whatever library detects it, leaves here as a `VoxError`, and EPUB
archives are sized before anything is decompressed.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
from dataclasses import dataclass
from typing import Any

import regex
from ebooklib import epub
from lxml import html
from markdown_it import MarkdownIt
from markdown_it.token import Token

from voxserve.errors import InputTooLongError, InvalidRequestError, PayloadTooLargeError, VoxError
from voxserve.frontend.normalize import normalize_whitespace


@dataclass(frozen=True, slots=True)
class Chapter:
    """A run of paragraphs under one heading, so a job can report progress and split audio by chapter.

    `title` is "" for text before the first heading (or a document without any); `paragraphs` holds at least
    one non-empty, whitespace-normalized string: a heading with no text under it is not a chapter.
    """

    title: str
    paragraphs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One line of a JSONL batch; `options` are its other fields, left for the request model to validate."""

    id: str
    input: str
    options: dict[str, object]


DOCUMENT_FORMATS = ("text", "markdown", "epub")

_FORMAT_BY_EXTENSION = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".epub": "epub"}
_FORMAT_BY_CONTENT_TYPE = {
    "text/plain": "text",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "application/epub+zip": "epub",
}
# OCF requires the first zip entry to be an uncompressed `mimetype` file, so an EPUB is recognized from fixed
# bytes without decompressing anything: local header (30 bytes), the entry name, then its content.
_EPUB_MAGIC = b"PK\x03\x04"
_EPUB_MIMETYPE = b"mimetypeapplication/epub+zip"

_MAX_PATTERN_CHARS = 200
PATTERN_BUDGET_S = 1.0  # regex time for matching chapter_pattern against every line of one document
# An EPUB may hold images and fonts besides its text, but not without bound.
_EPUB_BYTES_PER_CHAR = 50
_EPUB_MAX_ENTRIES = 2000

# Tables are enabled so that they are recognized and dropped rather than read out pipe by pipe; strikethrough so
# that `~~` is not spoken.
_MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
_SPOKEN_INLINE = frozenset({"text", "code_inline"})
_CHAPTER_HEADINGS = frozenset({"h1", "h2"})

# Elements that continue the current paragraph; any other element starts and ends one, so unknown containers
# (section, figure, td) never glue their neighbours' text together.
_HTML_INLINE = frozenset(
    {
        "a", "abbr", "b", "bdi", "bdo", "big", "br", "cite", "code", "data", "del", "dfn", "em", "font", "i", "img",
        "ins", "kbd", "label", "mark", "q", "rb", "ruby", "s", "samp", "small", "span", "strike", "strong", "sub",
        "sup", "time", "tt", "u", "var", "wbr",
    }
)  # fmt: skip
# Dropped with their content, without ending the paragraph around them; ruby annotations (rt, rp) would repeat
# the text they annotate.
_HTML_UNSPOKEN = frozenset({"head", "script", "style", "nav", "template", "rp", "rt"})
_HTML_TITLES = ("h1", "h2", "h3")

_BATCH_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def detect_format(filename: str, content_type: str | None, data: bytes) -> str:
    """One of `DOCUMENT_FORMATS`, from the extension, else the content type, else the bytes: clients label
    uploads unreliably, so each clue is tried in turn."""
    extension = os.path.splitext(filename)[1].lower()
    media_type = (content_type or "").split(";")[0].strip().lower()
    if extension in _FORMAT_BY_EXTENSION:
        return _FORMAT_BY_EXTENSION[extension]
    if media_type in _FORMAT_BY_CONTENT_TYPE:
        return _FORMAT_BY_CONTENT_TYPE[media_type]
    if data.startswith(_EPUB_MAGIC) and data[30 : 30 + len(_EPUB_MIMETYPE)] == _EPUB_MIMETYPE:
        return "epub"
    raise _unsupported_format()


def parse_document(data: bytes, fmt: str, *, chapter_pattern: str | None = None, max_chars: int) -> list[Chapter]:
    """The chapters of an uploaded document in `fmt` (see `parse_text` for `chapter_pattern`).

    Raises InvalidRequestError for unreadable or empty files, PayloadTooLargeError for an EPUB that unpacks to
    more than 50 bytes per allowed character, and InputTooLongError when the paragraphs hold more than
    `max_chars` characters, so a job is refused before any synthesis starts.
    """
    if fmt == "epub":
        chapters = _require_text(_epub_chapters(data, max_bytes=_EPUB_BYTES_PER_CHAR * max_chars))
    elif fmt in DOCUMENT_FORMATS:
        chapters = parse_text(_decode(data), markdown=fmt == "markdown", chapter_pattern=chapter_pattern)
    else:
        raise _unsupported_format()
    total = sum(len(paragraph) for chapter in chapters for paragraph in chapter.paragraphs)
    if total > max_chars:
        raise InputTooLongError(f"the document has {total} characters of text; the limit is {max_chars}", param="input")
    return chapters


def parse_text(text: str, *, markdown: bool, chapter_pattern: str | None = None) -> list[Chapter]:
    """Chapters of plain text or Markdown; paragraphs are separated by blank lines.

    Markdown chapters start at level-1 and level-2 headings and markup is never spoken: images, code blocks,
    HTML and tables are dropped, links keep their text. Plain text is one untitled chapter unless
    `chapter_pattern`, a case-insensitive regex, matches a whole (stripped) line, which then titles a new chapter;
    Markdown ignores the pattern, its headings already say where chapters start.
    """
    if markdown:
        return _require_text(_markdown_chapters(text))
    pattern = None if chapter_pattern is None else _compile_pattern(chapter_pattern)
    return _require_text(_text_chapters(text, pattern))


def parse_jsonl(data: bytes, *, max_items: int, max_chars: int) -> list[BatchItem]:
    """Batch items, one JSON object per non-empty line, each with a unique `id` and a non-empty `input`.

    Stops at the first bad line, naming it, and at item `max_items + 1`, so a huge file is not read to the end.
    """
    items: list[BatchItem] = []
    seen: set[str] = set()
    # JSON Lines separates records by "\n" only; str.splitlines would also split at U+2028 inside a string.
    for number, line in enumerate(_decode(data).split("\n"), start=1):
        if not line.strip():
            continue
        if len(items) == max_items:
            raise InvalidRequestError(f"the batch has more than {max_items} items", param="file")
        item = _batch_item(line, number)
        if item.id in seen:
            raise InvalidRequestError(f"line {number}: id {item.id!r} is used by an earlier line", param="file")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise InvalidRequestError("the batch file has no items", param="file")
    total = sum(len(item.input) for item in items)
    if total > max_chars:
        raise InputTooLongError(f"the batch has {total} characters of input; the limit is {max_chars}", param="input")
    return items


class _ChapterBuilder:
    """Collects paragraphs under the latest title; a title with no paragraphs under it is dropped."""

    def __init__(self) -> None:
        self._chapters: list[Chapter] = []
        self._title = ""
        self._paragraphs: list[str] = []

    def start(self, title: str) -> None:
        self._close()
        self._title = normalize_whitespace(title)

    def add(self, paragraph: str) -> None:
        if paragraph := normalize_whitespace(paragraph):
            self._paragraphs.append(paragraph)

    def chapters(self) -> list[Chapter]:
        self._close()
        return self._chapters

    def _close(self) -> None:
        if self._paragraphs:
            self._chapters.append(Chapter(self._title, tuple(self._paragraphs)))
        self._paragraphs = []


def _text_chapters(text: str, pattern: regex.Pattern[str] | None) -> list[Chapter]:
    chapters = _ChapterBuilder()
    lines: list[str] = []
    deadline = time.monotonic() + PATTERN_BUDGET_S
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not (pattern and _heading(pattern, stripped, deadline)):
            lines.append(stripped)
            continue
        chapters.add(" ".join(lines))
        lines.clear()
        if stripped:
            chapters.start(stripped)
    chapters.add(" ".join(lines))
    return chapters.chapters()


def _heading(pattern: regex.Pattern[str], line: str, deadline: float) -> bool:
    """Whether `line` matches the client's pattern, within what is left of the document's matching budget: a
    pattern that backtracks without end (`(a+)+$`) is refused rather than left to hold a thread."""
    try:
        return pattern.fullmatch(line, timeout=max(deadline - time.monotonic(), 0.001)) is not None
    except TimeoutError as exc:
        raise InvalidRequestError(
            f"chapter_pattern takes too long to match (over {PATTERN_BUDGET_S:g} s for the document); simplify it",
            param="chapter_pattern",
        ) from exc


def _compile_pattern(chapter_pattern: str) -> regex.Pattern[str]:
    if len(chapter_pattern) > _MAX_PATTERN_CHARS:
        raise InvalidRequestError(
            f"chapter_pattern is longer than {_MAX_PATTERN_CHARS} characters", param="chapter_pattern"
        )
    try:
        return regex.compile(chapter_pattern, regex.IGNORECASE | regex.VERSION0)
    except regex.error as exc:
        raise InvalidRequestError(f"chapter_pattern is not a valid regex: {exc}", param="chapter_pattern") from exc


def _markdown_chapters(text: str) -> list[Chapter]:
    chapters = _ChapterBuilder()
    item_text: list[str] = []  # a list item is one paragraph, however many paragraphs it holds
    item_depth = 0
    in_table = False
    tokens = _MARKDOWN.parse(text)
    for index, token in enumerate(tokens):
        if token.type in ("list_item_open", "list_item_close"):
            chapters.add(" ".join(item_text))
            item_text.clear()
            item_depth += 1 if token.type == "list_item_open" else -1
        elif token.type in ("table_open", "table_close"):
            in_table = token.type == "table_open"
        elif token.type == "inline" and not in_table:
            spoken, opener = _inline_text(token), tokens[index - 1]  # an inline run always follows its opener
            if opener.type == "heading_open" and opener.tag in _CHAPTER_HEADINGS:
                chapters.start(spoken)
            elif item_depth:
                item_text.append(spoken)
            else:
                chapters.add(spoken)
    return chapters.chapters()


def _inline_text(token: Token) -> str:
    """The spoken text of an inline run: markers, link targets, images and inline HTML are left out."""
    parts = []
    for child in token.children or []:
        if child.type in _SPOKEN_INLINE:
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return "".join(parts)


def _epub_chapters(data: bytes, *, max_bytes: int) -> list[Chapter]:
    """One chapter per linear spine document that has text, in reading order."""
    try:
        _check_archive(data, max_bytes=max_bytes)
        book = _BoundedEpubReader(io.BytesIO(data), max_bytes=max_bytes).load()
        toc_titles = _toc_titles(book.toc)
        chapters = []
        for idref, linear in book.spine:
            item = book.get_item_with_id(idref)
            if linear != "no" and isinstance(item, epub.EpubHtml) and not isinstance(item, epub.EpubNav):
                chapters.append(_html_chapter(item.content, toc_titles.get(item.file_name, "")))
    except VoxError:
        raise
    # ebooklib, zipfile and lxml fail in many ways on a damaged or hostile file; none of it is the server's fault.
    except Exception as exc:
        raise InvalidRequestError("the file is not a readable EPUB", param="file") from exc
    return [chapter for chapter in chapters if chapter.paragraphs]


def _check_archive(data: bytes, *, max_bytes: int) -> None:
    """Refuses zip bombs from the central directory alone, before anything is decompressed."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = archive.infolist()
    if len(entries) > _EPUB_MAX_ENTRIES:
        raise InvalidRequestError(f"the EPUB has more than {_EPUB_MAX_ENTRIES} files", param="file")
    if sum(entry.file_size for entry in entries) > max_bytes:
        raise PayloadTooLargeError(f"the EPUB unpacks to more than {max_bytes} bytes", param="file")


class _BoundedEpubReader(epub.EpubReader):
    """ebooklib's reader with a cap on the bytes it decompresses: a manifest can name one large entry many times,
    which the archive's declared sizes do not reveal."""

    def __init__(self, file: io.BytesIO, *, max_bytes: int) -> None:
        super().__init__(file)
        self._bytes_left = max_bytes

    def read_file(self, name: str) -> bytes:
        content: bytes = super().read_file(name)
        self._bytes_left -= len(content)
        if self._bytes_left < 0:
            raise PayloadTooLargeError("the EPUB unpacks to more bytes than allowed", param="file")
        return content


def _toc_titles(entries: list[Any]) -> dict[str, str]:
    """Table-of-contents titles by document file name; ebooklib nests sections as (Section, children) tuples."""
    titles: dict[str, str] = {}
    for entry in entries:
        node, children = entry if isinstance(entry, tuple) else (entry, [])
        titles.setdefault(node.href.partition("#")[0], normalize_whitespace(node.title or ""))
        for href, title in _toc_titles(children).items():
            titles.setdefault(href, title)
    return titles


def _html_chapter(content: bytes, toc_title: str) -> Chapter:
    """The document's first h1-h3 titles it (and is not repeated as a paragraph), else its TOC entry."""
    parser = html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True)
    root = html.document_fromstring(content, parser=parser)
    heading = next(root.iter(*_HTML_TITLES), None)
    title = "" if heading is None else " ".join(_HtmlParagraphs(heading).paragraphs)
    return Chapter(title or toc_title, tuple(_HtmlParagraphs(root, skip=heading if title else None).paragraphs))


class _HtmlParagraphs:
    """Paragraphs of an HTML tree: each run of inline content between block boundaries is one paragraph."""

    def __init__(self, root: html.HtmlElement, *, skip: html.HtmlElement | None = None) -> None:
        self.paragraphs: list[str] = []
        self._run: list[str] = []
        self._skip = skip
        self._add_block(root)

    def _add_block(self, element: html.HtmlElement) -> None:
        self._flush()
        if element is not self._skip:
            self._run.append(element.text or "")
            self._walk(element)
            self._flush()

    def _walk(self, element: html.HtmlElement) -> None:
        for child in element:
            if child.tag in _HTML_INLINE:
                self._run.append(" " if child.tag == "br" else child.text or "")
                self._walk(child)
            elif child.tag not in _HTML_UNSPOKEN:
                self._add_block(child)
            self._run.append(child.tail or "")

    def _flush(self) -> None:
        if paragraph := normalize_whitespace("".join(self._run)):
            self.paragraphs.append(paragraph)
        self._run = []


def _batch_item(line: str, number: int) -> BatchItem:
    try:
        record = json.loads(line)
    # ValueError covers malformed JSON and over-long integers; RecursionError, absurdly deep nesting.
    except (ValueError, RecursionError) as exc:
        raise InvalidRequestError(f"line {number} is not valid JSON", param="file") from exc
    if not isinstance(record, dict):
        raise InvalidRequestError(f"line {number} is not a JSON object", param="file")
    item_id, text = record.pop("id", None), record.pop("input", None)
    if not isinstance(item_id, str) or not _BATCH_ID.fullmatch(item_id):
        raise InvalidRequestError(
            f"line {number}: id must be a string of 1 to 128 letters, digits, '.', '_' or '-'", param="file"
        )
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequestError(f"line {number}: input must be a non-empty string", param="file")
    return BatchItem(item_id, text, record)


def _decode(data: bytes) -> str:
    # NUL is valid UTF-8 but no text file holds it; it marks a binary upload.
    if b"\x00" in data:
        raise InvalidRequestError("the file is not UTF-8 text", param="file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError("the file is not UTF-8 text", param="file") from exc


def _require_text(chapters: list[Chapter]) -> list[Chapter]:
    if not chapters:
        raise InvalidRequestError("the file has no text to speak", param="file")
    return chapters


def _unsupported_format() -> InvalidRequestError:
    return InvalidRequestError(
        "unsupported document format; upload plain text (.txt, text/plain), Markdown (.md, .markdown, "
        "text/markdown) or EPUB (.epub, application/epub+zip)",
        param="file",
    )
