"""The WebSocket text stream in-process around a `FakeEngine` whose gate the test holds: when segments are queued,
the order of events and audio, barge-in, hang-ups, limits and bad input, each exact."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fakes import FAKE_SERVER, FakeEngine
from tests.unit.api.inprocess import READY_WAIT_S, AsgiSocket, running_app
from tests.unit.api.test_admission import counter, until
from voxserve.settings import Settings

STREAM = "/v1/audio/speech/stream"


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(
        **FAKE_SERVER, data_dir=tmp_path, workers=1,
        express_worker=False, max_segment_chars=40, first_segment_max_chars=16, crossfade_ms=0, **overrides,
    )  # fmt: skip


async def opened(socket: AsgiSocket) -> dict[str, object]:
    assert (await socket.receive())["type"] == "websocket.accept"
    created = await socket.event()
    assert created["type"] == "session.created"
    return created


def test_each_segment_is_queued_as_soon_as_its_text_is_decided(tmp_path: Path) -> None:
    engine = FakeEngine()
    prepared: list[str] = []
    engine.on_prepare = lambda params: prepared.append(params.text)

    async def scenario() -> None:
        async with running_app(settings(tmp_path), [engine]) as (app, _):
            socket = AsgiSocket(app, STREAM)
            assert (await opened(socket))["session"]["response_format"] == "pcm"
            for token in ["Hel", "lo the", "re.", " How", " are", " you", "?", " Fine"]:
                socket.send({"type": "input_text.append", "text": token})
            await until(lambda: prepared == ["Hello there.", "How are you?"])  # "Fine" may go on
            socket.send({"type": "input_text.end"})
            events, audio = await socket.until("done")
            assert prepared == ["Hello there.", "How are you?", "Fine"]
            kinds = [event["type"] for event in events]
            assert kinds == ["segment.started", "segment.done"] * 3 + ["done"]
            assert [event["text"] for event in events if event["type"] == "segment.started"] == prepared
            assert events[-1]["status"] == "completed"
            assert len(audio) == 2 * 24_000 // 1000 * sum(map(len, prepared))  # 16-bit pcm at 24 kHz
            socket.disconnect()
            await asyncio.wait_for(socket.task, READY_WAIT_S)

    asyncio.run(scenario())


def test_cancel_stops_the_audio_and_takes_the_queued_segments_out(tmp_path: Path) -> None:
    engine = FakeEngine()

    async def scenario() -> None:
        async with running_app(settings(tmp_path, stream_lookahead_segments=3), [engine]) as (app, services):
            engine.gate.clear()
            socket = AsgiSocket(app, STREAM)
            await opened(socket)
            socket.send({"type": "input_text.append", "text": " ".join(f"Sentence {n}." for n in range(10)) + " "})
            assert await asyncio.to_thread(engine.started.wait, READY_WAIT_S)  # the first is on the engine
            await until(lambda: services.speech.scheduler.queue_depth() == 2)  # the lookahead holds the rest back
            before = counter(services, "voxserve_segments_cancelled_total")
            socket.send({"type": "response.cancel"})
            events, audio = await socket.until("done")
            assert events[-1]["status"] == "cancelled"
            assert audio == b""
            assert services.speech.scheduler.queue_depth() == 0
            assert counter(services, "voxserve_segments_cancelled_total") - before == 2
            engine.gate.set()
            socket.send({"type": "input_text.append", "text": "After."})
            socket.send({"type": "input_text.end"})
            events, _ = await socket.until("done")
            assert [event["text"] for event in events if event["type"] == "segment.started"] == ["After."]
            assert "Sentence 1." not in engine.ran
            socket.disconnect()
            await asyncio.wait_for(socket.task, READY_WAIT_S)

    asyncio.run(scenario())


def test_a_hang_up_cancels_what_the_session_queued(tmp_path: Path) -> None:
    engine = FakeEngine()

    async def scenario() -> None:
        async with running_app(settings(tmp_path), [engine]) as (app, services):
            engine.gate.clear()
            socket = AsgiSocket(app, STREAM)
            await opened(socket)
            socket.send({"type": "input_text.append", "text": "One. Two. Three. Four. "})
            assert await asyncio.to_thread(engine.started.wait, READY_WAIT_S)
            await until(lambda: services.speech.scheduler.queue_depth() == 3)
            socket.disconnect()
            await asyncio.wait_for(socket.task, READY_WAIT_S)
            assert services.speech.scheduler.queue_depth() == 0
            engine.gate.set()

    asyncio.run(scenario())


def test_responses_play_in_order_and_bad_events_get_errors_without_closing(tmp_path: Path) -> None:
    engine = FakeEngine()

    async def scenario() -> None:
        async with running_app(settings(tmp_path, stream_max_response_chars=50), [engine]) as (app, _):
            socket = AsgiSocket(app, STREAM)
            await opened(socket)
            socket._incoming.put_nowait({"type": "websocket.receive", "text": "{not json"})
            assert (await socket.event())["error"]["code"] == "invalid_event"
            socket._incoming.put_nowait({"type": "websocket.receive", "bytes": b"\x00\x01"})
            assert (await socket.event())["error"]["code"] == "invalid_event"
            socket.send({"type": "input_text.append", "text": "x" * 16_385})  # past one message's bound
            assert (await socket.event())["error"]["code"] == "invalid_event"
            socket.send({"type": "session.update", "session": {"voice": "nobody"}})
            assert (await socket.event())["error"]["code"] == "voice_not_found"
            socket.send({"type": "session.update", "session": {"speed": 9}})
            assert (await socket.event())["error"]["code"] == "invalid_event"
            socket.send({"type": "session.update", "session": {"voice": "fake", "response_format": "wav"}})
            updated = await socket.event()
            assert updated["session"]["response_format"] == "wav"
            socket.send({"type": "input_text.append", "text": "First reply."})
            socket.send({"type": "input_text.end"})
            socket.send({"type": "input_text.append", "text": "Second reply."})
            socket.send({"type": "input_text.append", "text": "x" * 60})
            too_long = await socket.event()
            assert too_long["error"]["code"] == "input_too_long"
            socket.send({"type": "input_text.end"})
            first, first_audio = await socket.until("done")
            second, second_audio = await socket.until("done")
            assert [e["text"] for e in first if e["type"] == "segment.started"] == ["First reply."]
            assert [e["text"] for e in second if e["type"] == "segment.started"] == ["Second reply."]
            assert first_audio[:4] == second_audio[:4] == b"RIFF"  # each response its own stream
            socket.disconnect()
            await asyncio.wait_for(socket.task, READY_WAIT_S)

    asyncio.run(scenario())


def test_a_page_from_another_origin_or_a_rebound_host_cannot_open_the_socket(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_app(settings(tmp_path), [FakeEngine()]) as (app, _):
            for headers in ([(b"origin", b"https://evil.example")], [(b"host", b"evil.example")]):
                refused = AsgiSocket(app, STREAM, headers)
                assert await refused.receive() == {"type": "websocket.close", "code": 1008}
            own = AsgiSocket(app, STREAM, [(b"origin", b"http://127.0.0.1:8000")])
            await opened(own)
            own.disconnect()
            await asyncio.wait_for(own.task, READY_WAIT_S)

    asyncio.run(scenario())


def test_keys_and_scopes_apply_and_a_browser_may_offer_its_key_as_a_subprotocol(tmp_path: Path) -> None:
    engine = FakeEngine()

    async def scenario() -> None:
        async with running_app(settings(tmp_path), [engine]) as (app, services):
            key = services.access.store.create("app", ("speech",))[1]
            anonymous = AsgiSocket(app, STREAM)
            assert (await anonymous.receive())["type"] == "websocket.accept"
            assert (await anonymous.event())["error"]["code"] == "invalid_api_key"
            assert (await anonymous.receive()) == {"type": "websocket.close", "code": 1008, "reason": ""}
            keyed = AsgiSocket(app, STREAM, [(b"sec-websocket-protocol", f"voxserve, voxserve-key.{key}".encode())])
            accepted = await keyed.receive()
            assert accepted["subprotocol"] == "voxserve"
            assert (await keyed.event())["type"] == "session.created"
            keyed.disconnect()
            await asyncio.wait_for(keyed.task, READY_WAIT_S)

    asyncio.run(scenario())


def test_a_session_queues_a_bounded_number_of_responses(tmp_path: Path) -> None:
    engine = FakeEngine()

    async def scenario() -> None:
        async with running_app(settings(tmp_path), [engine]) as (app, _):
            engine.gate.clear()
            socket = AsgiSocket(app, STREAM)
            await opened(socket)
            for n in range(4):
                socket.send({"type": "input_text.append", "text": f"Reply {n}."})
                socket.send({"type": "input_text.end"})
            socket.send({"type": "input_text.append", "text": "One too many."})
            refused = await socket.event()
            assert refused["error"]["code"] == "too_many_responses"
            engine.gate.set()
            for n in range(4):
                events, _ = await socket.until("done")
                assert [e["text"] for e in events if e["type"] == "segment.started"] == [f"Reply {n}."]
            socket.disconnect()
            await asyncio.wait_for(socket.task, READY_WAIT_S)

    asyncio.run(scenario())
