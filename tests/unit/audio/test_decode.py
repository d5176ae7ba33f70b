"""Uploads open only with the demuxer their first bytes name, from a short allow-list; hostile sample rates and
durations are refused before they cost memory."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest

from voxserve.audio.decode import _decode_container, decode_audio
from voxserve.errors import InvalidRequestError, PayloadTooLargeError

FFCONCAT = b"ffconcat version 1.0\nfile secret.wav\n"


def encode_tone(container: str, codec: str, rate: int, seconds: float = 0.5) -> bytes:
    """A 440 Hz tone written by FFmpeg's own muxer for `container`."""
    sink = io.BytesIO()
    with av.open(sink, "w", format=container) as output:
        stream = output.add_stream(codec, rate=rate, layout="mono")
        samples = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)
        frame = av.AudioFrame.from_ndarray(samples.astype(np.float32)[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        for converted in [*resampler.resample(frame), *resampler.resample(None), None]:
            output.mux(stream.encode(converted))
    return sink.getvalue()


def silent_flac(seconds: int, rate: int = 8000) -> bytes:
    """Silence compresses to almost nothing: ten minutes at 8 kHz is about 100 KB."""
    sink = io.BytesIO()
    with av.open(sink, "w", format="flac") as output:
        stream = output.add_stream("flac", rate=rate, layout="mono")
        for _ in range(seconds // 60):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, rate * 60), dtype=np.int16), format="s16", layout="mono")
            frame.sample_rate = rate
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return sink.getvalue()


def with_flac_header_rate(flac: bytes, rate: int) -> bytes:
    """`flac` with the 20-bit sample rate in its STREAMINFO block (bytes 18 to 20) replaced."""
    patched = bytearray(flac)
    patched[18], patched[19] = rate >> 12 & 0xFF, rate >> 4 & 0xFF
    patched[20] = (rate & 0xF) << 4 | patched[20] & 0x0F
    return bytes(patched)


def id3_tag() -> bytes:
    """An ID3v2.4 tag holding one 5-byte text frame, as taggers put in front of MP3, FLAC or AAC streams."""
    frame = b"TIT2" + (6).to_bytes(4, "big") + b"\x00\x00" + b"\x03tone\x00"
    return b"ID3\x04\x00\x00" + len(frame).to_bytes(4, "big") + frame


@pytest.mark.parametrize(
    ("container", "codec", "rate", "prefix"),
    [("wav", "pcm_s16le", 22050, b""), ("mp3", "libmp3lame", 44100, b""), ("flac", "flac", 48000, b""),
     ("flac", "flac", 192000, b""), ("ogg", "libopus", 48000, b""), ("ipod", "aac", 44100, b""),
     ("mp4", "aac", 32000, b""), ("webm", "libopus", 48000, b""), ("adts", "aac", 24000, b""),
     ("flac", "flac", 16000, id3_tag()), ("adts", "aac", 16000, id3_tag())],
    ids=["wav", "mp3", "flac", "flac-192k", "ogg-opus", "m4a-aac", "mp4-aac", "webm-opus", "adts-aac",
         "id3-flac", "id3-adts"],
)  # fmt: skip
def test_each_allowed_container_decodes(container: str, codec: str, rate: int, prefix: bytes) -> None:
    audio = decode_audio(prefix + encode_tone(container, codec, rate))
    assert audio.sample_rate == rate
    assert audio.duration_s == pytest.approx(0.5, abs=0.1)
    assert audio.samples.dtype == np.float32
    middle = audio.samples[len(audio.samples) // 4 : -len(audio.samples) // 4]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)  # the tone, not noise


def test_an_ffconcat_script_is_refused_without_reading_the_file_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.wav").write_bytes(encode_tone("wav", "pcm_s16le", 16000))
    # The payload is live: left to probe, FFmpeg picks its concat demuxer and decodes the named file.
    with av.open(io.BytesIO(FFCONCAT)) as probed:
        assert probed.format.name == "concat"
        assert sum(frame.samples for frame in probed.decode(audio=0)) == 8000
    with pytest.raises(InvalidRequestError) as refused:
        decode_audio(FFCONCAT, "audio/wav")
    assert (refused.value.code, refused.value.param) == ("invalid_audio", "file")


def test_a_demuxer_that_opens_other_files_finds_no_protocol_to_open_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The barrier behind the allow-list, shown with the concat demuxer the allow-list never picks."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.wav").write_bytes(encode_tone("wav", "pcm_s16le", 16000))
    with pytest.raises(InvalidRequestError) as refused:
        _decode_container(FFCONCAT, "concat", "file", None)
    assert refused.value.code == "invalid_audio"


@pytest.mark.parametrize(
    "flac",
    [encode_tone("flac", "flac", 600_000, seconds=0.1),
     with_flac_header_rate(encode_tone("flac", "flac", 600_000, seconds=0.1), 48000)],
    ids=["600khz", "header-says-48khz-frames-600khz"],
)  # fmt: skip
def test_a_flac_past_192khz_is_refused(flac: bytes) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        decode_audio(flac, max_seconds=600)
    assert refused.value.code == "invalid_audio"
    assert "600000 Hz" in refused.value.message


def test_a_small_file_of_long_silence_stops_at_the_duration_limit() -> None:
    bomb = silent_flac(600)
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLargeError) as refused:
            decode_audio(bomb, param="target", max_seconds=5)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (refused.value.code, refused.value.param) == ("audio_too_long", "target")
    # Ten minutes at 8 kHz is 19 MB of float32; stopping at the limit keeps about 6 s (190 KB) of it.
    assert peak_bytes < 2_000_000


def test_a_sample_rate_that_changes_mid_stream_is_refused() -> None:
    joined = encode_tone("mp3", "libmp3lame", 48000) + encode_tone("mp3", "libmp3lame", 24000)
    with pytest.raises(InvalidRequestError) as refused:
        decode_audio(joined)
    assert refused.value.code == "invalid_audio"
    assert "sample rate changes" in refused.value.message


@pytest.mark.parametrize(
    ("data", "code"),
    [(b"#EXTM3U\n#EXTINF:1,\nsecret.wav\n", "invalid_audio"), (bytes(range(256)) * 40, "invalid_audio"),
     (id3_tag() + b"ffconcat version 1.0\n", "invalid_audio"), (b"\xff\xfb" + bytes(5000), "invalid_audio"),
     (b"<!DOCTYPE html><html></html>", "not_audio"), (b"", "empty_audio")],
    ids=["m3u-playlist", "noise", "id3-then-ffconcat", "corrupt-mp3", "html", "empty"],
)  # fmt: skip
def test_other_input_is_refused(data: bytes, code: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        decode_audio(data, param="target")
    assert (refused.value.code, refused.value.param) == (code, "target")


def test_raw_pcm_is_24khz_s16le() -> None:
    audio = decode_audio((np.full(2400, 16384, dtype="<i2")).tobytes(), "audio/pcm")
    assert (audio.sample_rate, len(audio.samples)) == (24000, 2400)
    assert audio.samples[0] == pytest.approx(0.5)
