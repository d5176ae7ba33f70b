"""Shared fixtures: the real server on 127.0.0.1 (bundled voice, deterministic noise), clients, audio decoding."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.voicegen import write_tone_voice

READY_TIMEOUT_S = 90


def pytest_configure(config: pytest.Config) -> None:
    """Anything a test runs in-process or in a subprocess keeps custom voices in a scratch data dir, not ~."""
    os.environ["VOXSERVE_DATA_DIR"] = tempfile.mkdtemp(prefix="voxserve-test-data-")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Decode any container PyAV reads to mono float32 samples and their rate."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = [frame.to_ndarray().astype(np.float32) for frame in container.decode(stream)]
        rate = stream.codec_context.sample_rate
    samples = np.concatenate([frame.reshape(frame.shape[0], -1)[0] for frame in frames]) if frames else np.zeros(0)
    return samples, rate


def decode_pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


class ServerProcess:
    """`voxserve serve` in a subprocess, bound to 127.0.0.1 on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.wyoming_port = (
            int(env["VOXSERVE_WYOMING_URI"].rsplit(":", 1)[1]) if "VOXSERVE_WYOMING_URI" in env else None
        )
        self._log = log_path.open("wb")
        command = [str(Path(sys.executable).with_name("voxserve")), "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(command, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT)
        self._log_path = log_path

    def log_text(self) -> str:
        return self._log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early ({self.process.returncode}):\n{self._log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready in {READY_TIMEOUT_S} s:\n{self._log_path.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()

    def kill(self) -> None:
        """`kill -9`, as a crash would; the log is closed after."""
        self.process.kill()
        self.process.wait(timeout=30)
        self.stop()

    @classmethod
    def started(cls, env: dict[str, str], log_path: Path) -> ServerProcess:
        """A server that is ready (stopped again if it never gets there)."""
        server = cls(env, log_path)
        try:
            server.wait_ready()
        except RuntimeError:
            server.stop()
            raise
        return server


@pytest.fixture(scope="session")
def voices_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("voices")
    write_tone_voice(directory)
    return directory


def serve(env: dict[str, str], log_dir: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(env, log_dir / "server.log")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, voices_dir: Path) -> Iterator[ServerProcess]:
    """Deterministic (noise scales 0) so streamed and buffered audio can be compared sample for sample."""
    env = {
        "VOXSERVE_NOISE_SCALE": "0",
        "VOXSERVE_NOISE_W": "0",
        "VOXSERVE_VOICES_DIR": str(voices_dir),
        "VOXSERVE_VOICE_ALIASES": '{"tone": "en_US-tone-test@alice"}',
        "VOXSERVE_SUMMARY_LOG_EVERY": "5",
        "VOXSERVE_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "VOXSERVE_WYOMING_URI": f"tcp://127.0.0.1:{free_port()}",
    }
    yield from serve(env, tmp_path_factory.mktemp("server"))


@pytest.fixture(scope="session")
def constrained_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One worker, a six-segment queue and a four-second deadline: easy to fill, quick to time out."""
    env = {
        "VOXSERVE_WORKERS": "1",
        "VOXSERVE_MAX_QUEUE_SIZE": "6",
        "VOXSERVE_REQUEST_TIMEOUT_S": "4",
        "VOXSERVE_AUDIO_CACHE_BYTES": "0",
        "VOXSERVE_ESPEAK_VOICES": "false",
        "VOXSERVE_DIAGNOSTICS_ENDPOINTS": "false",
        "VOXSERVE_DATA_DIR": str(tmp_path_factory.mktemp("constrained-data")),
    }
    yield from serve(env, tmp_path_factory.mktemp("constrained"))


def metric_value(
    client: httpx.Client, name: str, labels: dict[str, str] | None = None, *, absent: float | None = None
) -> float:
    """One sample from the server's `/metrics`, parsed with prometheus-client's own parser. A series the server
    does not export is an error (a renamed metric must fail the test, not read as 0), unless the caller says what
    it stands for (`absent`: a labelled counter exports nothing before its first increment)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and (labels is None or all(sample.labels.get(k) == v for k, v in labels.items())):
                return sample.value
    if absent is not None:
        return absent
    raise LookupError(f"/metrics has no series {name} {labels or ''}")


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """A client that bypasses the audio cache, so every request really synthesizes."""
    with httpx.Client(base_url=server.url, timeout=60, headers={"Cache-Control": "no-store"}) as client:
        yield client


@pytest.fixture
def http_cached(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture
def openai_client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
