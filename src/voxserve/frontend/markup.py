"""Markdown and emoji out of a language model's streamed reply, so that speech does not read them aloud.

A reply arrives a token at a time, and it is Markdown. `MarkupFilter.push` returns the speakable text that is
decided so far and holds back only what a later character could still change, never more than `MAX_HELD_CHARS`;
how the text is cut into pieces never changes the result. The rules:

- Fenced code blocks (``` or ~~~ at a line start, with any info string) are dropped whole; a paragraph break
  stands in for them. A fence that never closes drops the rest of the text. (```x``` on one line is inline code.)
- Inline code keeps its text, as written, without the backticks. It ends at its closing backticks or the line end.
- Emphasis markers (*, **, _, __, ~~) are dropped. A lone * with spaces or digits on both sides (2 * 3, 2*3)
  stays, as do one to three _ between letters or digits (snake_case stays snake_case) and a lone ~ (~5 minutes).
- Headings (# to ###### and a space), bullet items (-, *, + or • and a space, with a task box [ ] or [x]) and
  thematic breaks (---, ***, ___ or === on a line of their own) lose their markers. Numbered items (1. or 1) and
  a space) keep their number, which is worth saying. Each of these lines is a paragraph of its own. Blockquote
  markers (>) are dropped.
- Links [text](url) and images ![alt](url) become their text; brackets that make no link stay as written.
  Autolinks <https://www.example.com/path> become the host (example.com), <mailto:me@example.org> and
  <me@example.org> the address; bare URLs stay as written.
- HTML tags (<b>, </b>, <!-- ... -->) are dropped, <br> becomes a space. A < that cannot start a tag (a < b,
  3 <4) stays.
- Emoji and pictographic symbols (★ ✓ ▶ © ® ™) are dropped, with skin tones, joiners, variation selectors, flags,
  tags and keycap marks; a keycap's digit stays (1️⃣ reads "1"). Letters of every script, digits, punctuation,
  arrows and currency signs stay.
- A backslash before ASCII punctuation makes it plain text: \\* is a star.

Lines: a blank line, and the end of a heading, list item, thematic break or code block, is a paragraph break,
written as exactly "\\n\\n" (never two in a row, never at the start); any other newline stays a single "\\n".
Indentation is dropped. Text without markup passes through unchanged.

A link's [text or a <tag still open at its line end, or holding more than `MAX_HELD_CHARS` characters, was
none: it is spoken as written. A link's (target is dropped up to its ) or the line end.
"""

from __future__ import annotations

import re
import unicodedata
from enum import Enum, auto

MAX_HELD_CHARS = 200
"""The most characters `MarkupFilter` holds back undecided; a construct open any longer is released as text."""

# Besides a link's text and a tag, at most 8 characters are held (a marker run, brackets, a lookahead): the bound
# needs counting only past this.
_BOUND_CHECK_FROM = MAX_HELD_CHARS - 8
# The longest line-start marker worth waiting for ("123456789. " and spaces); a longer one is text.
_PREFIX_MAX_CHARS = 32
# Emoji: symbols (and unassigned code points, tomorrow's emoji) in the pictograph blocks, which hold emoji and
# decoration (★ ✓ ☐ ▶ ⭐), never words; the emoji among older symbols (© ® ™ ㊗ ㊙); and the pieces of emoji
# sequences (keycap mark, variation selectors, tags). Arrows, enclosed letters and pictographic punctuation (‼)
# stay. Skin tones and flag letters are symbols in the U+1F000 block.
_PICTOGRAPH_BLOCKS = ((0x2300, 0x23FF), (0x25A0, 0x27BF), (0x2B00, 0x2BFF), (0x1F000, 0x1FFFF))
_EMOJI_PIECES = (0xA9, 0xAE, 0x2122, 0x20E3, 0x3297, 0x3299, *range(0xFE00, 0xFE10), *range(0xE0020, 0xE0080))
_JOINER = "\u200d"


def _emoji_codes() -> frozenset[int]:
    symbols = (
        code
        for low, high in _PICTOGRAPH_BLOCKS
        for code in range(low, high + 1)
        if unicodedata.category(chr(code)) in ("So", "Sk", "Cn")
    )
    return frozenset((*symbols, *_EMOJI_PIECES))


def _char_class(codes: frozenset[int]) -> str:
    """The inside of a regular-expression [...] that matches exactly `codes`, as ranges."""
    ranges: list[list[int]] = []
    for code in sorted(codes):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "".join(f"{re.escape(chr(low))}-{re.escape(chr(high))}" for low, high in ranges)


_EMOJI_CODES = _emoji_codes()
_EMOJI = _char_class(_EMOJI_CODES)
# Runs taken in one step: emoji sequences (dropped), text without markup, and runs of one marker character.
_EMOJI_RUN = re.compile(f"[{_EMOJI}][{_EMOJI}{_JOINER}]*")
_PLAIN = re.compile(f"[^\n\r*_~`\\[!<\\\\{_JOINER}{_EMOJI}]+")
_CODE_TEXT = re.compile(f"[^\n\r`{_JOINER}{_EMOJI}]+")
_INLINE_MARKUP = frozenset(f"\n\r*_~`[!<\\{_JOINER}")
_CODE_MARKUP = frozenset(f"\n\r`{_JOINER}")
_RUNS = {char: re.compile(f"{re.escape(char)}+") for char in "*_~`"}
_RULE_RUNS = {char: re.compile(f"[{re.escape(char)} \t]+") for char in "-*_="}
_TARGET_TEXT = re.compile(r"[^\n\r()]+")
_LINE_REST = re.compile(r"[^\n]+")
# Markers at a line start, in the order they are tried: a thematic break before a bullet ("- - -").
_MARKER = re.compile(
    r"(?P<rule>([-*_=])(?:[ \t]*\2){2,})[ \t]*"
    r"|(?P<heading>\#{1,6})(?:[ \t]+|$)"
    r"|(?P<bullet>[-*+•])[ \t]+(?:\[[ xX]\](?:[ \t]+|$))?"
    r"|(?P<number>\d{1,9}[.)])[ \t]+"
    r"|(?P<fence>`{3,}|~{3,})"
)
# Line starts that more characters could still make a (longer) marker, so they wait.
_MARKER_SO_FAR = re.compile(
    r"([-*_=])(?:[ \t]*\1)*[ \t]*"
    r"|\#{1,6}[ \t]*"
    r"|[-*+•](?:[ \t]+(?:\[(?:[ xX](?:\][ \t]*)?)?)?)?"
    r"|\d{1,9}(?:[.)][ \t]*)?"
    r"|`+|~+"
)
_MARKER_START = frozenset("#-*_=+•`~0123456789")
_ESCAPABLE = frozenset(r"""!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~""")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{1,31}://(?:[^/?#@\s]*@)?(?:www\.)?(?P<host>[^/?#:@\s]+)(?:[:/?#]\S*)?")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{1,31}:(?P<host>\S+)")
_EMAIL = re.compile(r"(?P<host>[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+)")
_LINE_BREAK_TAG = re.compile(r"br\s*/?", re.IGNORECASE)


class _Mode(Enum):
    LINE_START = auto()
    INLINE = auto()
    CODE_SPAN = auto()
    TAG = auto()
    LINK_TARGET = auto()
    FENCE_INFO = auto()
    FENCE_BODY = auto()
    RULE = auto()


class MarkupFilter:
    """Streaming Markdown and emoji remover for one text (the module docstring has the rules).

    `push` takes the next piece of text, of any size, and returns the speakable text now decided; `end` returns
    the rest and readies the filter for a new text. For any cutting of a text into pieces, the joined returns
    equal `strip_markup` of the whole. Each character is looked at a bounded number of times, and at most
    `MAX_HELD_CHARS` are held back (`held_chars`). Never raises on any string.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._out: list[str] = []
        self._started = False  # whether anything has been written: no break may come first
        self._newlines = 0  # newlines at the end of what was written
        self._mode = _Mode.LINE_START
        self._line_is_paragraph = False  # heading, list item or rule: its line end is a paragraph break
        self._prefix = ""  # line-start characters that may still be a marker
        self._prev = " "  # the input character before the current one, for deciding emphasis markers
        self._after_emoji = False  # a joiner after an emoji joins emoji, elsewhere it spells a script
        self._run_char = ""  # a run of * _ ~ or ` whose meaning waits on the character after it
        self._run_len = 0
        self._lookahead = ""  # ! < \ or a link's ], whose meaning waits on the next character
        self._link: list[str] | None = None  # a link's text, filtered, until its ]( shows it is one
        self._link_len = 0
        self._link_depth = 0
        self._link_image = False
        self._tag: list[str] | None = None  # raw text after <, until its > shows it is a tag
        self._replaying = 0  # released text is fed again with no new holds, so each character is held at most once
        self._code_ticks = 0
        self._target_depth = 0
        self._fence = ""
        self._fence_info: list[str] | None = None  # a ``` fence's info string: a backtick in it makes inline code
        self._fence_run = 0  # fence characters at the start of a code line; -1: the line holds other text
        self._fence_trailing = False
        self._rule_char = ""

    @property
    def held_chars(self) -> int:
        """Characters received but not yet decided; never more than `MAX_HELD_CHARS`."""
        held = len(self._prefix) + len(self._lookahead) + len(self._fence_info or ())
        if self._run_len <= 3 and self._run_char != "`":
            held += self._run_len
        if self._link is not None:
            held += 1 + self._link_image + self._link_len
        if self._tag is not None:
            held += 1 + len(self._tag)
        return held

    def push(self, text: str) -> str:
        """Take the next piece of the text; return the speakable text that no later piece can change."""
        self._feed(text)
        return self._take_output()

    def end(self) -> str:
        """The rest of the speakable text, once no more comes; the filter then starts a new text."""
        if self._mode is _Mode.LINE_START and self._prefix:
            self._resolve_prefix()
        self._close_inline()
        output = self._take_output()
        self._reset()
        return output

    def _take_output(self) -> str:
        output = "".join(self._out)
        self._out.clear()
        return output

    # Writing: the output layer keeps breaks exact and lines free of leading whitespace.

    def _write(self, text: str) -> None:
        if self._newlines or not self._started:
            text = text.lstrip()
            if not text:
                return
        self._out.append(text)
        self._started = True
        self._newlines = 0

    def _newline(self, count: int) -> None:
        if self._started and self._newlines < count:
            self._out.append("\n" * (count - self._newlines))
            self._newlines = count

    def _break(self) -> None:
        self._newline(2)

    def _sink(self, text: str) -> None:
        if self._link is None:
            self._write(text)
        else:
            self._link.append(text)
            self._link_len += len(text)

    def _text(self, char: str) -> None:
        if ord(char) in _EMOJI_CODES or (char == _JOINER and self._after_emoji):
            self._after_emoji = True
            return
        self._after_emoji = False
        self._sink(char)

    # The driver: one character at a time, except runs that mean nothing in the current mode.

    def _feed(self, text: str) -> None:
        index, size = 0, len(text)
        while index < size:
            mode = self._mode
            skipped = index
            if mode is _Mode.INLINE or mode is _Mode.CODE_SPAN:
                skipped = self._skip_inline(text, index, mode)
            elif mode is _Mode.LINK_TARGET or mode is _Mode.FENCE_BODY or mode is _Mode.RULE:
                skipped = self._skip_dropped(text, index, mode)
            if skipped > index:
                index = skipped
            else:
                char = text[index]
                index += 1
                if char == "\n":
                    self._end_line()
                elif char != "\r":
                    self._step(char)
            if self._link_len + len(self._tag or ()) > _BOUND_CHECK_FROM:
                self._keep_bound()

    def _skip_dropped(self, text: str, index: int, mode: _Mode) -> int:
        """Past the run from `index` that this mode drops whole, if any."""
        if mode is _Mode.LINK_TARGET:
            match = _TARGET_TEXT.match(text, index)
        elif mode is _Mode.FENCE_BODY and self._fence_run < 0:
            match = _LINE_REST.match(text, index)
        elif mode is _Mode.RULE:
            match = _RULE_RUNS[self._rule_char].match(text, index)
        else:
            match = None
        return match.end() if match else index

    def _skip_inline(self, text: str, index: int, mode: _Mode) -> int:
        char = text[index]
        if self._run_char:
            if char != self._run_char:
                return index
            end = _RUNS[char].match(text, index).end()  # type: ignore[union-attr]
            self._run_len += end - index
            return end
        if self._lookahead or char in (_INLINE_MARKUP if mode is _Mode.INLINE else _CODE_MARKUP):
            return index
        if ord(char) in _EMOJI_CODES:
            end = _EMOJI_RUN.match(text, index).end()  # type: ignore[union-attr]
            self._after_emoji = True
        elif self._link is None:
            end = (_PLAIN if mode is _Mode.INLINE else _CODE_TEXT).match(text, index).end()  # type: ignore[union-attr]
            self._write(text[index:end])
            self._after_emoji = False
        else:
            return index
        if mode is _Mode.INLINE:
            self._prev = text[end - 1]
        return end

    def _step(self, char: str) -> None:
        mode = self._mode
        if mode is _Mode.INLINE:
            self._inline(char)
        elif mode is _Mode.LINE_START:
            self._line_start(char)
        elif mode is _Mode.CODE_SPAN:
            self._code_span(char)
        elif mode is _Mode.TAG:
            self._tag_char(char)
        elif mode is _Mode.LINK_TARGET:
            self._link_target(char)
        elif mode is _Mode.FENCE_INFO:
            self._fence_info_char(char)
        elif mode is _Mode.FENCE_BODY:
            self._fence_body(char)
        else:
            self._rule(char)

    def _keep_bound(self) -> None:
        while self.held_chars > MAX_HELD_CHARS and (self._tag is not None or self._link is not None):
            if self._tag is not None:
                self._release_tag()
            else:
                self._release_link()

    # Line starts: markers are held until the next character shows whether they are one.

    def _line_start(self, char: str) -> None:
        if not self._prefix:
            if char in " \t>":  # indentation and blockquote markers
                return
            if char not in _MARKER_START:
                self._enter_inline()
                self._inline(char)
                return
        self._prefix += char
        if len(self._prefix) > _PREFIX_MAX_CHARS or not _MARKER_SO_FAR.fullmatch(self._prefix):
            self._resolve_prefix()

    def _resolve_prefix(self) -> None:
        prefix, self._prefix = self._prefix, ""
        match = _MARKER.match(prefix)
        if match is None:
            self._enter_inline()
            self._feed(prefix)
            return
        kind = match.lastgroup
        if kind == "fence":
            self._open_fence(match.group(kind))
        else:
            self._break()
            self._line_is_paragraph = True
            self._enter_inline()
        if kind == "rule":
            self._rule_char = prefix[0]
            self._mode = _Mode.RULE
        elif kind == "number":
            self._write(match.group(kind) + " ")
        if match.end() < len(prefix):
            self._feed(prefix[match.end() :])

    def _enter_inline(self) -> None:
        self._mode = _Mode.INLINE
        self._prev = " "

    def _end_line(self) -> None:
        if self._mode is _Mode.LINE_START and self._prefix:
            self._resolve_prefix()
        mode = self._mode
        if mode is _Mode.FENCE_INFO:
            self._confirm_fence()
            self._mode = _Mode.FENCE_BODY
        elif mode is _Mode.FENCE_BODY:
            self._end_code_line()
        else:
            self._close_inline()
            self._newline(2 if mode is _Mode.LINE_START or self._line_is_paragraph else 1)
            self._mode = _Mode.LINE_START
            self._line_is_paragraph = False

    def _close_inline(self) -> None:
        """Decide everything held at a line end or the text end, where no construct continues."""
        if self._mode is _Mode.TAG:
            self._release_tag()
        if self._lookahead:
            self._take_lookahead("\n")
        if self._run_char:
            if self._mode is _Mode.INLINE and self._run_char != "`":
                self._settle_run("\n")
            self._run_char, self._run_len = "", 0
        if self._link is not None:
            self._release_link()

    # Inline text: emphasis runs, escapes, links, tags and code spans.

    def _inline(self, char: str) -> None:
        if self._lookahead and self._take_lookahead(char):
            return
        if self._run_char:
            if char == self._run_char:
                self._run_len += 1
                return
            self._settle_run(char)
            if self._mode is not _Mode.INLINE:  # backticks opened a code span
                self._step(char)
                return
        if char in "*_~`":
            self._run_char, self._run_len = char, 1
            return  # the character before the run stays `_prev`
        if char in "!<\\":
            self._lookahead = char
        elif char == "[":
            self._open_link(image=False)
        elif char == "]" and self._link is not None:
            self._close_bracket()
        else:
            self._text(char)
        self._prev = char

    def _settle_run(self, following: str) -> None:
        char, count = self._run_char, self._run_len
        self._run_char, self._run_len = "", 0
        prev = self._prev
        if char == "`":
            self._code_ticks = count
            self._mode = _Mode.CODE_SPAN
        elif char == "*":
            # A lone star between spaces or digits is arithmetic (2 * 3, 2*3), anything else is emphasis.
            spaced = prev.isspace() and following.isspace()
            if count == 1 and (spaced or (prev.isdigit() and following.isdigit())):
                self._sink("*")
        elif char == "_":
            if count <= 3 and prev.isalnum() and following.isalnum():  # snake_case, SOME__NAME
                self._sink("_" * count)
        elif count == 1:  # a lone ~ is "about": ~5 minutes
            self._sink("~")

    def _take_lookahead(self, char: str) -> bool:
        """Decide the held !, <, \\ or ] now that `char` follows; True when `char` belongs to it."""
        held, self._lookahead = self._lookahead, ""
        if held == "]":
            return self._after_bracket(char)
        if held == "\\" and char in _ESCAPABLE:
            self._sink(char)
            self._prev = char
            return True
        if held == "!" and char == "[" and self._link is None and not self._replaying:
            self._open_link(image=True)
            self._prev = char
            return True
        if held == "<" and ((char.isascii() and char.isalpha()) or char in "/!") and not self._replaying:
            self._tag = [char]
            self._mode = _Mode.TAG
            return True
        self._sink(held)
        return False

    def _after_bracket(self, char: str) -> bool:
        if self._link is None:  # the link was released as text while its ] waited
            self._sink("]")
            return False
        if char != "(":
            self._release_link("]")
            return False
        self._finish_link()
        self._target_depth = 0
        self._mode = _Mode.LINK_TARGET
        return True

    def _open_link(self, *, image: bool) -> None:
        if self._link is not None:  # brackets inside a link's text are text
            self._link_depth += 1
            self._sink("[")
        elif self._replaying:
            self._sink("[")
        else:
            self._link, self._link_len, self._link_depth, self._link_image = [], 0, 0, image

    def _close_bracket(self) -> None:
        if self._link_depth:
            self._link_depth -= 1
            self._sink("]")
        else:
            self._lookahead = "]"

    def _finish_link(self) -> None:
        text = "".join(self._link or ())
        self._link = None
        self._write(text)

    def _release_link(self, closing: str = "") -> None:
        opening = "![" if self._link_image else "["
        text = "".join(self._link or ())
        self._link = None
        self._write(opening + text + closing)

    def _link_target(self, char: str) -> None:
        if char == "(":
            self._target_depth += 1
        elif char == ")":
            if self._target_depth:
                self._target_depth -= 1
            else:
                self._mode = _Mode.INLINE
                self._prev = char

    def _tag_char(self, char: str) -> None:
        if char == ">":
            self._close_tag()
        elif char == "<":
            self._release_tag()
            self._step(char)
        elif self._tag is not None:
            self._tag.append(char)

    def _close_tag(self) -> None:
        raw = "".join(self._tag or ())
        self._tag = None
        self._mode = _Mode.INLINE
        self._prev = ">"
        link = _URL.fullmatch(raw) or _URI.fullmatch(raw) or _EMAIL.fullmatch(raw)
        if link:
            self._sink(link.group("host"))
        elif _LINE_BREAK_TAG.fullmatch(raw):
            self._sink(" ")  # "one<br>two" is two words

    def _release_tag(self) -> None:
        raw = "".join(self._tag or ())
        self._tag = None
        self._mode = _Mode.INLINE
        self._sink("<")
        self._prev = "<"
        self._replay(raw)

    def _replay(self, text: str) -> None:
        self._replaying += 1
        try:
            self._feed(text)
        finally:
            self._replaying -= 1

    def _code_span(self, char: str) -> None:
        if self._run_char:
            if char == "`":
                self._run_len += 1
                return
            ticks, self._run_char, self._run_len = self._run_len, "", 0
            if ticks == self._code_ticks:
                self._mode = _Mode.INLINE
                self._prev = "`"
                self._inline(char)
                return
        if char == "`":  # backticks of another length are text, but never worth saying
            self._run_char, self._run_len = char, 1
        else:
            self._text(char)

    # Code fences and thematic breaks.

    def _open_fence(self, fence: str) -> None:
        self._fence = fence
        self._mode = _Mode.FENCE_INFO
        if fence[0] == "`":
            self._fence_info = []  # a backtick before the line end still makes this inline code
        else:
            self._break()

    def _fence_info_char(self, char: str) -> None:
        if self._fence_info is None:
            return
        if char == "`":
            info = "".join(self._fence_info)
            self._fence_info = None
            self._enter_inline()
            self._feed(self._fence + info)
            self._step(char)
            return
        self._fence_info.append(char)
        if self.held_chars > MAX_HELD_CHARS:
            self._confirm_fence()

    def _confirm_fence(self) -> None:
        if self._fence_info is not None:
            self._fence_info = None
            self._break()
        self._fence_run, self._fence_trailing = 0, False

    def _fence_body(self, char: str) -> None:
        if self._fence_run < 0:
            return
        if char == self._fence[0] and not self._fence_trailing:
            self._fence_run += 1
        elif char in " \t":
            self._fence_trailing = self._fence_run > 0
        elif char != ">" or self._fence_run:  # a fence in a blockquote closes behind its >
            self._fence_run = -1

    def _end_code_line(self) -> None:
        if self._fence_run >= len(self._fence):
            self._break()
            self._mode = _Mode.LINE_START
        self._fence_run, self._fence_trailing = 0, False

    def _rule(self, char: str) -> None:
        if char != self._rule_char and char not in " \t":
            self._enter_inline()
            self._inline(char)


def strip_markup(text: str) -> str:
    """`text` as speech should read it: `MarkupFilter` over the whole text at once."""
    markup_filter = MarkupFilter()
    return markup_filter.push(text) + markup_filter.end()
