from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.conftest import decode, decode_pcm
from voxserve.audio.encode import CONTENT_TYPES, AvEncoder, create_encoder, seal, wav_header

RATE = 22_050


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def encode_in_chunks(response_format: str, audio: np.ndarray, chunk: int) -> list[bytes]:
    encoder = create_encoder(response_format, RATE)
    pieces = [encoder.encode(audio[start : start + chunk]) for start in range(0, len(audio), chunk)]
    return [*pieces, encoder.flush()]


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac", "wav"])
def test_container_formats_decode_to_the_input_duration(response_format: str) -> None:
    audio = tone(2.0)
    samples, rate = decode(b"".join(encode_in_chunks(response_format, audio, RATE // 4)))
    assert len(samples) / rate == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_bytes_leave_before_the_stream_ends(response_format: str) -> None:
    pieces = encode_in_chunks(response_format, tone(3.0), RATE // 2)
    assert sum(len(piece) for piece in pieces[:-1]) > 0.5 * sum(len(piece) for piece in pieces)


def test_pcm_is_24khz_s16le_and_continuous_across_chunks() -> None:
    audio = tone(1.0)
    chunked = b"".join(encode_in_chunks("pcm", audio, 1000))
    whole = b"".join(encode_in_chunks("pcm", audio, len(audio)))
    samples = decode_pcm(chunked)
    assert len(samples) == pytest.approx(24_000, abs=2)
    assert np.abs(samples - decode_pcm(whole)).max() < 1e-3


def test_wav_stream_has_one_header_and_seal_writes_sizes() -> None:
    encoder = create_encoder("wav", RATE)
    body = b"".join([encoder.encode(tone(0.5)), encoder.encode(tone(0.5)), encoder.flush()])
    assert body.count(b"RIFF") == 1
    assert body[:44] == wav_header(RATE, 0xFFFFFFFF)
    sealed = seal("wav", body)
    assert sealed[:44] == wav_header(RATE, len(body) - 44)
    assert sealed[44:] == body[44:]
    assert seal("mp3", b"ID3...") == b"ID3..."


def test_every_format_has_a_content_type() -> None:
    assert set(CONTENT_TYPES) == {"mp3", "opus", "aac", "flac", "wav", "pcm"}
    assert all(create_encoder(name, RATE).content_type == CONTENT_TYPES[name] for name in CONTENT_TYPES)


def test_closing_waits_for_an_encode_in_progress_in_another_thread() -> None:
    encoder = create_encoder("mp3", RATE)
    assert isinstance(encoder, AvEncoder)
    writing, finish = threading.Event(), threading.Event()
    write = encoder._write

    def slow_write(samples: np.ndarray) -> None:
        writing.set()
        finish.wait(5)
        write(samples)

    encoder._write = slow_write  # type: ignore[method-assign]
    with ThreadPoolExecutor(2) as threads:
        encoding = threads.submit(encoder.encode, tone(0.5))
        assert writing.wait(5)
        closing = threads.submit(encoder.close)
        assert not closing.done()  # FFmpeg's muxer is mid-write: closing it now would corrupt it
        time.sleep(0.05)
        assert not closing.done()
        finish.set()
        assert encoding.result(5)
        closing.result(5)
    encoder.close()  # closing twice does nothing
