"""`POST /v1/audio/speech` against the real server and the bundled voice."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import decode, decode_pcm

VOICE = "en_US-joe-medium"
TEXT = "The meeting has been moved to Thursday afternoon. Please bring the quarterly report."
LONG_TEXT = (
    "It was late in the evening when the travelers reached the village. The inn was full, but the baker offered "
    "them a room above the shop. In the morning, the fog lifted slowly from the valley. By noon the sun was bright, "
    "and the river sparkled between the trees. They thanked the baker and walked on toward the mountains."
)
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def speech(http: httpx.Client, text: str = TEXT, **fields: object) -> httpx.Response:
    return http.post("/v1/audio/speech", json={"model": "tts-1", "input": text, "voice": VOICE, **fields})


def duration_s(response: httpx.Response) -> float:
    if response.headers["content-type"] == "audio/pcm":
        return len(decode_pcm(response.content)) / 24_000
    samples, rate = decode(response.content)
    return len(samples) / rate


def test_speech_has_plausible_duration_and_is_not_silent(http: httpx.Client) -> None:
    response = speech(http, response_format="pcm")
    assert response.status_code == 200
    samples = decode_pcm(response.content)
    words = len(TEXT.split())
    assert 0.15 * words < len(samples) / 24_000 < 0.8 * words
    assert np.sqrt(np.mean(samples**2)) > 0.01


def test_every_format_decodes_to_the_same_duration(http: httpx.Client) -> None:
    durations = {}
    for response_format, content_type in CONTENT_TYPES.items():
        response = speech(http, response_format=response_format)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == content_type
        durations[response_format] = duration_s(response)
    reference = durations["wav"]
    for response_format, seconds in durations.items():
        assert seconds == pytest.approx(reference, rel=0.05), response_format


def test_streamed_wav_has_one_header_with_unknown_length(http: httpx.Client) -> None:
    body = speech(http, LONG_TEXT, response_format="wav").content
    assert body.count(b"RIFF") == 1
    assert body[4:8] == b"\xff\xff\xff\xff"
    assert body[40:44] == b"\xff\xff\xff\xff"


def test_buffered_wav_has_exact_sizes(http: httpx.Client) -> None:
    body = speech(http, response_format="wav", stream=False).content
    assert int.from_bytes(body[40:44], "little") == len(body) - 44
    assert int.from_bytes(body[4:8], "little") == len(body) - 8


def test_first_audio_arrives_long_before_synthesis_ends(http: httpx.Client) -> None:
    started = time.perf_counter()
    with http.stream(
        "POST", "/v1/audio/speech", json={"input": LONG_TEXT, "voice": VOICE, "response_format": "pcm"}
    ) as r:
        chunks = r.iter_bytes()
        next(chunks)
        first_chunk_s = time.perf_counter() - started
        received = sum(len(chunk) for chunk in chunks)
    total_s = time.perf_counter() - started
    assert received > 0
    assert first_chunk_s < 0.5 * total_s
    assert "ttfa;dur=" in r.headers["server-timing"]


def test_streamed_pcm_equals_buffered_pcm(http: httpx.Client) -> None:
    with http.stream(
        "POST", "/v1/audio/speech", json={"input": LONG_TEXT, "voice": VOICE, "response_format": "pcm"}
    ) as r:
        pieces = list(r.iter_bytes())
    buffered = speech(http, LONG_TEXT, response_format="pcm", stream=False)
    assert len(pieces) > 1
    assert b"".join(pieces) == buffered.content


def test_sse_streams_deltas_then_done_with_the_same_audio(http: httpx.Client) -> None:
    response = speech(http, LONG_TEXT, response_format="pcm", stream_format="sse")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data: ") :]) for line in response.text.splitlines() if line.startswith("data: ")]
    deltas = [event for event in events if event["type"] == "speech.audio.delta"]
    assert len(deltas) > 1
    assert events[-1]["type"] == "speech.audio.done"
    assert events[-1]["usage"]["input_characters"] == len(LONG_TEXT)
    assert {"segment", "phonemize", "queue", "model", "encode"} <= set(events[-1]["timing"]["stages_s"])
    audio = b"".join(base64.b64decode(event["audio"]) for event in deltas)
    assert audio == speech(http, LONG_TEXT, response_format="pcm").content


def test_buffered_response_reports_every_stage_in_server_timing(http: httpx.Client) -> None:
    response = speech(http, response_format="mp3", stream=False)
    stages = {part.split(";")[0].strip() for part in response.headers["server-timing"].split(",")}
    assert {"segment", "phonemize", "queue", "model", "encode", "total"} <= stages
    assert int(response.headers["content-length"]) == len(response.content)


def test_openai_client_works_unchanged(openai_client: openai.OpenAI) -> None:
    created = openai_client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="wav")
    samples, _ = decode(created.content)
    assert len(samples) > 0
    with openai_client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="nova", input=TEXT, response_format="wav"
    ) as streamed:
        assert streamed.headers["content-type"] == "audio/wav"
        body = b"".join(streamed.iter_bytes())
    assert body[44:] == created.content[44:]


def test_concurrent_requests_each_get_their_own_audio(http: httpx.Client) -> None:
    texts = [f"Request number {n}. " + " ".join(["The quick brown fox jumps."] * (n % 4 + 1)) for n in range(16)]
    solo = [decode_pcm(speech(http, text, response_format="pcm").content) for text in texts]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda text: speech(http, text, response_format="pcm"), texts))
    for text, alone, response in zip(texts, solo, together, strict=True):
        assert response.status_code == 200, text
        audio = decode_pcm(response.content)
        assert len(audio) == pytest.approx(len(alone), rel=0.05), text
        assert np.abs(audio[: len(alone)] - alone[: len(audio)]).max() < 1e-3, text


def test_speed_changes_duration_through_the_model(http: httpx.Client) -> None:
    # VITS rounds each phoneme's duration up to whole frames, so the length moves less than 1/speed.
    normal = duration_s(speech(http, response_format="wav"))
    fast = duration_s(speech(http, response_format="wav", speed=2.0))
    slow = duration_s(speech(http, response_format="wav", speed=0.5))
    assert 0.45 * normal < fast < 0.75 * normal
    assert 1.5 * normal < slow < 2.2 * normal


def test_instructions_are_accepted_and_reported_ignored(http: httpx.Client) -> None:
    response = speech(http, response_format="wav", instructions="Speak cheerfully.")
    assert response.status_code == 200
    assert response.headers["x-voxserve-instructions"] == "ignored"
    assert "x-voxserve-instructions" not in speech(http, response_format="wav").headers


@pytest.mark.parametrize("voice", ["espeak:en-us", "espeak:de", "espeak:fr", "espeak:es"])
def test_espeak_voices_speak_their_languages(http: httpx.Client, voice: str) -> None:
    response = http.post(
        "/v1/audio/speech", json={"input": "One, two, three.", "voice": voice, "response_format": "wav"}
    )
    assert response.status_code == 200
    samples, _ = decode(response.content)
    assert np.abs(samples).max() > 0.05


def test_voice_may_be_given_as_an_object(http: httpx.Client) -> None:
    response = http.post("/v1/audio/speech", json={"input": "Hi.", "voice": {"id": "alloy"}, "response_format": "wav"})
    assert response.status_code == 200
    assert response.headers["x-voxserve-voice"] == VOICE


def test_engine_model_name_selects_engine_voices(http: httpx.Client) -> None:
    response = http.post("/v1/audio/speech", json={"model": "espeak", "input": "Bonjour.", "voice": "fr"})
    assert response.status_code == 200
    assert response.headers["x-voxserve-voice"] == "espeak:fr"
