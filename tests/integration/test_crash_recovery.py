"""`kill -9` while a custom voice registers, then a restart on the same data dir: the voice is either wholly there
(listed, and it speaks) or not at all (its name free again), every voice registered before is still listed and
speaks, no voice directory is left without its voice, and SQLite passes `PRAGMA integrity_check`."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, decode

REFERENCE_TEXT = (
    "Welcome back! You have three new messages and one missed call. "
    "The library closes early today, so return your books before five o'clock."
)
# When each kill lands: as soon as the voice's directory appears (its files being written in the hidden staging
# directory, or just renamed into place beside the row that makes it visible), and a few milliseconds after the
# request went out (before the server has read or analysed it). Either way before the registration answers.
KILL_MOMENTS = ("writing", "sent")

pytestmark = pytest.mark.timeout(240)


def register(client: httpx.Client, name: str, reference: bytes) -> httpx.Response:
    return client.post("/v1/audio/voices", data={"name": name}, files={"file": ("ref.wav", reference, "audio/wav")})


def speaks(client: httpx.Client, voice: str) -> bool:
    body = {"input": "Still here.", "voice": voice, "response_format": "wav", "stream": False}
    response = client.post("/v1/audio/speech", json=body, headers={"Cache-Control": "no-store"})
    return response.status_code == 200 and len(decode(response.content)[0]) > 0


def custom_voices(client: httpx.Client) -> dict[str, str]:
    voices = client.get("/v1/audio/voices").json()["data"]
    return {voice["name"]: voice["id"] for voice in voices if voice["type"] == "custom"}


def wait_for_new_entry(voices_dir: Path, known: set[str], answered: threading.Event, timeout_s: float = 30) -> None:
    """Until a voice directory (staging or final) appears, the registration answers, or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not answered.is_set():
        if set(os.listdir(voices_dir)) - known:
            return
        time.sleep(0.0005)


def integrity(data_dir: Path) -> str:
    with contextlib.closing(sqlite3.connect(data_dir / "voxserve.sqlite3")) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def test_a_kill_during_registration_leaves_no_half_voice(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"VOXSERVE_DATA_DIR": str(data_dir), "VOXSERVE_ESPEAK_VOICES": "false", "VOXSERVE_WARMUP": "false"}
    server = ServerProcess.started(env, tmp_path / "server-0.log")
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            body = {"input": REFERENCE_TEXT, "voice": "en_US-joe-medium", "response_format": "wav", "stream": False}
            reference = client.post("/v1/audio/speech", json=body).content
            response = register(client, "kept", reference)
            assert response.status_code == 200, response.text
        registered = {"kept": response.json()["id"]}
        for index, moment in enumerate(KILL_MOMENTS, start=1):
            name = f"crashed-{index}"
            known = set(os.listdir(data_dir / "voices"))
            answered = threading.Event()

            def send(url: str = server.url, name: str = name, answered: threading.Event = answered) -> None:
                with contextlib.suppress(httpx.HTTPError), httpx.Client(base_url=url, timeout=60) as client:
                    register(client, name, reference)
                answered.set()

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            if moment == "writing":
                wait_for_new_entry(data_dir / "voices", known, answered)
            else:
                time.sleep(0.005)
            landed_mid_registration = not answered.is_set()
            server.kill()
            assert landed_mid_registration, f"{moment}: the registration answered before the kill"
            sender.join(timeout=30)

            server = ServerProcess.started(env, tmp_path / f"server-{index}.log")
            with httpx.Client(base_url=server.url, timeout=60) as client:
                listed = custom_voices(client)
                assert {name: listed.get(name) for name in registered} == registered, moment
                assert all(speaks(client, voice_id) for voice_id in listed.values()), moment
                entries = os.listdir(data_dir / "voices")
                assert {entry for entry in entries if not entry.startswith(".")} == set(listed.values()), moment
                assert integrity(data_dir) == "ok"
                if name not in listed:  # not half there: the name is free again
                    response = register(client, name, reference)
                    assert response.status_code == 200, (moment, response.text)
                    listed[name] = response.json()["id"]
                registered[name] = listed[name]
    finally:
        server.stop()
    assert integrity(data_dir) == "ok"
