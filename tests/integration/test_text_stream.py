"""Text streaming in, end to end on the real server and model: the WebSocket fed like an LLM's tokens, and Home
Assistant's exact Wyoming event sequences replayed with the `wyoming` package's own client."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from websockets.sync.client import connect
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from tests.conftest import ServerProcess, decode_pcm, metric_value

VOICE = "en_US-joe-medium"
REPLY = (
    "Sure! Here is **the plan** for today:\n\n- Wake up at 7.30 a.m. and stretch.\n- Read for twenty minutes.\n\n"
    "```python\nprint('not spoken')\n```\nThat's all. 🚀 Enjoy your day."
)
SPOKEN = ["Sure!", "Here is the plan for today:", "Wake up at 7.30 a.m. and stretch.", "Read for twenty minutes.",
          "That's all.", "Enjoy your day."]  # fmt: skip


def tokens(text: str, size: int = 3) -> list[str]:
    """Pieces the way an LLM streams them: a few characters at a time, cutting words and markup anywhere."""
    return [text[start : start + size] for start in range(0, len(text), size)]


def test_a_reply_streamed_as_tokens_is_spoken_segment_by_segment(server: ServerProcess) -> None:
    url = server.url.replace("http://", "ws://") + "/v1/audio/speech/stream"
    with connect(url, open_timeout=30, max_size=None) as socket:
        assert json.loads(socket.recv(timeout=30))["type"] == "session.created"
        socket.send(json.dumps({"type": "session.update", "session": {"voice": VOICE, "timestamps": "word"}}))
        assert json.loads(socket.recv(timeout=30))["session"]["timestamps"] == "word"
        for token in tokens(REPLY):
            socket.send(json.dumps({"type": "input_text.append", "text": token}))
        socket.send(json.dumps({"type": "input_text.end"}))
        events, audio = [], b""
        while not events or events[-1]["type"] != "done":
            message = socket.recv(timeout=60)
            if isinstance(message, bytes):
                audio += message
            else:
                events.append(json.loads(message))
    started = [event["text"] for event in events if event["type"] == "segment.started"]
    assert started == SPOKEN
    words = [word["text"] for event in events if event["type"] == "timestamps" for word in event["words"]]
    assert words[:4] == ["Sure", "Here", "is", "the"]
    assert "print" not in words
    samples = decode_pcm(audio)
    assert events[-1]["status"] == "completed"
    assert events[-1]["usage"]["audio_seconds"] == pytest.approx(len(samples) / 24_000, abs=0.01)
    assert max(abs(samples)) > 0.05


def ha_one_shot(port: int, text: str, voice: SynthesizeVoice | None) -> list[Event]:
    """Home Assistant's `async_get_tts_audio`: one synthesize, then events up to the first audio-stop."""

    async def run() -> list[Event]:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Synthesize(text=text, voice=voice).event())
            received = []
            while (event := await asyncio.wait_for(client.read_event(), 60)) is not None:
                received.append(event)
                if AudioStop.is_type(event.type):
                    break
            return received

    return asyncio.run(run())


def ha_stream(port: int, pieces: list[str], voice: SynthesizeVoice | None) -> list[Event]:
    """Home Assistant's streaming TTS: start, chunks, the whole message again for older servers, stop; it reads
    until synthesize-stopped."""

    async def run() -> list[Event]:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(SynthesizeStart(voice=voice).event())
            for piece in pieces:
                await client.write_event(SynthesizeChunk(text=piece).event())
            await client.write_event(Synthesize(text="".join(pieces), voice=voice).event())
            await client.write_event(SynthesizeStop().event())
            received = []
            while (event := await asyncio.wait_for(client.read_event(), 60)) is not None:
                received.append(event)
                if SynthesizeStopped.is_type(event.type):
                    break
            return received

    return asyncio.run(run())


def audio_of(events: list[Event]) -> bytes:
    return b"".join(AudioChunk.from_event(event).audio for event in events if AudioChunk.is_type(event.type))


def test_wyoming_describes_every_voice_with_speakers_and_streaming(server: ServerProcess) -> None:
    async def describe() -> Info:
        async with AsyncTcpClient("127.0.0.1", server.wyoming_port) as client:
            await client.write_event(Describe().event())
            event = await asyncio.wait_for(client.read_event(), 10)
            assert event is not None
            return Info.from_event(event)

    (program,) = asyncio.run(describe()).tts
    assert program.supports_synthesize_streaming
    assert program.installed
    voices = {voice.name: voice for voice in program.voices}
    assert voices[VOICE].languages == ["en_US"]
    assert voices[VOICE].installed
    assert sorted(speaker.name for speaker in voices["en_US-tone-test"].speakers) == ["alice", "bob"]
    assert any(name.startswith("espeak:") for name in voices)


def test_wyoming_one_shot_is_one_start_chunks_and_one_stop(server: ServerProcess) -> None:
    events = ha_one_shot(server.wyoming_port, "Hello from voxserve. The kitchen lights are on.",
                         SynthesizeVoice(name=VOICE))  # fmt: skip
    kinds = [event.type for event in events]
    assert kinds[0] == "audio-start"
    assert kinds[-1] == "audio-stop"
    assert kinds.count("audio-start") == kinds.count("audio-stop") == 1
    start = AudioStart.from_event(events[0])
    assert (start.rate, start.width, start.channels) == (24_000, 2, 1)
    assert len(audio_of(events)) / 48_000 > 1.5
    speaker = ha_one_shot(server.wyoming_port, "Hi.", SynthesizeVoice(name="en_US-tone-test", speaker="bob"))
    assert speaker[-1].type == "audio-stop"
    assert audio_of(speaker)
    unknown = ha_one_shot(server.wyoming_port, "Hi.", SynthesizeVoice(name="nobody"))
    assert [event.type for event in unknown] == ["error", "audio-stop"]
    assert Error.from_event(unknown[0]).code == "voice_not_found"


def test_wyoming_stream_speaks_chunks_once_and_ends_with_synthesize_stopped(server: ServerProcess) -> None:
    events = ha_stream(server.wyoming_port, tokens(REPLY, 5), SynthesizeVoice(name=VOICE))
    kinds = [event.type for event in events]
    assert kinds[0] == "audio-start"
    assert kinds[-2:] == ["audio-stop", "synthesize-stopped"]
    assert kinds.count("audio-start") == 1  # the compatibility synthesize inside the stream is not spoken again
    streamed = audio_of(events)
    whole = audio_of(ha_one_shot(server.wyoming_port, REPLY, SynthesizeVoice(name=VOICE)))
    assert abs(len(streamed) - len(whole)) <= 2 * 24_000 * 0.05  # the same speech (segments differ at most by joins)


def test_wyoming_serves_clients_at_once_and_a_client_that_leaves_has_its_work_cancelled(server: ServerProcess) -> None:
    async def many() -> list[list[Event]]:
        return await asyncio.gather(*(asyncio.to_thread(ha_one_shot, server.wyoming_port, f"Client {n} speaks now.",
                                                        None) for n in range(4)))  # fmt: skip

    for events in asyncio.run(many()):
        assert [events[0].type, events[-1].type] == ["audio-start", "audio-stop"]

    def cancelled() -> float:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            return metric_value(http, "voxserve_requests_total", {"route": "wyoming", "status": "499"}, absent=0)

    before = cancelled()

    async def leave() -> None:
        async with AsyncTcpClient("127.0.0.1", server.wyoming_port) as client:
            await client.write_event(Synthesize(text=" ".join(["A long sentence to speak."] * 40)).event())
            while (event := await asyncio.wait_for(client.read_event(), 60)) is not None:
                if AudioChunk.is_type(event.type):
                    return  # hang up after the first audio

    asyncio.run(leave())
    deadline = time.monotonic() + 30
    while cancelled() < before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cancelled() == before + 1


def test_wyoming_answers_malformed_events_and_a_stream_left_open_without_dropping_the_client(
    server: ServerProcess,
) -> None:
    async def session() -> list[Event]:
        received: list[Event] = []
        async with AsyncTcpClient("127.0.0.1", server.wyoming_port) as client:
            writer = client._writer
            assert writer is not None
            writer.write(b'{"type": "synthesize", "data_length": 2}\n[]')  # data that is not an object
            writer.write(b"not json at all\n")
            await client.write_event(Event(type="synthesize", data={"voice": None}))  # no text
            await client.write_event(Event(type="synthesize-chunk", data={"text": 5}))
            await client.write_event(Event(type="audio-chunk", payload=bytes(2 * 2**20)))  # past the 1 MiB bound
            for _ in range(5):
                received.append(await asyncio.wait_for(client.read_event(), 10))
            # A stream its client never stops: the next one ends it, and both are spoken.
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name=VOICE)).event())
            await client.write_event(SynthesizeChunk(text="First stream. ").event())
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name=VOICE)).event())
            await client.write_event(SynthesizeChunk(text="Second stream.").event())
            await client.write_event(SynthesizeStop().event())
            while (event := await asyncio.wait_for(client.read_event(), 60)) is not None:
                received.append(event)
                if SynthesizeStopped.is_type(event.type):
                    break
        return received

    events = asyncio.run(session())
    codes = [Error.from_event(event).code for event in events[:5]]
    assert codes == ["invalid_event"] * 4 + ["event_too_large"]
    kinds = [event.type for event in events[5:]]
    assert kinds.count("audio-start") == kinds.count("audio-stop") == 2
    assert kinds[-1] == "synthesize-stopped"
