"""One streaming encoder per response, for each of OpenAI's six response formats.

Every encoder takes float32 chunks and returns the bytes that are ready now, so a response can start
before synthesis ends; `flush` ends the stream. Buffered and streamed bodies are the same bytes, except
that a buffered WAV gets its real sizes written into the header (`seal`)."""

from __future__ import annotations

import io
import struct
import threading
from typing import Protocol

import av
import numpy as np

from voxserve.audio.dsp import StreamResampler, to_pcm16

CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
RESPONSE_FORMATS = tuple(CONTENT_TYPES)
PCM_RATE_HZ = 24_000  # OpenAI's `pcm` is raw 24 kHz s16le mono
OPUS_RATES_HZ = (8_000, 12_000, 16_000, 24_000, 48_000)
_UNKNOWN_SIZE = 0xFFFFFFFF


class Encoder(Protocol):
    """Turns a stream of float32 audio into the bytes of one response."""

    content_type: str

    def encode(self, samples: np.ndarray) -> bytes:
        """Bytes that are final after this chunk (possibly none)."""
        ...

    def flush(self) -> bytes:
        """The remaining bytes; the encoder is finished afterwards."""
        ...

    def close(self) -> None:
        """Free the encoder whether or not it was flushed (a response cut short); calling it again does nothing."""
        ...


class WavEncoder:
    """16-bit mono WAV: one header with unknown-length markers, then raw frames."""

    content_type = CONTENT_TYPES["wav"]

    def __init__(self, sample_rate_hz: int) -> None:
        self._header: bytes | None = wav_header(sample_rate_hz, _UNKNOWN_SIZE)

    def encode(self, samples: np.ndarray) -> bytes:
        header, self._header = self._header or b"", None
        return header + to_pcm16(samples)

    def flush(self) -> bytes:
        header, self._header = self._header or b"", None
        return header

    def close(self) -> None:
        self._header = None


def seal(response_format: str, body: bytes) -> bytes:
    """A complete streamed body made fit for a non-streamed response: a WAV gets its real sizes."""
    if response_format != "wav" or len(body) < 44:
        return body
    sample_rate_hz = struct.unpack_from("<I", body, 24)[0]
    return wav_header(sample_rate_hz, len(body) - 44) + body[44:]


def wav_header(sample_rate_hz: int, data_bytes: int) -> bytes:
    """A canonical 44-byte PCM WAV header; `0xFFFFFFFF` as `data_bytes` marks a stream of unknown length."""
    riff_bytes = _UNKNOWN_SIZE if data_bytes == _UNKNOWN_SIZE else 36 + data_bytes
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        sample_rate_hz,
        sample_rate_hz * 2,
        2,
        16,
        b"data",
        data_bytes,
    )


class PcmEncoder:
    """Raw s16le mono at 24 kHz, as OpenAI sends `pcm`."""

    content_type = CONTENT_TYPES["pcm"]

    def __init__(self, sample_rate_hz: int) -> None:
        self._resampler = StreamResampler(sample_rate_hz, PCM_RATE_HZ)

    def encode(self, samples: np.ndarray) -> bytes:
        return to_pcm16(self._resampler.push(samples))

    def flush(self) -> bytes:
        return to_pcm16(self._resampler.push(np.zeros(0, dtype=np.float32), last=True))

    def close(self) -> None:
        """Nothing to free: the resampler holds only numpy buffers."""


class _ByteSink(io.RawIOBase):
    """A write-only file that hands over whatever the muxer has written since the last `take`."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


_AV_FORMATS = {
    # response format: (container, codec, container options)
    "mp3": ("mp3", "libmp3lame", {}),
    "opus": ("ogg", "libopus", {"page_duration": "20000"}),  # 20 ms pages: the default 1 s would hold audio back
    "aac": ("adts", "aac", {}),
    "flac": ("flac", "flac", {}),
}


class AvEncoder:
    """mp3, opus (Ogg), aac (ADTS) and flac through PyAV, one codec and muxer per response. Safe to close from
    another thread than the one encoding: a response abandoned mid-encode closes it while the encode still runs
    in its worker thread, and FFmpeg's muxer must never see the two at once."""

    def __init__(self, response_format: str, sample_rate_hz: int) -> None:
        container_format, codec, options = _AV_FORMATS[response_format]
        self.content_type = CONTENT_TYPES[response_format]
        rate = _opus_rate(sample_rate_hz) if codec == "libopus" else sample_rate_hz
        self._sink = _ByteSink()
        self._container = av.open(
            self._sink, "w", format=container_format, buffer_size=4096, options={"flush_packets": "1", **options}
        )
        self._stream = self._container.add_stream(codec, rate=rate, layout="mono")
        self._resampler = StreamResampler(sample_rate_hz, rate)
        self._converter = av.AudioResampler(format=self._stream.codec_context.format.name, layout="mono", rate=rate)
        self._rate = rate
        self._closed = False
        self._lock = threading.Lock()

    def encode(self, samples: np.ndarray) -> bytes:
        with self._lock:
            self._write(self._resampler.push(samples))
            return self._sink.take()

    def flush(self) -> bytes:
        with self._lock:
            self._write(self._resampler.push(np.zeros(0, dtype=np.float32), last=True))
            for frame in self._converter.resample(None):
                self._container.mux(self._stream.encode(frame))
            self._container.mux(self._stream.encode(None))
            self._container.close()
            return self._sink.take()

    def close(self) -> None:
        """Close the muxer and drop the codec and resampler now, which ends their threads; an abandoned response
        would otherwise keep them alive until the garbage collector finds it. Waits for an encode in progress;
        closing twice does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._container.close()
            del self._converter, self._stream

    def _write(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        frame = av.AudioFrame.from_ndarray(samples.astype(np.float32)[None, :], format="flt", layout="mono")
        frame.sample_rate = self._rate
        for converted in self._converter.resample(frame):
            self._container.mux(self._stream.encode(converted))


def _opus_rate(sample_rate_hz: int) -> int:
    return min((rate for rate in OPUS_RATES_HZ if rate >= sample_rate_hz), default=OPUS_RATES_HZ[-1])


def create_encoder(response_format: str, sample_rate_hz: int) -> Encoder:
    """A fresh encoder for one response; `response_format` is one of `RESPONSE_FORMATS`."""
    if response_format == "wav":
        return WavEncoder(sample_rate_hz)
    if response_format == "pcm":
        return PcmEncoder(sample_rate_hz)
    return AvEncoder(response_format, sample_rate_hz)
