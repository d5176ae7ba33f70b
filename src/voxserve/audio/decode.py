"""Decode uploaded audio (WAV, MP3, FLAC, Ogg, MP4/M4A, WebM/Matroska, ADTS AAC, or raw 24 kHz PCM) to one mono
float32 `AudioChunk`.

Uploads are untrusted, so FFmpeg never chooses the demuxer: its probe would pick any of hundreds, some of which
read other files (an `ffconcat` script naming `secret.wav`), playlists or devices. The container is recognised
here from its first bytes and opened with that one demuxer, or refused."""

from __future__ import annotations

import bisect
import io
from collections.abc import Callable

import av
import numpy as np

from voxserve.audio.encode import PCM_RATE_HZ
from voxserve.errors import InvalidRequestError, PayloadTooLargeError
from voxserve.types import AudioChunk

# FLAC headers allow rates up to ~655 kHz, which turns a small file into gigabytes of samples.
MAX_SAMPLE_RATE_HZ = 192_000
_SUPPORTED = "WAV, MP3, FLAC, Ogg, MP4/M4A, WebM/Matroska or AAC"

# What non-audio uploads usually are, by their first bytes, so the error can say so.
_NOT_AUDIO_SIGNATURES = (
    (b"<!doctype html", "an HTML page"), (b"<html", "an HTML page"), (b"<?xml", "an XML document"),
    (b"{", "JSON"), (b"[", "JSON"), (b"%PDF", "a PDF document"), (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"), (b"PK\x03\x04", "a ZIP archive"),
)  # fmt: skip

# (offset, magic bytes, FFmpeg demuxer): "mov" reads mov/mp4/m4a/3gp, "matroska" reads Matroska and WebM.
_CONTAINER_MAGIC = (
    (0, b"fLaC", "flac"), (0, b"OggS", "ogg"), (4, b"ftyp", "mov"), (0, b"\x1a\x45\xdf\xa3", "matroska"),
)  # fmt: skip
_WAV_RIFF_IDS = (b"RIFF", b"RIFX", b"RF64", b"BW64")

# A second barrier behind the demuxer allow-list: should an allowed demuxer try to open another file or URL
# (mov's external data references, say), no protocol is on this whitelist, as no protocol is named "none".
_CONTAINER_OPTIONS = {"protocol_whitelist": "none"}


def decode_audio(
    data: bytes, content_type: str = "", *, param: str = "file", max_seconds: float | None = None
) -> AudioChunk:
    """Mixes channels down to mono. `audio/pcm` is OpenAI's raw 24 kHz s16le; anything else must be one of the
    containers above at up to 192 kHz. Empty, non-audio, unsupported and undecodable input raise
    `InvalidRequestError`, audio past `max_seconds` `PayloadTooLargeError` (decoding stops there); each names
    `param`."""
    if not data:
        raise InvalidRequestError(f"{param}: the audio is empty", param=param, code="empty_audio")
    if content_type.split(";")[0].strip() == "audio/pcm":
        samples = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        audio = AudioChunk(samples, PCM_RATE_HZ)
    else:
        _refuse_known_non_audio(data, param)
        audio = _decode_container(data, _demuxer(data, param), param, max_seconds)
    if max_seconds is not None and audio.duration_s > max_seconds:
        raise _too_long(param, max_seconds)
    if len(audio.samples) == 0:
        raise InvalidRequestError(f"{param}: the audio contains no samples", param=param, code="empty_audio")
    return audio


def audio_by_bytes(data: bytes, content_type: str = "") -> Callable[[int], float]:
    """How many seconds of a streamed response a player can have played once its first `n` bytes have arrived:
    raw PCM by its samples, a container by the packets that end within those bytes (their positions and times,
    read by the same one demuxer `decode_audio` would use). `InvalidRequestError` for what `decode_audio` refuses."""
    if content_type.split(";")[0].strip() == "audio/pcm":
        return lambda count: count // 2 / PCM_RATE_HZ
    _refuse_known_non_audio(data, "body")
    ends: list[int] = []
    times: list[float] = []
    try:
        with av.open(
            io.BytesIO(data), format=_demuxer(data, "body"), container_options=_CONTAINER_OPTIONS
        ) as container:
            stream = _audio_stream(container, "body")
            first = None
            for packet in container.demux(stream):
                if packet.size and packet.pts is not None and packet.pos is not None and packet.pos >= 0:
                    first = packet.pts if first is None else first
                    ends.append(packet.pos + packet.size)
                    times.append(float((packet.pts - first + (packet.duration or 0)) * stream.time_base))
    except (av.error.FFmpegError, ValueError) as exc:
        raise _invalid("body", f"cannot read the audio's packets: {exc}") from exc
    order = sorted(range(len(ends)), key=ends.__getitem__)
    ends, times = [ends[i] for i in order], list(np.maximum.accumulate([times[i] for i in order] or [0.0]))

    def seconds(count: int) -> float:
        packets = bisect.bisect_right(ends, count)
        return times[packets - 1] if packets else 0.0

    return seconds


def _demuxer(data: bytes, param: str) -> str:
    """The FFmpeg demuxer for the container `data` starts with, after an ID3v2 tag if there is one."""
    start = _id3_end(data)
    demuxer = _sniff(data[start : start + 12])
    if demuxer is None:
        raise _invalid(param, f"not a supported audio file; send {_SUPPORTED}")
    return demuxer


def _sniff(head: bytes) -> str | None:
    if head[8:12] == b"WAVE" and head[:4] in _WAV_RIFF_IDS:
        return "wav"
    for offset, magic, demuxer in _CONTAINER_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return demuxer
    if len(head) >= 2 and head[0] == 0xFF:
        if head[1] & 0xF6 == 0xF0:  # 12 sync bits, then a layer of 00: an ADTS header
            return "aac"
        if head[1] & 0xE0 == 0xE0 and head[1] & 0x06:  # 11 sync bits and a layer that is not 00: MPEG audio
            return "mp3"
    return None


def _id3_end(data: bytes) -> int:
    """Where the audio starts after an ID3v2 tag (MP3s carry them; FLAC and AAC streams may)."""
    if data[:3] != b"ID3" or len(data) < 10:
        return 0
    # Each of the four size bytes holds 7 bits; a footer (flag 0x10) adds 10 bytes to the 10-byte header.
    size = sum((byte & 0x7F) << (7 * (3 - i)) for i, byte in enumerate(data[6:10]))
    return 10 + size + (10 if data[5] & 0x10 else 0)


def _decode_container(data: bytes, demuxer: str, param: str, max_seconds: float | None) -> AudioChunk:
    try:
        with av.open(io.BytesIO(data), format=demuxer, container_options=_CONTAINER_OPTIONS) as container:
            stream = _audio_stream(container, param)
            rate = stream.codec_context.sample_rate
            return AudioChunk(_decode_stream(container, stream, param, max_seconds), rate)
    except (av.error.FFmpegError, ValueError) as exc:
        raise _invalid(param, f"not decodable audio ({getattr(exc, 'strerror', None) or exc})") from exc


def _audio_stream(container: av.container.InputContainer, param: str) -> av.AudioStream:
    """The first audio stream, refused before any decoding if its sample rate is out of bounds."""
    if not container.streams.audio:
        raise InvalidRequestError(f"{param}: the file has no audio stream", param=param, code="not_audio")
    stream = container.streams.audio[0]
    rate = stream.codec_context.sample_rate
    if not 0 < rate <= MAX_SAMPLE_RATE_HZ:
        raise _invalid(param, f"a sample rate of {rate} Hz is not accepted; the limit is {MAX_SAMPLE_RATE_HZ} Hz")
    return stream


def _decode_stream(
    container: av.container.InputContainer, stream: av.AudioStream, param: str, max_seconds: float | None
) -> np.ndarray:
    """Counts each frame against the limit before keeping it, so nothing past the limit is held or converted.
    Frames must keep the header's rate: the limit and the result's rate both rest on it."""
    rate = stream.codec_context.sample_rate
    limit = None if max_seconds is None else int(max_seconds * rate) + rate
    resampler = av.AudioResampler(format="flt", layout="mono")
    pieces, decoded = [], 0
    for frame in container.decode(stream):
        if frame.sample_rate != rate:
            raise _invalid(param, f"the sample rate changes from {rate} Hz to {frame.sample_rate} Hz")
        decoded += frame.samples
        if limit is not None and decoded > limit:
            raise _too_long(param, max_seconds or 0)
        pieces += [converted.to_ndarray().reshape(-1) for converted in resampler.resample(frame)]
    pieces += [converted.to_ndarray().reshape(-1) for converted in resampler.resample(None)]
    return np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, dtype=np.float32)


def _refuse_known_non_audio(data: bytes, param: str) -> None:
    head = data[:64].lstrip().lower()
    for signature, kind in _NOT_AUDIO_SIGNATURES:
        if head.startswith(signature.lower()):
            raise InvalidRequestError(f"{param}: this is {kind}, not audio", param=param, code="not_audio")


def _invalid(param: str, reason: str) -> InvalidRequestError:
    return InvalidRequestError(f"{param}: {reason}", param=param, code="invalid_audio")


def _too_long(param: str, max_seconds: float) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"{param}: the audio is longer than the limit of {max_seconds:g} s", param=param, code="audio_too_long"
    )
