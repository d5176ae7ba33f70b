"""A server on the PyTorch backend (CPU here): the OpenAI client, concurrent requests batched into shared
engine calls, and the engine's runtime in diagnostics."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import ServerProcess, decode, metric_value, serve

TEXTS = [
    "The meeting has been moved to Thursday afternoon.",
    "Please hold while I connect you to the next available agent.",
    "Your table is ready.",
    "The library closes early today, so return your books before five o'clock.",
    "Thank you for calling.",
    "It was late in the evening when the travelers reached the village.",
]


@pytest.fixture(scope="module")
def torch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One worker and a 300 ms batching window, so requests sent together share engine calls."""
    env = {
        "VOXSERVE_BACKEND": "torch",
        "VOXSERVE_DEVICE": "auto",
        "VOXSERVE_WORKERS": "1",
        "VOXSERVE_MAX_BATCH_SIZE": "8",
        "VOXSERVE_MAX_QUEUE_DELAY_MS": "300",
        "VOXSERVE_AUDIO_CACHE_BYTES": "0",
        "VOXSERVE_ESPEAK_VOICES": "false",
        "VOXSERVE_DATA_DIR": str(tmp_path_factory.mktemp("torch-data")),
    }
    yield from serve(env, tmp_path_factory.mktemp("torch-server"))


@pytest.fixture
def http(torch_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=torch_server.url, timeout=120) as client:
        yield client


def speak(client: httpx.Client, text: str) -> np.ndarray:
    response = client.post("/v1/audio/speech", json={"input": text, "voice": "alloy", "response_format": "wav"})
    assert response.status_code == 200, response.text
    audio, rate = decode(response.content)
    assert rate == 22050
    return audio


def test_openai_client_gets_speech_from_the_torch_engine(torch_server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{torch_server.url}/v1", api_key="unused")
    created = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXTS[0], response_format="wav")
    audio, rate = decode(created.content)
    assert 1.5 < len(audio) / rate < 6
    assert float(np.sqrt(np.mean(audio**2))) > 0.02


def test_concurrent_requests_share_batched_engine_calls(http: httpx.Client) -> None:
    labels = {"engine": "piper-torch"}
    items_before = metric_value(http, "voxserve_engine_items_total", labels, absent=0.0)
    calls_before = metric_value(http, "voxserve_engine_executions_total", labels, absent=0.0)
    with ThreadPoolExecutor(len(TEXTS)) as pool:
        results = list(pool.map(lambda text: speak(http, text), TEXTS))
    for text, audio in zip(TEXTS, results, strict=True):
        assert 0.5 < len(audio) / 22050 / (len(text) * 0.065) < 2.0
    items = metric_value(http, "voxserve_engine_items_total", labels) - items_before
    calls = metric_value(http, "voxserve_engine_executions_total", labels) - calls_before
    assert items >= len(TEXTS)
    assert calls < items  # at least one call carried more than one segment


def test_diagnostics_name_the_torch_runtime(http: httpx.Client) -> None:
    performance = http.get("/diagnostics/performance").json()
    engine = performance["engines"]["piper-torch"]
    assert engine["runtime"].startswith("torch ")
    assert engine["device"] == "cpu"
    assert engine["dtype"] == "float32"
    assert performance["threads"]["max_batch_size"] == 8
    assert performance["threads"]["workers"] == 1
