"""Admission (429), deadlines (504) and hang-ups over HTTP, in-process around a `FakeEngine` whose gate the test
holds: every outcome is exact, none races a clock. The real-model versions live in the integration suite."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes import FAKE_SERVER, FakeEngine
from tests.unit.api.inprocess import READY_WAIT_S, AsgiCall, running_app
from voxserve.service.bootstrap import Services
from voxserve.settings import Settings
from voxserve.types import SynthesisParams

SPEECH = "/v1/audio/speech"
SENTENCES = [f"Sentence {n}." for n in range(8)]  # each its own segment (two would pass max_segment_chars)
EIGHT = " ".join(SENTENCES)
SHORT = "Short."


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(
        **FAKE_SERVER, data_dir=tmp_path, workers=1,
        express_worker=False,  # one worker, so what runs when is exactly what the test holds or lets go
        max_segment_chars=16, first_segment_max_chars=16,
        crossfade_ms=0,  # a fake segment is a few samples: with no crossfade held back, its audio reaches the client
        **overrides,
    )  # fmt: skip


def speak(app: object, text: str, *, partial: bool = False, **body: object) -> AsgiCall:
    return AsgiCall(app, SPEECH, {"input": text, "voice": "fake", "response_format": "wav", **body}, partial=partial)


def counter(services: Services, name: str) -> float:
    value = services.telemetry.metrics.registry.get_sample_value(name)
    assert value is not None, f"no series {name}"
    return value


def cancelled_requests(services: Services) -> float:
    """Requests whose client left, by both counts: the counter, and requests recorded with status 499."""
    cancelled = counter(services, "voxserve_requests_cancelled_total")
    labels = {"route": SPEECH, "status": "499", "engine": "fake", "format": "wav"}
    assert services.telemetry.metrics.registry.get_sample_value("voxserve_requests_total", labels) == cancelled
    return cancelled


async def released(engine: FakeEngine) -> None:
    """Wait (off the loop) until the engine has taken a call, which then blocks at its gate."""
    assert await asyncio.to_thread(engine.started.wait, READY_WAIT_S)


async def ran_after_the_rest(app: object, engine: FakeEngine) -> list[str]:
    """What the engine ran, once anything still queued or on it has run: with one worker, a last request
    finishes after everything taken before it."""
    last = speak(app, SHORT)
    await last.finished()
    assert last.status == 200
    assert engine.ran[-1] == SHORT
    return engine.ran[:-1]


async def until(condition: Callable[[], bool]) -> None:
    """Wait for a state the test cannot be told about (bounded far beyond what a loaded machine needs)."""
    async with asyncio.timeout(READY_WAIT_S):
        while not condition():
            await asyncio.sleep(0.005)


def test_a_full_queue_refuses_with_429_and_serves_again_once_it_drains(tmp_path: Path) -> None:
    engine = FakeEngine()

    async def scenario() -> None:
        async with running_app(settings(tmp_path, max_queue_size=4), [engine]) as (app, services):
            engine.gate.clear()
            long = speak(app, EIGHT)  # admitted by an idle queue, though longer than it
            await released(engine)
            refused = speak(app, SHORT)
            await refused.finished()
            assert refused.status == 429
            error = json.loads(refused.body)["error"]
            assert (error["type"], error["code"]) == ("rate_limit_error", "queue_full")
            assert int(refused.headers["retry-after"]) >= 1
            assert counter(services, "voxserve_requests_rejected_total") == 1
            engine.gate.set()
            await long.finished()
            assert long.status == 200
            assert await ran_after_the_rest(app, engine) == SENTENCES

    asyncio.run(scenario())


def test_max_queue_size_holds_exactly_when_requests_arrive_together(tmp_path: Path) -> None:
    engine = FakeEngine()

    async def scenario() -> None:
        async with running_app(settings(tmp_path, max_queue_size=10), [engine]) as (app, services):
            engine.gate.clear()
            long = speak(app, EIGHT)
            await released(engine)  # one segment on the engine, seven held in the queue: room for three more
            scheduler = services.speech.scheduler
            await until(lambda: scheduler.queue_depth() == len(SENTENCES) - 1)
            burst = [speak(app, f"Burst {n}.") for n in range(6)]
            # Every one of them decided: refused (finished), or admitted (its segment queued behind the gate).
            await until(lambda: sum(call.task.done() for call in burst) + scheduler.queue_depth() - 7 == len(burst))
            engine.gate.set()
            await asyncio.gather(long.finished(), *(call.finished() for call in burst))
            assert sorted(call.status for call in burst) == [200, 200, 200, 429, 429, 429]

    asyncio.run(scenario())


def test_past_the_deadline_a_buffered_request_gets_504_and_its_queued_segments_never_run(tmp_path: Path) -> None:
    engine = FakeEngine()

    async def scenario() -> None:
        async with running_app(settings(tmp_path, request_timeout_s=1.0), [engine]) as (app, services):
            engine.gate.clear()
            late = speak(app, EIGHT, stream=False)
            await released(engine)
            await late.finished()  # the gate stays shut, so the deadline is all that can end it
            assert late.status == 504
            assert json.loads(late.body)["error"]["code"] == "deadline_exceeded"
            assert counter(services, "voxserve_requests_timed_out_total") == 1
            engine.gate.set()
            assert await ran_after_the_rest(app, engine) == SENTENCES[:1]  # only the one already on the engine

    asyncio.run(scenario())


def test_a_hang_up_mid_stream_cancels_everything_still_queued(tmp_path: Path) -> None:
    engine, hold = FakeEngine(), threading.Event()
    engine.on_run = lambda texts: None if texts == SENTENCES[:1] else hold.wait(READY_WAIT_S)

    async def scenario() -> None:
        async with running_app(settings(tmp_path), [engine]) as (app, services):
            streaming = speak(app, EIGHT)
            await asyncio.wait_for(streaming.first_body.wait(), READY_WAIT_S)
            streaming.hang_up()
            await streaming.finished()
            hold.set()
            ran = await ran_after_the_rest(app, engine)
            assert ran in (SENTENCES[:1], SENTENCES[:2])  # the second, if a worker had taken it already
            # Counted as the worker drops them.
            assert counter(services, "voxserve_segments_cancelled_total") == len(SENTENCES) - len(ran)
            assert cancelled_requests(services) == 1  # a 200 that never ended is a cancelled request

    asyncio.run(scenario())


@pytest.mark.parametrize("stream", [True, False])
def test_a_hang_up_during_submission_stops_it_and_cancels_what_was_queued(tmp_path: Path, stream: bool) -> None:
    engine, reached, proceed = FakeEngine(), threading.Event(), threading.Event()
    prepared: list[str] = []

    def on_prepare(params: SynthesisParams) -> None:
        prepared.append(params.text)
        if params.text == SENTENCES[4]:
            reached.set()
            proceed.wait(READY_WAIT_S)

    engine.on_prepare = on_prepare

    async def scenario() -> None:
        async with running_app(settings(tmp_path), [engine]) as (app, services):
            engine.gate.clear()
            request = speak(app, EIGHT, stream=stream)
            await released(engine)
            assert await asyncio.to_thread(reached.wait, READY_WAIT_S)  # segments 1-3 queued, 4 being prepared
            request.hang_up()
            await request.finished()
            proceed.set()
            engine.gate.set()
            assert await ran_after_the_rest(app, engine) == SENTENCES[:1]
            assert prepared == [*SENTENCES[:5], SHORT]  # the submitting thread stopped at the hang-up
            assert counter(services, "voxserve_segments_cancelled_total") == 3
            assert cancelled_requests(services) == 1

    asyncio.run(scenario())


def test_a_hang_up_while_buffering_cancels_the_request(tmp_path: Path) -> None:
    engine = FakeEngine()

    async def scenario() -> None:
        async with running_app(settings(tmp_path), [engine]) as (app, _):
            engine.gate.clear()
            buffered = speak(app, EIGHT, stream=False)
            await released(engine)
            buffered.hang_up()
            await buffered.finished()
            engine.gate.set()
            assert await ran_after_the_rest(app, engine) == SENTENCES[:1]

    asyncio.run(scenario())


def test_a_client_that_leaves_mid_upload_is_a_cancelled_request_not_a_bad_one(tmp_path: Path) -> None:
    engine = FakeEngine()

    async def scenario() -> None:
        async with running_app(settings(tmp_path), [engine]) as (app, services):
            uploading = speak(app, EIGHT, partial=True)
            await asyncio.sleep(0)  # the request starts reading its body
            uploading.hang_up()
            await uploading.finished()
            assert counter(services, "voxserve_requests_cancelled_total") == 1
            labels = {"route": SPEECH, "status": "499", "engine": "none", "format": "none"}  # never got that far
            recorded = services.telemetry.metrics.registry.get_sample_value("voxserve_requests_total", labels)
            assert recorded == 1, "recorded under another status"
            assert engine.ran == []

    asyncio.run(scenario())
