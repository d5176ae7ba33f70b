"""The whole app in-process (`httpx.ASGITransport`) around a `FakeEngine`: the composition root takes fake
engines, and warm-up failures end in a clear state instead of a server stuck at 503."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.fakes import FAKE_SERVER, TONE_VOICE, FakeEngine, ToneEngine
from tests.unit.api.inprocess import running_app
from voxserve.api.app import create_app
from voxserve.engines.base import Engine
from voxserve.service.bootstrap import Engines, build_services
from voxserve.service.loudness import CALIBRATION_SENTENCES
from voxserve.settings import Settings
from voxserve.types import VoiceInfo

OTHER_VOICE = VoiceInfo("other", "other", "en", 1000, "other")


class BrokenWarmup(FakeEngine):
    def warmup(self) -> None:
        raise RuntimeError("model file vanished: /srv/voices/x.onnx")


class OtherEngine(BrokenWarmup):
    name = "other"

    def voices(self) -> list[VoiceInfo]:
        return [OTHER_VOICE]


def settings(tmp_path: Path) -> Settings:
    return Settings(**FAKE_SERVER, data_dir=tmp_path)  # type: ignore[arg-type]


async def serving(
    tmp_path: Path, engines: list[Engine], check: Callable[[httpx.AsyncClient, object], Awaitable[None]]
) -> None:
    services = build_services(settings(tmp_path), Engines(engines, on_gpu=False))
    app = create_app(settings(tmp_path), services)
    state = app.state.voxserve
    stopped = asyncio.Event()
    state.on_fatal = stopped.set
    async with app.router.lifespan_context(app):
        for _ in range(3000):  # up to 30 s on a loaded machine; ends as soon as the warm-up does
            if state.ready or state.fatal:
                break
            await asyncio.sleep(0.01)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            await check(client, (state, stopped))


def test_speech_runs_in_process_on_a_fake_engine(tmp_path: Path) -> None:
    async def check(client: httpx.AsyncClient, _: object) -> None:
        response = await client.post(
            "/v1/audio/speech", json={"input": "Hello there.", "voice": "fake", "response_format": "wav"}
        )
        assert response.status_code == 200, response.text
        assert response.content[:4] == b"RIFF"
        assert (await client.get("/ready")).json()["status"] == "ready"

    asyncio.run(serving(tmp_path, [FakeEngine()], check))


def test_a_default_voice_that_cannot_warm_up_fails_the_server_with_its_cause(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def check(client: httpx.AsyncClient, context: object) -> None:
        state, stopped = context  # type: ignore[misc]
        assert stopped.is_set()
        assert "model file vanished" in state.fatal
        ready = await client.get("/ready")
        assert (ready.status_code, ready.json()["status"]) == (503, "failed")
        assert "/srv/voices" not in ready.text

    with caplog.at_level(logging.CRITICAL, logger="voxserve.api.app"):
        asyncio.run(serving(tmp_path, [BrokenWarmup()], check))
    assert "model file vanished" in caplog.text


def test_another_engine_failing_its_warm_up_is_logged_and_the_server_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def check(client: httpx.AsyncClient, context: object) -> None:
        state, stopped = context  # type: ignore[misc]
        assert state.ready
        assert not stopped.is_set()
        response = await client.post(
            "/v1/audio/speech", json={"input": "Hi.", "voice": "fake", "response_format": "pcm"}
        )
        assert response.status_code == 200

    with caplog.at_level(logging.ERROR, logger="voxserve.service.bootstrap"):
        asyncio.run(serving(tmp_path, [FakeEngine(), OtherEngine()], check))
    assert "warm-up of engine other failed" in caplog.text


def test_warm_up_measures_the_default_voices_loudness_so_its_first_request_does_not(tmp_path: Path) -> None:
    engine = ToneEngine()

    async def scenario() -> None:
        fields = {**FAKE_SERVER, "default_voice": TONE_VOICE.id, "loudness_normalization": True}
        async with running_app(Settings(**fields, data_dir=tmp_path), [engine]) as (app, _):  # type: ignore[arg-type]
            assert engine.ran == CALIBRATION_SENTENCES
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                response = await client.post("/v1/audio/speech", json={"input": "Hello there.", "voice": "tone"})
            assert response.status_code == 200
            assert engine.ran == [*CALIBRATION_SENTENCES, "Hello there."]

    asyncio.run(scenario())
