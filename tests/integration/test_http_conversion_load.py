"""Conversions and voice registrations under load, over HTTP, in-process: beyond the limit they get 429 with
Retry-After, past their deadline 504 (and their work stops), speech keeps being served while they hold every
conversion thread, and a registration's base-voice profiling is the shared scheduler's work.

The app is the real one (`build_services` around a buzzing fake engine, `create_app`, `httpx.ASGITransport`);
its conversion service has a converter that holds each window at a gate and a pool of one thread admitting two,
so every overlap a test needs is arranged, never timed."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.unit.service.buzz import LOW, RATE, WAIT_S, BuzzEngine, buzz, engine_items, profile_texts
from tests.unit.service.test_conversion import SOURCE, SOURCE_S, TARGET, WINDOWS, GatedConverter, wav
from voxserve.api.app import create_app
from voxserve.audio.decode import decode_audio
from voxserve.conversion.cancellation import Cancellation
from voxserve.conversion.pool import ConversionPool, ConversionPoolOptions
from voxserve.net.fetch import FetchOptions, UrlFetcher
from voxserve.service.bootstrap import Engines, Services, build_services, conversion_options, library_options
from voxserve.service.conversion import ConversionService
from voxserve.service.voice_library import VoiceLibrary
from voxserve.settings import Settings, load_settings
from voxserve.storage.voices import VoiceStore


@dataclasses.dataclass
class Server:
    """The app in-process, and what the tests hold or inspect: the engine, the gated converter, the pool."""

    client: httpx.AsyncClient
    services: Services
    engine: BuzzEngine
    converter: GatedConverter
    pool: ConversionPool
    settings: Settings


async def serving(tmp_path: Path, check: Callable[[Server], Awaitable[None]], *, request_timeout_s: float = 60) -> None:
    settings = load_settings(
        default_voice=LOW.id, espeak_voices=False, audio_cache_bytes=0, reference_min_s=1.0,
        conversion_window_s=SOURCE_S / WINDOWS, data_dir=tmp_path, request_timeout_s=request_timeout_s,
    )  # fmt: skip
    engine, converter = BuzzEngine(), GatedConverter()
    services = build_services(settings, Engines([engine], on_gpu=False))
    pool = ConversionPool(ConversionPoolOptions(conversion_threads=1, max_concurrent_conversions=2))
    # Profiling goes through the app's own scheduler (the library the app builds may not be given it yet).
    library = VoiceLibrary(
        VoiceStore(tmp_path / "voices"), services.speech.registry, library_options(settings), services.speech.scheduler
    )
    fetcher = UrlFetcher(FetchOptions(max_bytes=settings.max_upload_bytes, timeout_s=5))
    await services.conversion.close()
    services = dataclasses.replace(
        services, conversion=ConversionService(library, converter, fetcher, conversion_options(settings), pool=pool)
    )
    app = create_app(settings, services)
    # Speech phonemizes and encodes on the default executor: with one thread there, conversion work that ran on
    # it would stall every speech request.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))
    try:
        async with app.router.lifespan_context(app):
            await until(lambda: app.state.voxserve.ready, "the app is ready")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=WAIT_S) as client:
                try:
                    await check(Server(client, services, engine, converter, pool, settings))
                finally:
                    converter.gate.set()
                    engine.gate.set()
                    await pool.run(Cancellation.after(WAIT_S), lambda: None)  # what the pool was given has run
    finally:
        library.close()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds; the bound only turns a hang into a failure."""
    for _ in range(WAIT_S * 100):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def convert(client: httpx.AsyncClient, *, stream: bool = False) -> httpx.Response:
    return await client.post(
        "/v1/audio/conversions",
        data={"response_format": "wav", "stream": str(stream).lower()},
        files={"file": ("source.wav", SOURCE, "audio/wav"), "target": ("target.wav", TARGET, "audio/wav")},
    )


async def hold_two_conversions(server: Server) -> list[asyncio.Task[httpx.Response]]:
    """Two conversions admitted, one window on the pool's only thread held at the gate."""
    server.converter.gate.clear()
    held = [asyncio.create_task(convert(server.client)) for _ in range(2)]
    await until(lambda: server.pool.in_progress() == 2 and server.converter.started.is_set(), "two conversions run")
    return held


def test_conversions_beyond_the_limit_get_429_with_retry_after(tmp_path: Path) -> None:
    async def check(server: Server) -> None:
        held = await hold_two_conversions(server)
        refused = await convert(server.client)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) >= 1
        registration = await server.client.post(
            "/v1/audio/voices", data={"name": "later"}, files={"file": ("ref.wav", TARGET, "audio/wav")}
        )
        assert registration.status_code == 429
        server.converter.gate.set()
        for response in await asyncio.gather(*held):
            assert response.status_code == 200, response.text
            assert len(decode_audio(response.content).samples) == round(SOURCE_S * RATE)
        assert server.pool.in_progress() == 0
        assert (await convert(server.client)).status_code == 200

    asyncio.run(serving(tmp_path, check))


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_a_conversion_past_its_deadline_gets_504_and_its_work_stops(tmp_path: Path, stream: bool) -> None:
    converters: list[GatedConverter] = []

    async def check(server: Server) -> None:
        converters.append(server.converter)
        server.converter.gate.clear()  # no window can finish before the deadline
        response = await convert(server.client, stream=stream)
        assert response.status_code == 504, response.text
        assert response.json()["error"]["code"] == "deadline_exceeded"
        assert server.pool.in_progress() == 0

    asyncio.run(serving(tmp_path, check, request_timeout_s=1.0))
    # Once the gate opened and the pool drained: at most the window running at the deadline, none after it.
    assert len(converters[0].windows) <= 1


def test_speech_is_served_while_conversions_hold_every_conversion_thread(tmp_path: Path) -> None:
    async def check(server: Server) -> None:
        held = await hold_two_conversions(server)
        speech = await server.client.post(
            "/v1/audio/speech", json={"input": "Still here. Still talking.", "voice": LOW.id, "response_format": "wav"}
        )
        assert speech.status_code == 200, speech.text
        assert decode_audio(speech.content).duration_s > 0.5
        assert server.converter.windows == []  # served while the conversions' windows were held at the gate
        assert not any(task.done() for task in held)
        server.converter.gate.set()
        assert [response.status_code for response in await asyncio.gather(*held)] == [200, 200]

    asyncio.run(serving(tmp_path, check))


def test_registration_profiles_its_base_voices_on_the_scheduler(tmp_path: Path) -> None:
    async def check(server: Server) -> None:
        metrics = server.services.telemetry.metrics
        before = engine_items(metrics)
        response = await server.client.post(
            "/v1/audio/voices",
            data={"name": "profiled"},
            files={"file": ("ref.wav", wav(buzz(200.0, SOURCE_S)), "audio/wav")},
        )
        assert response.status_code == 200, response.text
        assert response.json()["base_voice"] == "buzz-high"
        assert engine_items(metrics) - before == 2 * len(profile_texts(server.settings))  # both candidate voices
        assert all(thread.startswith("voxserve-worker") for thread in server.engine.threads)
        assert server.pool.in_progress() == 0

    asyncio.run(serving(tmp_path, check))
