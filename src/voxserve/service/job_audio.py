"""A job's audio, assembled from its segments' files the same way every time: joined as a live request's segments
are (a short crossfade), with silence after paragraphs and chapters, and encoded once into the job's format. So
a job resumed after a crash gives the same file as one that never stopped. Each file gets captions beside it
(SRT and WebVTT), from the words' places its segments stored and where assembly put each segment."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from voxserve.audio.dsp import SegmentJoiner
from voxserve.audio.encode import create_encoder, wav_header
from voxserve.audio.m4b import M4bWriter
from voxserve.engines.base import Alignment
from voxserve.service.captions import CAPTION_MAX_CHARS, caption_cues, render
from voxserve.service.timestamps import WordTiming
from voxserve.storage.jobs import JobPart, JobSegment, JobStore

WAV_HEADER_BYTES = 44
MAX_WAV_DATA_BYTES = 0xFFFFFFFF - 36  # past this a WAV keeps its "unknown length" header


class Assembler:
    """Segments in, final audio out: crossfaded inside a paragraph, silence after one that pauses. `last_start`
    is where the segment pushed last begins in the audio."""

    def __init__(self, sample_rate: int, crossfade_ms: float) -> None:
        self.sample_rate = sample_rate
        self._joiner = SegmentJoiner(round(crossfade_ms * sample_rate / 1000))
        self._silence = 0  # samples of pause added so far (the joiner does not count them)
        self.last_start = 0

    def push(self, samples: np.ndarray, pause_after_ms: int) -> np.ndarray:
        """One more segment; the audio that is final now."""
        ready = self._joiner.push(samples)
        self.last_start = self._joiner.last_start + self._silence
        if not pause_after_ms:
            return ready
        silence = np.zeros(round(pause_after_ms * self.sample_rate / 1000), dtype=np.float32)
        self._silence += len(silence)
        return np.concatenate([ready, self._joiner.flush(), silence])

    def flush(self) -> np.ndarray:
        return self._joiner.flush()


class Timeline:
    """Where each segment of one file landed, gathered while the file's audio is assembled (its parts one after
    another), for the file's captions."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.placed: list[tuple[JobSegment, int]] = []
        self.length = 0  # samples of the parts assembled so far
        self.parts: list[tuple[int, int]] = []  # each part's first and end sample

    def part(self, number: int) -> Timeline:
        """The `number`th part assembled (from 0), on a timeline of its own."""
        start, end = self.parts[number]
        part = Timeline(self.sample_rate)
        part.placed = [(segment, at - start) for segment, at in self.placed if start <= at < end]
        part.length = end - start
        return part


def part_audio(
    store: JobStore, job_id: str, segments: list[JobSegment], sample_rate: int, crossfade_ms: float,
    timeline: Timeline | None = None,
) -> Iterator[np.ndarray]:  # fmt: skip
    """The joined audio of `segments` (all done), chunk by chunk; placed on `timeline` after what it holds."""
    assembler = Assembler(sample_rate, crossfade_ms)
    base = timeline.length if timeline is not None else 0
    emitted = 0
    for segment in segments:
        ready = assembler.push(store.read_segment(job_id, segment), segment.pause_after_ms)
        if timeline is not None:
            timeline.placed.append((segment, base + assembler.last_start))
        emitted += len(ready)
        if len(ready):
            yield ready
    tail = assembler.flush()
    if timeline is not None:
        timeline.length = base + emitted + len(tail)
        timeline.parts.append((base, timeline.length))
    yield tail


def word_places(alignment: Alignment | None) -> tuple[tuple[int, int, int, int], ...]:
    """What a segment stores of its alignment for captions: each word's characters and samples."""
    if alignment is None:
        return ()
    return tuple(
        (word.char_start, word.char_end, int(alignment.starts[word.first]), int(alignment.ends[word.last - 1]))
        for word in alignment.words
    )


def caption_paths(audio_path: Path) -> dict[str, Path]:
    """Where the captions of a file (or, for a path without a suffix, of a chapter) are."""
    return {fmt: audio_path.with_suffix(f".{fmt}") for fmt in ("srt", "vtt")}


def chapter_captions(job_dir: Path, number: int) -> Path:
    """The name a book's chapter `number` (from 1) gives its captions, timed from the chapter's start."""
    return job_dir / f"chapter-{number:04d}"


def write_captions(audio_path: Path, timeline: Timeline) -> None:
    """SRT and WebVTT captions of `timeline` beside `audio_path`; none when no segment has words (an engine that
    cannot align them)."""
    text, words, offset, end = "", [], 0, 0
    rate = timeline.sample_rate
    for segment, start in timeline.placed:
        for char_start, char_end, first, last in segment.words:
            begin = max(start + first, end)  # a crossfade may overlap the segment before: keep words in order
            end = max(start + last, begin)
            words.append(WordTiming(segment.text[char_start:char_end], begin / rate, end / rate,
                                    offset + char_start, offset + char_end))  # fmt: skip
        text += segment.text + " "
        offset = len(text)
    if not words:
        return
    cues = caption_cues(text, words, timeline.length / rate, CAPTION_MAX_CHARS)
    for fmt, path in caption_paths(audio_path).items():
        staging = path.with_name(f".{path.name}.partial")
        staging.write_text(render(cues, fmt), encoding="utf-8")
        staging.replace(path)


def write_audio_file(
    path: Path, response_format: str, sample_rate: int, chapters: list[tuple[str, Iterator[np.ndarray]]], title: str
) -> None:
    """`chapters` (title, audio) encoded into one file at `path`, written beside it and moved into place when
    whole. An M4B gets a chapter mark per chapter; the other formats are one continuous stream."""
    staging = path.with_name(f".{path.name}.partial")
    try:
        if response_format == "m4b":
            with M4bWriter(staging, sample_rate, title=title) as writer:
                for name, audio in chapters:
                    writer.start_chapter(name)
                    for chunk in audio:
                        writer.write(chunk)
        else:
            _write_stream(staging, response_format, sample_rate, (chunk for _, audio in chapters for chunk in audio))
        staging.replace(path)
    finally:
        staging.unlink(missing_ok=True)


def _write_stream(path: Path, response_format: str, sample_rate: int, chunks: Iterator[np.ndarray]) -> None:
    encoder = create_encoder(response_format, sample_rate)
    try:
        with path.open("wb") as out:
            for chunk in chunks:
                out.write(encoder.encode(chunk))
            out.write(encoder.flush())
            if response_format == "wav":
                _seal_wav(out.tell(), out, sample_rate)
    finally:
        encoder.close()


def _seal_wav(size: int, out: BinaryIO, sample_rate: int) -> None:
    """Give a finished WAV file its real sizes (a stream's header says "unknown length")."""
    data_bytes = size - WAV_HEADER_BYTES
    if 0 <= data_bytes <= MAX_WAV_DATA_BYTES:
        out.seek(0)
        out.write(wav_header(sample_rate, data_bytes))


def write_zip(path: Path, files: list[tuple[str, Path]]) -> None:
    """`files` (name in the archive, file) as one ZIP, stored (audio does not compress), moved into place when
    whole."""
    staging = path.with_name(f".{path.name}.partial")
    try:
        with zipfile.ZipFile(staging, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, file in files:
                archive.write(file, name)
        staging.replace(path)
    finally:
        staging.unlink(missing_ok=True)


def part_segments(segments: list[JobSegment], part: JobPart) -> list[JobSegment]:
    return [segment for segment in segments if segment.part == part.index]
