"""Custom voices and conversions over HTTP: register a voice from a recording, speak in it, convert recordings
to it (uploaded or fetched), and refuse bad input and internal URLs without harm to the server."""

from __future__ import annotations

import base64
import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import ServerProcess, decode, metric_value, serve
from voxserve.audio.encode import create_encoder
from voxserve.audio.loudness import integrated_lufs
from voxserve.bench.corpus import load_corpus
from voxserve.conversion.features import extract_voice_features
from voxserve.conversion.world_converter import reshape_voice
from voxserve.types import AudioChunk

REFERENCE_TEXT = (
    "Welcome back! You have three new messages and one missed call. "
    "The library closes early today, so return your books before five o'clock."
)
SOURCE_TEXT = "Please hold while I connect you to the next available agent."
PITCH_UP = 1.6


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    encoder = create_encoder("wav", rate)
    return encoder.encode(samples.astype(np.float32)) + encoder.flush()


def median_f0(data: bytes) -> float:
    samples, rate = decode(data)
    return extract_voice_features(AudioChunk(samples.astype(np.float32), rate)).f0_median_hz


def speak(client: httpx.Client, text: str, voice: str = "en_US-joe-medium") -> bytes:
    response = client.post("/v1/audio/speech", json={"input": text, "voice": voice, "response_format": "wav"})
    assert response.status_code == 200, response.text
    return response.content


@pytest.fixture(scope="module")
def voice_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Private URLs allowed (the fixture file server is on 127.0.0.1); custom voices in a fresh data dir."""
    env = {
        "VOXSERVE_DATA_DIR": str(tmp_path_factory.mktemp("voice-data")),
        "VOXSERVE_ALLOW_PRIVATE_URLS": "true",
        "VOXSERVE_ESPEAK_VOICES": "false",
        "VOXSERVE_NOISE_SCALE": "0",
        "VOXSERVE_NOISE_W": "0",
    }
    yield from serve(env, tmp_path_factory.mktemp("voice-server"))


@pytest.fixture(scope="module")
def client(voice_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=voice_server.url, timeout=120, headers={"Cache-Control": "no-store"}) as client:
        yield client


@pytest.fixture(scope="module")
def high_reference(client: httpx.Client) -> bytes:
    """Joe made into a new speaker with WORLD: pitch 1.6x and a shorter vocal tract."""
    samples, rate = decode(speak(client, REFERENCE_TEXT))
    reference = reshape_voice(AudioChunk(samples.astype(np.float32), rate), PITCH_UP, 1.15)
    return wav_bytes(reference.samples, rate)


@pytest.fixture(scope="module")
def high_voice(client: httpx.Client, high_reference: bytes) -> dict:
    response = client.post(
        "/v1/audio/voices", data={"name": "joe-high"}, files={"file": ("ref.wav", high_reference, "audio/wav")}
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def file_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A static file server on 127.0.0.1 (the 'remote' host for URL inputs)."""
    root = tmp_path_factory.mktemp("files")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def test_registered_voice_speaks_closer_to_its_reference(
    client: httpx.Client, voice_server: ServerProcess, high_voice: dict, high_reference: bytes
) -> None:
    assert high_voice["id"].startswith("voice_")
    assert high_voice["base_voice"] == "en_US-joe-medium"
    assert high_voice["features"]["f0_median_hz"] > 0
    reference_f0 = median_f0(high_reference)
    base_f0 = median_f0(speak(client, SOURCE_TEXT))
    openai_client = openai.OpenAI(base_url=f"{voice_server.url}/v1", api_key="unused", max_retries=0)
    custom = openai_client.audio.speech.create(
        model="tts-1", voice="joe-high", input=SOURCE_TEXT, response_format="wav"
    )
    custom_f0 = median_f0(custom.content)
    assert abs(custom_f0 - reference_f0) < abs(base_f0 - reference_f0) / 2, (base_f0, custom_f0, reference_f0)
    assert custom.response.headers["x-voxserve-voice"] == high_voice["id"]


def test_a_custom_voice_keeps_its_base_voices_timestamps(client: httpx.Client, high_voice: dict) -> None:
    """Conversion changes the voice, not when anything is said: the words fall where the base voice put them."""

    def timed(voice: str) -> tuple[dict, float]:
        body = {"input": SOURCE_TEXT, "voice": voice, "response_format": "wav", "stream": False, "timestamps": "word"}
        response = client.post("/v1/audio/speech", json=body, headers={"Accept": "application/json"})
        assert response.status_code == 200, response.text
        samples, rate = decode(base64.b64decode(response.json()["audio"]))
        return response.json()["timestamps"], len(samples) / rate

    base, base_s = timed("en_US-joe-medium")
    custom, custom_s = timed("joe-high")
    assert custom["words"] == base["words"]
    assert len(custom["words"]) >= 5
    assert custom_s == pytest.approx(base_s, abs=0.001)


def test_custom_voices_are_listed_fetched_and_deleted(client: httpx.Client, high_reference: bytes) -> None:
    created = client.post(
        "/v1/audio/voices", data={"name": "short-lived"}, files={"file": ("ref.wav", high_reference, "audio/wav")}
    ).json()
    listed = {voice["id"]: voice for voice in client.get("/v1/audio/voices").json()["data"]}
    assert listed[created["id"]]["type"] == "custom"
    assert listed["en_US-joe-medium"]["type"] == "builtin"
    assert client.get(f"/v1/audio/voices/{created['id']}").json()["name"] == "short-lived"
    duplicate = client.post(
        "/v1/audio/voices", data={"name": "short-lived"}, files={"file": ("ref.wav", high_reference, "audio/wav")}
    )
    assert duplicate.status_code == 409
    assert client.delete(f"/v1/audio/voices/{created['id']}").json()["deleted"] is True
    assert client.get(f"/v1/audio/voices/{created['id']}").status_code == 404
    gone = client.post("/v1/audio/speech", json={"input": "Hi.", "voice": "short-lived"})
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "voice_not_found"


def test_conversion_by_upload_streams_audio_toward_the_voice(client: httpx.Client, high_voice: dict) -> None:
    source = speak(client, SOURCE_TEXT)
    with client.stream(
        "POST",
        "/v1/audio/conversions",
        data={"voice": high_voice["id"], "response_format": "wav"},
        files={"file": ("source.wav", source, "audio/wav")},
    ) as response:
        assert response.status_code == 200
        body = b"".join(response.iter_bytes())
        timing = response.headers["server-timing"]
        assert all(f"{stage};dur=" in timing for stage in ("decode", "analyze", "convert", "ttfa"))
    source_samples, rate = decode(source)
    converted, converted_rate = decode(body)
    assert converted_rate == rate
    assert abs(len(converted) - len(source_samples)) <= rate * 0.01
    target_f0 = high_voice["features"]["f0_median_hz"]
    assert abs(median_f0(body) - target_f0) < abs(median_f0(source) - target_f0) / 2


def test_conversion_by_url_fetches_source_and_target(
    client: httpx.Client, file_server: tuple[str, Path], high_reference: bytes
) -> None:
    base_url, root = file_server
    (root / "source.wav").write_bytes(speak(client, SOURCE_TEXT))
    (root / "target.wav").write_bytes(high_reference)
    response = client.post(
        "/v1/audio/conversions",
        json={
            "source_url": f"{base_url}/source.wav",
            "target_url": f"{base_url}/target.wav",
            "response_format": "flac",
            "stream": False,
            "pitch_shift": 0,
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/flac"
    assert median_f0(response.content) > median_f0((root / "source.wav").read_bytes()) * 1.3
    missing = client.post(
        "/v1/audio/conversions", json={"source_url": f"{base_url}/missing.wav", "voice": "en_US-joe-medium"}
    )
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "url_fetch_failed"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/a.wav",
        "http://10.0.0.1/a.wav",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:{port}/a.wav",
    ],
)
def test_internal_urls_are_refused_by_default(http: httpx.Client, server: ServerProcess, url: str) -> None:
    response = http.post(
        "/v1/audio/conversions", json={"source_url": url.format(port=server.port), "voice": "en_US-joe-medium"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("url_not_allowed", "source_url")


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "empty_audio"),
        (b"<!DOCTYPE html><html><body>not audio</body></html>", "not_audio"),
        (bytes(range(256)) * 40, "invalid_audio"),
        (wav_bytes(np.zeros(22050 * 6), 22050), "silent_audio"),
        (wav_bytes(0.3 * np.sin(np.arange(22050) * 0.05), 22050), "audio_too_short"),
    ],
    ids=["empty", "html", "corrupt", "silent", "short"],
)
def test_bad_reference_uploads_get_clear_400s(client: httpx.Client, content: bytes, code: str) -> None:
    response = client.post("/v1/audio/voices", data={"name": f"bad-{code}"}, files={"file": ("x.wav", content)})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    assert client.get(f"/v1/audio/voices/bad-{code}").status_code == 404
    assert client.get("/health").status_code == 200


def test_bad_conversion_inputs_get_clear_400s(client: httpx.Client) -> None:
    no_target = client.post("/v1/audio/conversions", files={"file": ("a.wav", wav_bytes(np.zeros(100), 16000))})
    assert no_target.status_code == 400
    assert no_target.json()["error"]["param"] == "voice"
    corrupt = client.post(
        "/v1/audio/conversions",
        data={"voice": "en_US-joe-medium"},
        files={"file": ("a.mp3", b"\xff\xfb" + bytes(5000))},
    )
    assert corrupt.status_code == 400
    assert corrupt.json()["error"]["code"] == "invalid_audio"
    assert len(speak(client, "Still fine.")) > 1000


def test_voice_features_cache_hits_on_second_use(client: httpx.Client, high_voice: dict) -> None:
    labels = {"cache": "voice_features"}
    speak(client, "Warm the cache.", high_voice["name"])
    hits = metric_value(client, "voxserve_cache_hits_total", labels)
    misses = metric_value(client, "voxserve_cache_misses_total", labels)
    speak(client, "A second use of the voice.", high_voice["name"])
    assert metric_value(client, "voxserve_cache_hits_total", labels) >= hits + 2  # the voice and its base voice
    assert metric_value(client, "voxserve_cache_misses_total", labels) == misses


def test_custom_voices_survive_a_restart(tmp_path: Path, high_reference: bytes) -> None:
    env = {"VOXSERVE_DATA_DIR": str(tmp_path / "data"), "VOXSERVE_ESPEAK_VOICES": "false", "VOXSERVE_WARMUP": "false"}
    first = next(servers := serve(env, tmp_path))
    with httpx.Client(base_url=first.url, timeout=60) as before:
        created = before.post(
            "/v1/audio/voices", data={"name": "keeper"}, files={"file": ("ref.wav", high_reference, "audio/wav")}
        ).json()
    servers.close()
    (tmp_path / "again").mkdir()
    second = next(restarted := serve({**env, "VOXSERVE_VOICE_PRELOAD": '["keeper"]'}, tmp_path / "again"))
    try:
        with httpx.Client(base_url=second.url, timeout=60) as after:
            assert after.get("/v1/audio/voices/keeper").json()["id"] == created["id"]
            assert len(speak(after, "I am still here.", "keeper")) > 1000
    finally:
        restarted.close()


def test_cli_adds_a_voice_and_converts_to_it(tmp_path: Path, high_reference: bytes) -> None:
    cli = [str(Path(sys.executable).with_name("voxserve"))]
    env = {**os.environ, "VOXSERVE_DATA_DIR": str(tmp_path / "data"), "VOXSERVE_ESPEAK_VOICES": "false"}
    (tmp_path / "ref.wav").write_bytes(high_reference)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], capture_output=True, text=True, env=env, timeout=300, check=False)

    added = run("voices", "add", "cli-high", str(tmp_path / "ref.wav"))
    assert added.returncode == 0, added.stderr
    assert "cli-high" in run("voices", "--engine", "custom").stdout
    converted = run(
        "convert", str(tmp_path / "ref.wav"), "--voice", "en_US-joe-medium", "-o", str(tmp_path / "out.wav")
    )
    assert converted.returncode == 0, converted.stderr
    assert median_f0((tmp_path / "out.wav").read_bytes()) < median_f0(high_reference) * 0.8
    missing = run("convert", str(tmp_path / "ref.wav"), "--voice", "nobody", "-o", str(tmp_path / "x.wav"))
    assert missing.returncode == 1
    assert "unknown voice" in missing.stderr


def test_a_custom_voice_speaks_at_the_target_loudness(client: httpx.Client, high_voice: dict) -> None:
    """Its gain is measured on its own converted calibration speech, not borrowed from its base voice."""
    text = " ".join(load_corpus(Path(__file__).parents[2] / "benchmarks" / "corpus.txt"))[:900]
    samples, rate = decode(speak(client, text, high_voice["id"]))
    assert integrated_lufs(samples / 32767, rate) == pytest.approx(-18.0, abs=1.0)


def test_a_conversion_never_passes_the_peak_ceiling(client: httpx.Client, high_voice: dict) -> None:
    samples, rate = decode(speak(client, SOURCE_TEXT))
    clipped_source = wav_bytes(np.clip(samples / 32767 * 4, -1, 1), rate)
    response = client.post(
        "/v1/audio/conversions",
        data={"voice": high_voice["id"], "response_format": "wav"},
        files={"file": ("source.wav", clipped_source, "audio/wav")},
    )
    assert response.status_code == 200
    converted, _ = decode(response.content)
    assert 0.5 < np.max(np.abs(converted)) / 32767 <= 10 ** (-1 / 20)
