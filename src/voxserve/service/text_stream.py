"""Speech for text that streams in: an LLM's tokens over a WebSocket, Home Assistant's chunks over Wyoming.

A session holds a client's settings and speaks its text as responses, one after another. Text goes through the
markup filter (Markdown, code and emoji are not spoken), normalization and the incremental segmenter; each segment
is queued the moment its text is decided, so the first audio starts while the rest of the reply is still being
written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from voxserve.errors import InputTooLongError
from voxserve.frontend.markup import MarkupFilter
from voxserve.frontend.normalize import CharacterStream
from voxserve.frontend.segment import SegmentStream
from voxserve.obs.trace import RequestTrace
from voxserve.service.speech import SpeechJob, SpeechService, StreamedSpeech


@dataclass(frozen=True, slots=True)
class TextStreamOptions:
    """How streamed text is spoken (the composition root fills it from `Settings`)."""

    first_segment_max_chars: int
    max_segment_chars: int
    strip_markup: bool  # Markdown markup, code blocks and emoji are not spoken
    lookahead: int  # segments queued ahead of the one being played
    max_response_chars: int  # text one response may take
    idle_timeout_s: float  # a client that sends nothing this long is let go


class TextSpeechSession:
    """One client's streamed speech. `update` changes its settings; `append` starts a response if none is open
    and speaks its text as segments are decided; `flush` speaks what is pending now; `end` closes the response
    (its audio plays out); `cancel` drops it. Not thread-safe: one event loop drives it."""

    def __init__(
        self, speech: SpeechService, options: TextStreamOptions, job: SpeechJob, new_trace: Callable[[], RequestTrace]
    ) -> None:
        self._speech = speech
        self._options = options
        self.job = job
        self._new_trace = new_trace
        self.response: StreamedSpeech | None = None
        self._chars = 0
        self._reset_text()

    def update(self, **fields: object) -> None:
        """New settings (the speech request's fields), checked now by opening a response that is never started;
        they apply from the next response on."""
        job = replace(self.job, **fields)  # type: ignore[arg-type]
        self._speech.open_stream(job, self._new_trace(), lookahead=self._options.lookahead)
        self.job = job

    def check(self, text: str) -> None:
        """`InputTooLongError` if `text` would take the open response past `max_response_chars`."""
        if self._chars + len(text) > self._options.max_response_chars:
            raise InputTooLongError(
                f"a response takes at most {self._options.max_response_chars} characters", param="text"
            )

    def append(self, text: str) -> tuple[StreamedSpeech | None, list[str]]:
        """Speaks `text` after what came before. Returns the response it opened (`None` when one was open
        already) and the segments it decided. Raises what `check` raises."""
        self.check(text)
        opened = None
        if self.response is None:
            trace = self._new_trace()
            opened = self.response = self._speech.open_stream(self.job, trace, lookahead=self._options.lookahead)
        self._chars += len(text)
        self.response.response.trace.input_chars = self._chars
        return opened, self._speak(self._segments.push(self._normalize.push(self._markup(text))))

    def flush(self) -> list[str]:
        """Speaks the text pending now, as if a sentence ended here (markup not closed yet stays pending)."""
        if self.response is None:
            return []
        return self._speak([*self._segments.push(self._normalize.end()), *self._segments.flush()])

    def end(self) -> list[str]:
        """Closes the open response: its last segments are queued, and its audio plays out."""
        if self.response is None:
            return []
        tail = self._markup_filter.end() if self._markup_filter is not None else ""
        segments = self._speak(
            [*self._segments.push(self._normalize.push(tail)), *self._segments.push(self._normalize.end()),
             *self._segments.end()]
        )  # fmt: skip
        self.response.feed.close()
        self._close()
        return segments

    def cancel(self) -> StreamedSpeech | None:
        """Drops the open response's pending text and stops queuing; returns it, so its audio can be stopped."""
        response = self.response
        if response is not None:
            response.feed.close()
        self._close()
        return response

    def _speak(self, segments: list[str]) -> list[str]:
        assert self.response is not None
        for text in segments:
            self.response.feed.put(self.response.segment(text))
        return segments

    def _markup(self, text: str) -> str:
        return text if self._markup_filter is None else self._markup_filter.push(text)

    def _close(self) -> None:
        self.response = None
        self._chars = 0
        self._reset_text()

    def _reset_text(self) -> None:
        options = self._options
        self._markup_filter = MarkupFilter() if options.strip_markup else None
        self._normalize = CharacterStream()
        self._segments = SegmentStream(
            first_segment_max_chars=options.first_segment_max_chars,
            max_segment_chars=options.max_segment_chars,
            growing=True,
        )
