"""Decode audio bytes of any container PyAV reads (or raw 24 kHz PCM) to one mono float32 `AudioChunk`."""

from __future__ import annotations

import io

import av
import numpy as np

from voxserve.audio.encode import PCM_RATE_HZ
from voxserve.errors import InvalidRequestError
from voxserve.types import AudioChunk


def decode_audio(data: bytes, content_type: str = "") -> AudioChunk:
    """Mixes channels down to mono. `audio/pcm` is OpenAI's raw 24 kHz s16le; anything else is sniffed by PyAV."""
    if content_type.split(";")[0].strip() == "audio/pcm":
        return AudioChunk(np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, PCM_RATE_HZ)
    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono")
            pieces = [
                converted.to_ndarray().reshape(-1)
                for frame in container.decode(stream)
                for converted in resampler.resample(frame)
            ]
            pieces += [converted.to_ndarray().reshape(-1) for converted in resampler.resample(None)]
            rate = stream.codec_context.sample_rate
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise InvalidRequestError(f"not decodable audio: {exc}", code="invalid_audio") from exc
    samples = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, dtype=np.float32)
    return AudioChunk(samples, rate)
