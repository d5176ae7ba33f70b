"""Decode audio bytes of any container PyAV reads (or raw 24 kHz PCM) to one mono float32 `AudioChunk`."""

from __future__ import annotations

import io

import av
import numpy as np

from voxserve.audio.encode import PCM_RATE_HZ
from voxserve.errors import InvalidRequestError, PayloadTooLargeError
from voxserve.types import AudioChunk

# What non-audio uploads usually are, by their first bytes, so the error can say so.
_NOT_AUDIO_SIGNATURES = (
    (b"<!doctype html", "an HTML page"), (b"<html", "an HTML page"), (b"<?xml", "an XML document"),
    (b"{", "JSON"), (b"[", "JSON"), (b"%PDF", "a PDF document"), (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"), (b"PK\x03\x04", "a ZIP archive"),
)  # fmt: skip


def decode_audio(
    data: bytes, content_type: str = "", *, param: str = "file", max_seconds: float | None = None
) -> AudioChunk:
    """Mixes channels down to mono. `audio/pcm` is OpenAI's raw 24 kHz s16le; anything else is sniffed by PyAV.
    Empty, non-audio and undecodable input raise `InvalidRequestError`, audio past `max_seconds`
    `PayloadTooLargeError`; each names `param`."""
    if not data:
        raise InvalidRequestError(f"{param}: the audio is empty", param=param, code="empty_audio")
    if content_type.split(";")[0].strip() == "audio/pcm":
        samples = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        audio = AudioChunk(samples, PCM_RATE_HZ)
    else:
        _refuse_known_non_audio(data, param)
        audio = _decode_container(data, param, max_seconds)
    if max_seconds is not None and audio.duration_s > max_seconds:
        raise _too_long(param, max_seconds)
    if len(audio.samples) == 0:
        raise InvalidRequestError(f"{param}: the audio contains no samples", param=param, code="empty_audio")
    return audio


def _decode_container(data: bytes, param: str, max_seconds: float | None) -> AudioChunk:
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.audio:
                raise InvalidRequestError(f"{param}: the file has no audio stream", param=param, code="not_audio")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            limit = None if max_seconds is None else int(max_seconds * rate) + rate
            resampler = av.AudioResampler(format="flt", layout="mono")
            pieces, decoded = [], 0
            for frame in container.decode(stream):
                for converted in resampler.resample(frame):
                    pieces.append(converted.to_ndarray().reshape(-1))
                    decoded += len(pieces[-1])
                if limit is not None and decoded > limit:
                    raise _too_long(param, max_seconds or 0)
            pieces += [converted.to_ndarray().reshape(-1) for converted in resampler.resample(None)]
    except (av.error.FFmpegError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        message = f"{param}: not decodable audio ({reason})"
        raise InvalidRequestError(message, param=param, code="invalid_audio") from exc
    samples = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, dtype=np.float32)
    return AudioChunk(samples, rate)


def _refuse_known_non_audio(data: bytes, param: str) -> None:
    head = data[:64].lstrip().lower()
    for signature, kind in _NOT_AUDIO_SIGNATURES:
        if head.startswith(signature.lower()):
            raise InvalidRequestError(f"{param}: this is {kind}, not audio", param=param, code="not_audio")


def _too_long(param: str, max_seconds: float) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"{param}: the audio is longer than the limit of {max_seconds:g} s", param=param, code="audio_too_long"
    )
