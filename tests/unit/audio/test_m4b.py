from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from voxserve.audio.m4b import ChapterMark, M4bWriter

RATE = 22_050
AAC_FRAME = 1024
CHAPTERS = (("Opening", 1.0, 220.0), ("Middle", 1.5, 330.0), ("Close", 0.7, 440.0))
TOTAL_SAMPLES = sum(int(RATE * seconds) for _, seconds, _ in CHAPTERS)


def tone(seconds: float, frequency_hz: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)


def write_book(path: Path, chunk: int | None = None) -> list[ChapterMark]:
    with M4bWriter(path, RATE, title="A Test Book") as writer:
        for title, seconds, frequency_hz in CHAPTERS:
            writer.start_chapter(title)
            audio = tone(seconds, frequency_hz)
            for start in range(0, len(audio), chunk or len(audio)):
                writer.write(audio[start : start + (chunk or len(audio))])
    return writer.close()


def decoded_samples(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))


def read_chapters(path: Path) -> list[tuple[str, float]]:
    with av.open(str(path)) as container:
        return [
            (chapter["metadata"]["title"], float(chapter["start"] * Fraction(chapter["time_base"])))
            for chapter in container.chapters()
        ]


def test_the_book_is_aac_in_mp4_with_its_chapters(tmp_path: Path) -> None:
    path = tmp_path / "book.m4b"
    marks = write_book(path)
    with av.open(str(path)) as container:
        assert "mp4" in container.format.name
        assert container.streams.audio[0].codec_context.name == "aac"
        assert container.streams.audio[0].codec_context.sample_rate == RATE
        # The encoder's priming is hidden by an edit list (the movie timescale is milliseconds), so the audio
        # lines up with the chapter marks.
        stream = container.streams.audio[0]
        assert float(stream.duration * stream.time_base) == pytest.approx(TOTAL_SAMPLES / RATE, abs=0.002)
        assert container.metadata["title"] == "A Test Book"
        assert container.metadata["genre"] == "Audiobook"
    assert abs(decoded_samples(path) - TOTAL_SAMPLES) <= 2 * AAC_FRAME  # one frame plus the encoder's priming
    starts = [0.0, 1.0, 2.5]
    assert [mark.title for mark in marks] == [title for title, _, _ in CHAPTERS]
    assert [mark.start_s for mark in marks] == pytest.approx(starts)
    assert marks[-1].end_s == pytest.approx(TOTAL_SAMPLES / RATE)
    chapters = read_chapters(path)
    assert [title for title, _ in chapters] == [title for title, _, _ in CHAPTERS]
    assert [start for _, start in chapters] == pytest.approx(starts, abs=0.03)


def test_small_odd_chunks_give_the_same_duration_as_one_write(tmp_path: Path) -> None:
    whole, chunked = tmp_path / "whole.m4b", tmp_path / "chunked.m4b"
    write_book(whole)
    write_book(chunked, chunk=333)
    assert decoded_samples(chunked) == decoded_samples(whole)


def test_a_rate_aac_lacks_is_resampled_to_the_next_one(tmp_path: Path) -> None:
    path = tmp_path / "book.m4b"
    with M4bWriter(path, 20_000) as writer:
        writer.start_chapter("Only")
        writer.write(tone(1.0, 220.0, rate=20_000))
    assert writer.close() == [ChapterMark("Only", 0.0, 1.0)]
    with av.open(str(path)) as container:
        assert container.streams.audio[0].codec_context.sample_rate == 22_050
    assert abs(decoded_samples(path) - 22_050) <= 2 * AAC_FRAME


def test_closing_twice_returns_the_same_marks(tmp_path: Path) -> None:
    writer = M4bWriter(tmp_path / "book.m4b", RATE)
    writer.start_chapter("One")
    writer.write(tone(0.5, 220.0))
    marks = writer.close()
    assert writer.close() == marks == [ChapterMark("One", 0.0, 0.5)]
    with pytest.raises(ValueError, match="closed"):
        writer.write(tone(0.1, 220.0))


def fail_midway(path: Path) -> None:
    with M4bWriter(path, RATE) as writer:
        writer.start_chapter("One")
        writer.write(tone(0.5, 220.0))
        assert path.exists()
        raise RuntimeError("synthesis failed")


def test_an_error_inside_with_removes_the_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "book.m4b"
    with pytest.raises(RuntimeError, match="synthesis failed"):
        fail_midway(path)
    assert not path.exists()


def test_a_book_without_chapters_has_no_marks(tmp_path: Path) -> None:
    path = tmp_path / "book.m4b"
    with M4bWriter(path, RATE) as writer:
        writer.write(tone(0.5, 220.0))
    assert writer.close() == []
    assert read_chapters(path) == []
    assert abs(decoded_samples(path) - RATE // 2) <= 2 * AAC_FRAME


def test_lead_in_joins_the_first_chapter_and_empty_chapters_are_dropped(tmp_path: Path) -> None:
    with M4bWriter(tmp_path / "book.m4b", RATE) as writer:
        writer.write(tone(0.2, 220.0))
        writer.start_chapter("One")
        writer.write(tone(0.3, 220.0))
        writer.start_chapter("Skipped")
        writer.start_chapter("Two")
        writer.write(tone(0.5, 220.0))
        writer.start_chapter("Trailing")
    assert writer.close() == [ChapterMark("One", 0.0, 0.5), ChapterMark("Two", 0.5, 1.0)]
