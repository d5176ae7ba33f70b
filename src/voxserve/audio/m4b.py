"""Audiobook files: AAC in an MP4 container (.m4b) with chapter marks, written chunk by chunk to disk.

MP4 keeps its index (the moov atom) after the audio, so the file must be seekable and is only playable once
closed; the whole book never sits in memory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import av
import numpy as np

from voxserve.audio.dsp import StreamResampler
from voxserve.errors import VoxError

if TYPE_CHECKING:
    from av.container.core import Chapter

AAC_RATES_HZ = (7_350, 8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 64_000, 88_200, 96_000)
_AUDIOBOOK_TAGS = {"genre": "Audiobook", "media_type": "2"}  # iTunes media type (stik) 2 = Audiobook


@dataclass(frozen=True, slots=True)
class ChapterMark:
    """One chapter as written: its title and where it starts and ends in the output, in seconds."""

    title: str
    start_s: float
    end_s: float


class M4bWriter:
    """Writes `path` as AAC-in-MP4 (audiobook) from float32 mono chunks; chapters are added at `close`.

    Chapters tile the book: each runs from its `start_chapter` to the next one (or the end), audio written before
    the first `start_chapter` belongs to the first chapter, and a chapter that got no audio is left out. As a
    context manager it closes on success; on an exception it discards the partial file. PyAV creates the file
    with the first encoded audio, so a bad path fails at the first `write` and a writer that got no audio
    leaves no file. FFmpeg failures are raised as `VoxError`."""

    def __init__(self, path: Path, sample_rate_hz: int, *, title: str = "", bitrate: int = 64_000) -> None:
        if sample_rate_hz <= 0 or bitrate <= 0:
            raise ValueError("sample_rate_hz and bitrate must be positive")
        self.path = path
        self._in_rate = sample_rate_hz
        self._out_rate = _aac_rate(sample_rate_hz)
        self._resampler = StreamResampler(sample_rate_hz, self._out_rate)
        self._in_samples = 0
        self._out_samples = 0
        self._starts: list[tuple[str, int]] = []  # (title, input sample where it starts)
        self._marks: list[ChapterMark] | None = None  # set once closed
        with _ffmpeg_errors(self.path):
            # The iPod muxer is FFmpeg's choice for .m4b; the M4B brand tells players it is a book.
            self._container = av.open(str(path), "w", format="ipod", options={"brand": "M4B "})
            self._container.metadata.update({"title": title, **_AUDIOBOOK_TAGS} if title else _AUDIOBOOK_TAGS)
            self._stream = self._container.add_stream("aac", rate=self._out_rate, layout="mono", bit_rate=bitrate)

    def write(self, samples: np.ndarray) -> None:
        """Encode one chunk of float32 mono samples at the input rate."""
        self._assert_open()
        self._in_samples += len(samples)
        self._encode(self._resampler.push(samples))

    def start_chapter(self, title: str) -> None:
        """Mark a chapter starting at the current audio position (everything written so far comes before it)."""
        self._assert_open()
        self._starts.append((title, self._in_samples))

    def close(self) -> list[ChapterMark]:
        """Flush the encoder, write the chapters and close the file; return the marks written. Calling it again
        returns the same marks. If finishing fails, the partial file is removed."""
        if self._marks is not None:
            return self._marks
        marks = self._chapter_marks()
        try:
            self._encode(self._resampler.push(np.zeros(0, dtype=np.float32), last=True))
            with _ffmpeg_errors(self.path):
                self._container.mux(self._stream.encode(None))
                self._container.set_chapters([self._chapter(i, mark) for i, mark in enumerate(marks)])
                self._container.close()
        except BaseException:
            self._abort()
            raise
        self._marks = marks
        return marks

    def __enter__(self) -> M4bWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
        elif self._marks is None:  # a book closed before the error is complete, not partial
            self._abort()

    def _encode(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.float32)[None, :], format="flt", layout="mono"
        )
        frame.sample_rate = self._out_rate
        # A running pts lets the encoder stamp its priming samples before zero, so the muxer writes an edit
        # list that hides them and the file lasts exactly as long as its input. PyAV's codec context converts
        # to the planar format and the 1024-sample frames AAC wants.
        frame.pts = self._out_samples
        frame.time_base = Fraction(1, self._out_rate)
        self._out_samples += len(samples)
        with _ffmpeg_errors(self.path):
            self._container.mux(self._stream.encode(frame))

    def _chapter_marks(self) -> list[ChapterMark]:
        # An MP4 chapter track cannot start after zero (players read the first chapter from 0), so the first
        # chapter takes the lead-in.
        if not self._starts:
            return []
        starts = [0, *(start for _, start in self._starts[1:])]
        ends = [*starts[1:], self._in_samples]
        return [
            ChapterMark(title, start / self._in_rate, end / self._in_rate)
            for (title, _), start, end in zip(self._starts, starts, ends, strict=True)
            if end > start
        ]

    def _chapter(self, index: int, mark: ChapterMark) -> Chapter:
        return {
            "id": index + 1,
            "start": round(mark.start_s * self._out_rate),
            "end": round(mark.end_s * self._out_rate),
            "time_base": Fraction(1, self._out_rate),
            "metadata": {"title": mark.title},
        }

    def _abort(self) -> None:
        self._marks = []
        try:
            self._container.close()
        except av.error.FFmpegError:
            pass  # the file is going away; a failed trailer changes nothing
        finally:
            self.path.unlink(missing_ok=True)

    def _assert_open(self) -> None:
        if self._marks is not None:
            raise ValueError(f"{self.path.name} is already closed")


@contextmanager
def _ffmpeg_errors(path: Path) -> Iterator[None]:
    """FFmpeg's errors as the `VoxError` they are to a client: the server failed to write the book."""
    try:
        yield
    except av.error.FFmpegError as exc:
        raise VoxError(f"could not write {path.name}: {exc.strerror or exc}") from exc


def _aac_rate(sample_rate_hz: int) -> int:
    """The input rate if AAC has it, else the next higher AAC rate (or the highest)."""
    return min((rate for rate in AAC_RATES_HZ if rate >= sample_rate_hz), default=AAC_RATES_HZ[-1])
