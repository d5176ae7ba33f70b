"""Home Assistant's Wyoming protocol, served beside HTTP in the same process (`wyoming_uri`), sharing the voices,
the scheduler, the caches and the metrics (`route="wyoming"`).

`describe` -> `info` lists every voice. A one-shot `synthesize` answers with one `audio-start`, an `audio-chunk`
as each segment is ready, and one `audio-stop`. A stream (`synthesize-start`, `synthesize-chunk`s,
`synthesize-stop`) goes through the incremental segmenter, so audio starts while the text is still coming; the
`synthesize` a client sends inside a stream for older servers is ignored, and the stream ends with
`synthesize-stopped`. Audio is 16-bit mono PCM at 24 kHz throughout, so every stream has one format. Errors are
`error` events; the connection stays up. Many clients are served at once; one that leaves has its work cancelled.

Wyoming has no keys: its clients act as one caller (`wyoming`) that may use the built-in voices and shared
custom voices, with no per-key limits. Bind it to an address only trusted clients reach."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from contextlib import suppress
from functools import partial
from typing import TypeVar
from urllib.parse import urlsplit

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice, TtsVoiceSpeaker
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from voxserve import __version__
from voxserve.api.errors import shown_error
from voxserve.api.streaming import play_streamed
from voxserve.audio.encode import PCM_RATE_HZ
from voxserve.errors import ClientDisconnectedError, InvalidRequestError, VoxError
from voxserve.obs.trace import RequestTrace
from voxserve.service.bootstrap import Services
from voxserve.service.speech import SpeechJob, StreamedSpeech
from voxserve.service.text_stream import TextSpeechSession
from voxserve.types import Caller

logger = logging.getLogger(__name__)
E = TypeVar("E")
ROUTE = "wyoming"
CALLER = Caller(key_id="wyoming", admin=False)
WIDTH, CHANNELS = 2, 1  # the `pcm` encoder's 16-bit mono, at PCM_RATE_HZ
MAX_CHUNK_BYTES = PCM_RATE_HZ * WIDTH // 2  # half a second per audio-chunk event
MAX_EVENT_BYTES = 1 << 20  # a header's data or payload past this is read and dropped
ATTRIBUTION = Attribution(name="voxserve", url="https://github.com/voxserve/voxserve")


class WyomingServer:
    """The listener at `uri` (`tcp://HOST:PORT`), optionally announced over zeroconf as `_wyoming._tcp`."""

    def __init__(self, uri: str, services: Services, *, zeroconf: bool = False) -> None:
        self._uri = uri
        self._services = services
        self._zeroconf = zeroconf
        self._server = AsyncServer.from_uri(uri)
        self._announcement: object | None = None

    async def start(self) -> None:
        await self._server.start(partial(_Handler, services=self._services))
        if self._zeroconf:
            self._announcement = await _announce(self._uri)
        logger.info("wyoming listening on %s", self._uri)

    async def stop(self) -> None:
        await self._server.stop()
        if self._announcement is not None:
            with suppress(Exception):
                await self._announcement.async_close()  # type: ignore[attr-defined]


async def _announce(uri: str) -> object | None:
    """Home Assistant discovers Wyoming servers by this zeroconf service; a server it cannot announce (a Unix
    socket, no network) serves all the same, with a warning."""
    from zeroconf import ServiceInfo
    from zeroconf.asyncio import AsyncZeroconf

    parts = urlsplit(uri)
    if parts.scheme != "tcp" or parts.port is None:
        logger.warning("wyoming_zeroconf needs a tcp:// wyoming_uri; %s is not announced", uri)
        return None
    host = parts.hostname or "127.0.0.1"
    try:
        if host in ("0.0.0.0", "::"):
            address = await asyncio.to_thread(_lan_address)
        else:
            address = (await asyncio.to_thread(socket.getaddrinfo, host, parts.port))[0][4][0]
        name = socket.gethostname()
        info = ServiceInfo("_wyoming._tcp.local.", f"voxserve-{name}._wyoming._tcp.local.",
                           parsed_addresses=[str(address)], port=parts.port, server=f"{name}.local.")  # fmt: skip
        zeroconf = AsyncZeroconf()
        await zeroconf.async_register_service(info, allow_name_change=True)  # two servers on one network
    except (OSError, ValueError) as exc:
        logger.warning("could not announce %s over zeroconf: %s", uri, exc)
        return None
    return zeroconf


def _lan_address() -> str:
    """The address this host reaches the local network from (a UDP socket's route; nothing is sent), not a name
    lookup, which on many hosts answers 127.0.1.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("224.0.0.251", 5353))
        return str(probe.getsockname()[0])


class _Handler(AsyncEventHandler):
    """One client connection. Events are read one at a time; synthesis plays in a task of its own, so a client
    that leaves mid-stream is noticed at once and its work cancelled."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, services: Services) -> None:
        super().__init__(reader, writer)
        self._services = services
        job = SpeechJob(text="", voice=services.speech.registry.default_voice.id, response_format="pcm",
                        caller=CALLER, use_cache=False)  # fmt: skip
        self._session = TextSpeechSession(services.speech, services.text_stream, job, services.telemetry.new_trace)
        self._streaming = False
        self._muted = False  # a stream whose voice failed: its text is not spoken
        self._playing: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._id = RequestTrace(None, enabled=False).request_id  # the connection's, for errors outside a response

    async def run(self) -> None:
        """Wyoming's read loop, with bounds: an idle client is let go, and an event's data and payload are
        limited in size (an oversized one is read past and answered with an error)."""
        idle_s = self._services.text_stream.idle_timeout_s
        try:
            while True:
                playing = self._playing is not None and not self._playing.done()
                async with asyncio.timeout(None if playing else idle_s):  # a client listening is not idle
                    event = await self._read_event()
                if event is None:
                    break
                try:
                    if isinstance(event, VoxError):
                        raise event
                    await self.handle_event(event)
                except VoxError as error:
                    await self._error(error)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            await self.disconnect()
            self.writer.close()

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self._write(self._info().event())
        elif Synthesize.is_type(event.type) and not self._streaming:  # in a stream: the copy for older servers
            await self._synthesize(_parsed(Synthesize, event))
        elif SynthesizeStart.is_type(event.type):
            start = _parsed(SynthesizeStart, event)
            self._session.end()  # a stream left open by its client ends where the next begins
            await self._finish_playing()
            self._streaming, self._muted = True, False
            try:
                self._use_voice(start.voice)
            except VoxError:
                self._muted = True  # the stream is answered with its error, then silence until it stops
                raise
        elif SynthesizeChunk.is_type(event.type):
            chunk = _parsed(SynthesizeChunk, event)
            if not self._streaming:
                raise InvalidRequestError("synthesize-chunk comes after synthesize-start", code="no_stream")
            if not self._muted:
                self._speak(chunk.text)
        elif SynthesizeStop.is_type(event.type):
            self._streaming = False
            self._session.end()
            await self._finish_playing()
            await self._write(SynthesizeStopped().event())
        return True

    async def _synthesize(self, synthesize: Synthesize) -> None:
        """One-shot: a client reads until the first `audio-stop`, so a failure still ends with one."""
        await self._finish_playing()
        try:
            self._use_voice(synthesize.voice)
            self._speak(synthesize.text)
            self._session.end()
        except VoxError as error:
            self._session.cancel()
            await self._error(error)
            await self._write(AudioStop().event())

    async def disconnect(self) -> None:
        self._session.cancel()
        if self._playing is not None:
            self._playing.cancel()
            await asyncio.gather(self._playing, return_exceptions=True)

    def _use_voice(self, voice: object) -> None:
        """The voice a synthesis names (a name, with a speaker for a multi-speaker voice; or a language)."""
        name = getattr(voice, "name", None)
        speaker = getattr(voice, "speaker", None)
        language = getattr(voice, "language", None)
        registry = self._services.speech.registry
        if name:
            chosen = f"{name}@{speaker}" if speaker else name
        elif language:
            matches = [v.id for v in registry.voices() if v.language.lower().replace("-", "_") ==
                       language.lower().replace("-", "_")]  # fmt: skip
            chosen = matches[0] if matches else registry.default_voice.id
        else:
            chosen = registry.default_voice.id
        self._session.update(voice=chosen)

    def _speak(self, text: str) -> None:
        opened, _ = self._session.append(text)
        if opened is not None:
            self._playing = asyncio.create_task(self._play(opened))

    async def _finish_playing(self) -> None:
        if self._playing is not None:
            await asyncio.gather(self._playing, return_exceptions=True)
            self._playing = None

    async def _play(self, streamed: StreamedSpeech) -> None:
        """One response: `audio-start`, its audio in chunks as segments finish, `audio-stop`."""
        response = streamed.response

        async def send(piece: bytes) -> None:
            for start in range(0, len(piece), MAX_CHUNK_BYTES):
                await self._write(
                    AudioChunk(PCM_RATE_HZ, WIDTH, CHANNELS, piece[start : start + MAX_CHUNK_BYTES]).event()
                )

        try:
            await self._write(AudioStart(PCM_RATE_HZ, WIDTH, CHANNELS).event())
            await play_streamed(response, ROUTE, self._services.telemetry, send)
        except ClientDisconnectedError:
            return
        except VoxError as error:
            await self._error(error, response.trace.request_id)
        await self._write(AudioStop().event())

    def _info(self) -> Info:
        """Every voice a Wyoming client may use: the built-in ones (a multi-speaker voice once, with its speakers)
        and the shared custom voices."""
        speech = self._services.speech
        speakers: dict[str, list[str]] = {}
        languages: dict[str, str] = {}
        names: dict[str, str] = {}
        for voice in speech.registry.voices():
            base, _, speaker = voice.id.partition("@")
            speakers.setdefault(base, [])
            if speaker:
                speakers[base].append(speaker)
            languages[base], names[base] = voice.language, voice.name.partition("@")[0] or base
        voices = [
            TtsVoice(name=base, description=f"{names[base]} ({languages[base]})", attribution=ATTRIBUTION,
                     installed=True, version=None, languages=[languages[base]],
                     speakers=[TtsVoiceSpeaker(name=speaker) for speaker in speakers[base]] or None)
            for base in speakers
        ]  # fmt: skip
        library = speech.library
        for custom in library.list(CALLER) if library is not None else []:
            language = languages.get(custom.base_voice.partition("@")[0], speech.registry.default_voice.language)
            voices.append(TtsVoice(name=custom.id, description=f"{custom.name} (custom voice)", attribution=ATTRIBUTION,
                                   installed=True, version=None, languages=[language]))  # fmt: skip
        program = TtsProgram(
            name="voxserve", description="voxserve speech server", attribution=ATTRIBUTION, installed=True,
            version=__version__, voices=voices, supports_synthesize_streaming=True,
        )  # fmt: skip
        return Info(tts=[program])

    async def _read_event(self) -> Event | VoxError | None:
        """The next event, `None` at the end of the connection, or the error to answer a malformed one with."""
        line = await self.reader.readuntil(b"\n") if not self.reader.at_eof() else b""
        if not line:
            return None
        try:
            header = json.loads(line)
            kind = header["type"]
            data_length = int(header.get("data_length") or 0)
            payload_length = int(header.get("payload_length") or 0)
            if not isinstance(kind, str) or data_length < 0 or payload_length < 0:
                raise ValueError(kind)
        except (ValueError, KeyError, TypeError):
            return InvalidRequestError("an event header must be a JSON object with a type", code="invalid_event")
        if max(data_length, payload_length) > MAX_EVENT_BYTES:
            await self._skip(data_length + payload_length)
            return InvalidRequestError(f"an event's data and payload take at most {MAX_EVENT_BYTES} bytes",
                                       code="event_too_large")  # fmt: skip
        data = header.get("data") if isinstance(header.get("data"), dict) else {}
        if data_length:
            try:
                data = {**data, **json.loads(await self.reader.readexactly(data_length))}
            except (ValueError, TypeError):
                await self._skip(payload_length)
                return InvalidRequestError("an event's data must be a JSON object", code="invalid_event")
        payload = await self.reader.readexactly(payload_length) if payload_length else None
        return Event(type=kind, data=data, payload=payload)

    async def _skip(self, count: int) -> None:
        while count > 0:
            dropped = await self.reader.read(min(count, 1 << 16))
            if not dropped:
                return
            count -= len(dropped)

    async def _error(self, error: VoxError, request_id: str | None = None) -> None:
        shown = shown_error(error, request_id or self._id)["error"]
        assert isinstance(shown, dict)
        await self._write(Error(text=str(shown["message"]), code=str(shown["code"])).event())

    async def _write(self, event: Event) -> None:
        """One event out; a client that stops reading for the idle timeout is taken as gone."""
        async with self._write_lock:
            try:
                async with asyncio.timeout(self._services.text_stream.idle_timeout_s):
                    await async_write_event(event, self.writer)
            except TimeoutError as exc:
                self.writer.close()
                raise ConnectionResetError("the client stopped reading") from exc


def _parsed(kind: type[E], event: Event) -> E:
    """`kind` from `event`, or `InvalidRequestError` for an event that does not fit it (no text, a voice that
    is not an object, text that is not a string)."""
    try:
        parsed = kind.from_event(event)  # type: ignore[attr-defined]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidRequestError(f"a {event.type} event must carry its fields", code="invalid_event") from exc
    text = getattr(parsed, "text", "")
    if not isinstance(text, str):
        raise InvalidRequestError(f"a {event.type} event's text must be a string", code="invalid_event")
    return parsed
