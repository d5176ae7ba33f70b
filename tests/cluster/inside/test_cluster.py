"""The same API through Ray Serve: the official client in every format, streaming that starts before the body is
done, SSE with timing, OpenAI-shaped errors, work spread over both replicas, a custom voice registered through
the ingress speaking on the replicas, and the replicas in the diagnostics and metrics."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.inside.support import per_replica
from tests.conftest import decode

pytestmark = pytest.mark.ray
LONG_TEXT = (
    "The first sentence is short. The second one takes a little longer to say out loud. "
    "A third sentence follows, and a fourth closes the paragraph for good."
)


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac", "wav"])
def test_the_openai_client_speaks_every_format(openai_client: openai.OpenAI, response_format: str) -> None:
    speech = openai_client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello from the cluster.", response_format=response_format
    )
    samples, rate = decode(speech.content)
    assert len(samples) / rate > 0.8


def test_pcm_streams_its_first_bytes_before_the_body_is_done(client: httpx.Client) -> None:
    body = {"input": LONG_TEXT, "voice": "alloy", "response_format": "pcm"}
    started = time.perf_counter()
    arrivals = []
    with client.stream("POST", "/v1/audio/speech", json=body) as response:
        assert response.status_code == 200
        for piece in response.iter_raw():
            arrivals.append((time.perf_counter() - started, len(piece)))
    total_bytes = sum(size for _, size in arrivals)
    assert total_bytes / 2 / 24_000 > 6.0
    first_s, last_s = arrivals[0][0], arrivals[-1][0]
    assert len(arrivals) >= 3
    assert first_s < last_s / 2, arrivals[:5]


def test_sse_carries_the_audio_and_ends_with_the_timing(client: httpx.Client) -> None:
    body = {"input": "Two sentences. Through the ingress.", "voice": "alloy", "response_format": "pcm",
            "stream_format": "sse"}  # fmt: skip
    response = client.post("/v1/audio/speech", json=body)
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert any('"speech.audio.delta"' in event for event in events)
    assert '"speech.audio.done"' in events[-1]
    assert '"model"' in events[-1]


def test_errors_keep_openais_shape(client: httpx.Client, openai_client: openai.OpenAI) -> None:
    response = client.post("/v1/audio/speech", json={"input": "x", "voice": "nobody-here"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "voice_not_found"
    with pytest.raises(openai.BadRequestError):
        openai_client.audio.speech.create(model="tts-1", voice="alloy", input="x", speed=9)


def speech_wav(client: httpx.Client, text: str, path: Path) -> Path:
    body = {"input": text, "voice": "en_US-joe-medium", "response_format": "wav"}
    response = client.post("/v1/audio/speech", json=body)
    assert response.status_code == 200, response.text
    path.write_bytes(response.content)
    return path


def test_concurrent_requests_spread_over_both_replicas(client: httpx.Client) -> None:
    def speak(index: int) -> int:
        body = {"input": f"Request number {index} takes a moment to say.", "voice": "alloy", "response_format": "wav"}
        return client.post("/v1/audio/speech", json=body, headers={"Cache-Control": "no-store"}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(speak, range(16))) == [200] * 16
    calls = per_replica(client, "voxserve_replica_model_calls_total")
    busy = [replica for replica, count in calls.items() if count >= 2]
    assert len(busy) >= 2, calls
    engines = client.get("/diagnostics/performance").json()["engines"]
    listed = {row["replica"] for row in engines["piper"]["replicas"]}
    assert listed == set(calls)


def test_a_voice_registered_through_the_ingress_speaks(client: httpx.Client, tmp_path: Path) -> None:
    reference = speech_wav(
        client,
        "Welcome back! You have three new messages and one missed call. The library closes early today.",
        tmp_path / "reference.wav",
    )
    with reference.open("rb") as upload:
        registered = client.post("/v1/audio/voices", data={"name": "cluster voice"}, files={"file": upload})
    assert registered.status_code == 200, registered.text
    voice = registered.json()["id"]
    spoken = client.post("/v1/audio/speech", json={"input": "Spoken in a custom voice.", "voice": voice,
                                                   "response_format": "wav"})  # fmt: skip
    assert spoken.status_code == 200, spoken.text
    assert spoken.headers["x-voxserve-voice"] == voice
    samples, rate = decode(spoken.content)
    assert len(samples) / rate > 1.0


def metric_total(client: httpx.Client, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == name
    )


def test_a_client_that_hangs_up_costs_the_replicas_no_more_work(client: httpx.Client) -> None:
    """Its queued segments are dropped at the ingress (Ray cancels the request there when the client leaves);
    only the model calls already running on a replica finish."""
    text = " ".join(f"Sentence number {index} of a long reply that nobody will hear." for index in range(60))
    cancelled_before = metric_total(client, "voxserve_segments_cancelled_total")
    synthesized_before = metric_total(client, "voxserve_replica_segments_total")
    body = {"input": text, "voice": "alloy", "response_format": "pcm"}
    with client.stream("POST", "/v1/audio/speech", json=body, headers={"Cache-Control": "no-store"}) as response:
        assert response.status_code == 200
        next(response.iter_raw())
    deadline = time.monotonic() + 60
    while metric_total(client, "voxserve_segments_cancelled_total") - cancelled_before < 40:
        assert time.monotonic() < deadline, "the ingress never dropped the request's queued segments"
        time.sleep(0.2)
    synthesized = metric_total(client, "voxserve_replica_segments_total") - synthesized_before
    assert synthesized <= 15
