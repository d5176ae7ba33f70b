"""Hostile recordings over HTTP: an FFmpeg concat script posing as audio, a FLAC whose header claims 600 kHz and
a small FLAC of long silence get clean OpenAI-shaped client errors, register nothing, and leave the server up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, serve
from tests.unit.audio.test_decode import FFCONCAT, encode_tone, silent_flac

# Each upload, the status and the error code it gets; 20 minutes is past both the conversion and reference limits.
HOSTILE = {
    "ffconcat": (lambda: FFCONCAT, 400, "invalid_audio"),
    "flac-600khz": (lambda: encode_tone("flac", "flac", 600_000, seconds=0.1), 400, "invalid_audio"),
    "flac-20min-silence": (lambda: silent_flac(1200), 413, "audio_too_long"),
}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "file", code)


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_source_is_refused_by_conversions(client: httpx.Client, name: str) -> None:
    make, status, code = HOSTILE[name]
    response = client.post(
        "/v1/audio/conversions",
        data={"voice": "en_US-joe-medium", "stream": "false"},
        files={"file": ("recording.wav", make(), "audio/wav")},
    )
    assert_refused(response, status, code)
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_reference_registers_no_voice(client: httpx.Client, name: str) -> None:
    make, status, code = HOSTILE[name]
    voice = f"hostile-{name}"
    response = client.post("/v1/audio/voices", data={"name": voice}, files={"file": ("reference.flac", make())})
    assert_refused(response, status, code)
    assert client.get(f"/v1/audio/voices/{voice}").status_code == 404
    assert voice not in {listed.get("name") for listed in client.get("/v1/audio/voices").json()["data"]}
    assert client.get("/health").status_code == 200


def test_a_concat_script_cannot_reach_a_file_beside_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end, with the file the script names really there: a server started in a folder holding
    `secret.wav`, which FFmpeg's concat demuxer would read and convert."""
    (tmp_path / "secret.wav").write_bytes(encode_tone("wav", "pcm_s16le", 22050, seconds=3.0))
    monkeypatch.chdir(tmp_path)  # the server process starts in the current folder
    env = {"VOXSERVE_DATA_DIR": str(tmp_path / "data"), "VOXSERVE_ESPEAK_VOICES": "false", "VOXSERVE_WARMUP": "false"}
    servers = serve(env, tmp_path)
    try:
        with httpx.Client(base_url=next(servers).url, timeout=60) as client:
            response = client.post(
                "/v1/audio/conversions",
                data={"voice": "en_US-joe-medium", "stream": "false"},
                files={"file": ("recording.wav", FFCONCAT, "audio/wav")},
            )
            assert_refused(response, 400, "invalid_audio")
    finally:
        servers.close()
