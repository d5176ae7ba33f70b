"""`voxserve say` in-process: the audio file, and captions beside it timed by the model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import srt
import webvtt

from tests.conftest import decode

VOXSERVE = str(Path(sys.executable).with_name("voxserve"))
TEXT = "Hello there. It is a fine day for a walk in the park, isn't it?"


def say(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VOXSERVE, "say", *args], capture_output=True, text=True, timeout=300, check=False)


def test_say_writes_audio_and_captions_that_end_with_it(tmp_path: Path) -> None:
    audio_path, vtt_path, srt_path = tmp_path / "out.wav", tmp_path / "out.vtt", tmp_path / "out.srt"
    assert say(TEXT, "-o", str(audio_path), "--captions", str(vtt_path)).returncode == 0
    samples, rate = decode(audio_path.read_bytes())
    captions = webvtt.read(str(vtt_path)).captions
    assert [caption.text for caption in captions] == ["Hello there.", "It is a fine day for a walk in the park,",
                                                      "isn't it?"]  # fmt: skip
    hours, minutes, seconds = captions[-1].end.split(":")  # webvtt-py's *_in_seconds are whole seconds
    assert int(hours) * 3600 + int(minutes) * 60 + float(seconds) == pytest.approx(len(samples) / rate, abs=0.002)
    assert say(TEXT, "-o", str(audio_path), "--captions", str(srt_path), "--caption-max-chars", "20").returncode == 0
    assert all(len(cue.content) <= 20 for cue in srt.parse(srt_path.read_text()))


def test_say_refuses_a_caption_file_it_cannot_write(tmp_path: Path) -> None:
    result = say(TEXT, "-o", str(tmp_path / "out.wav"), "--captions", str(tmp_path / "out.txt"))
    assert result.returncode == 2
    assert "captions must be .srt, .vtt or .json" in result.stdout + result.stderr
