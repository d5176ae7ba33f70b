"""A job's audio, assembled from its segments' files the same way every time: joined as a live request's segments
are (a short crossfade), with silence after paragraphs and chapters, and encoded once into the job's format. So
a job resumed after a crash gives the same file as one that never stopped."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from voxserve.audio.dsp import SegmentJoiner
from voxserve.audio.encode import create_encoder, wav_header
from voxserve.audio.m4b import M4bWriter
from voxserve.storage.jobs import JobPart, JobSegment, JobStore

WAV_HEADER_BYTES = 44
MAX_WAV_DATA_BYTES = 0xFFFFFFFF - 36  # past this a WAV keeps its "unknown length" header


class Assembler:
    """Segments in, final audio out: crossfaded inside a paragraph, silence after one that pauses."""

    def __init__(self, sample_rate: int, crossfade_ms: float) -> None:
        self.sample_rate = sample_rate
        self._joiner = SegmentJoiner(round(crossfade_ms * sample_rate / 1000))

    def push(self, samples: np.ndarray, pause_after_ms: int) -> np.ndarray:
        """One more segment; the audio that is final now."""
        ready = self._joiner.push(samples)
        if not pause_after_ms:
            return ready
        silence = np.zeros(round(pause_after_ms * self.sample_rate / 1000), dtype=np.float32)
        return np.concatenate([ready, self._joiner.flush(), silence])

    def flush(self) -> np.ndarray:
        return self._joiner.flush()


def part_audio(
    store: JobStore, job_id: str, segments: list[JobSegment], sample_rate: int, crossfade_ms: float
) -> Iterator[np.ndarray]:
    """The joined audio of `segments` (all done), chunk by chunk."""
    assembler = Assembler(sample_rate, crossfade_ms)
    for segment in segments:
        ready = assembler.push(store.read_segment(job_id, segment), segment.pause_after_ms)
        if len(ready):
            yield ready
    yield assembler.flush()


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
