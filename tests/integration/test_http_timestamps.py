"""Timestamps over HTTP on the real server: SSE events beside the audio, buffered JSON, the same seconds at any
output rate, and plain audio left as it was."""

from __future__ import annotations

import base64
import io
import itertools
import json
import time

import httpx
import pytest
import srt
import webvtt

from tests.conftest import decode, decode_pcm

VOICE = "en_US-joe-medium"
TEXT = "It was late when they reached the village. The inn was full, so the baker offered a room. They slept well."


def speech(http: httpx.Client, **fields: object) -> httpx.Response:
    body = {"model": "tts-1", "input": TEXT, "voice": VOICE, **fields}
    return http.post("/v1/audio/speech", json=body, headers={"Accept": "application/json"})


def events(response: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line[len("data: ") :]) for line in response.text.splitlines() if line.startswith("data: ")]


def test_sse_sends_each_segments_timestamps_right_after_its_audio(http: httpx.Client) -> None:
    response = speech(http, response_format="pcm", stream_format="sse", timestamps="word")
    assert response.status_code == 200, response.text
    received = events(response)
    kinds = [event["type"] for event in received]
    assert kinds[0] == "speech.audio.delta"
    assert kinds[-1] == "speech.audio.done"
    assert kinds.count("speech.audio.timestamps") >= 3  # one per segment
    for before, event in itertools.pairwise(received):
        if event["type"] == "speech.audio.timestamps":
            assert before["type"] in ("speech.audio.delta", "speech.audio.timestamps")
            assert "phonemes" not in event  # asked for words only
    words = [word for event in received if event["type"] == "speech.audio.timestamps" for word in event["words"]]
    assert [TEXT[w["char_start"] : w["char_end"]] for w in words] == [w["text"] for w in words]
    assert [w["text"] for w in words][:3] == ["It", "was", "late"]
    audio = b"".join(base64.b64decode(event["audio"]) for event in received if event["type"] == "speech.audio.delta")
    assert words[-1]["end"] <= len(decode_pcm(audio)) / 24_000


def test_buffered_json_carries_the_audio_and_its_phonemes_in_the_same_seconds_at_any_rate(http: httpx.Client) -> None:
    seconds = {}
    for response_format in ("pcm", "wav"):  # 24 kHz PCM, and WAV at the voice's 22.05 kHz
        response = speech(http, response_format=response_format, stream=False, timestamps="phoneme")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        payload = response.json()
        assert payload["format"] == response_format
        audio = base64.b64decode(payload["audio"])
        samples, rate = (decode_pcm(audio), 24_000) if response_format == "pcm" else decode(audio)
        phonemes = payload["timestamps"]["phonemes"]
        assert abs(phonemes[-1]["end"] * rate - len(samples)) <= 1  # the last phoneme ends with the audio
        assert all(p["viseme"] in range(22) for p in phonemes)
        seconds[response_format] = [(w["text"], w["start"], w["end"]) for w in payload["timestamps"]["words"]]
    assert seconds["pcm"] == seconds["wav"]


def test_plain_audio_is_unchanged_and_espeak_voices_are_timed_too(http: httpx.Client) -> None:
    plain = http.post("/v1/audio/speech", json={"input": "Hello there.", "voice": VOICE, "response_format": "wav",
                                                "timestamps": "word"})  # fmt: skip
    assert plain.status_code == 200
    assert plain.headers["content-type"] == "audio/wav"
    espeak = speech(http, voice="espeak:en-us", stream=False, timestamps="word", response_format="wav")
    assert espeak.status_code == 200, espeak.text
    words = espeak.json()["timestamps"]["words"]
    assert [w["text"] for w in words] == TEXT.replace(".", "").replace(",", "").split()


def test_captions_parse_and_cover_the_audio_they_come_with(http: httpx.Client) -> None:
    body = {"input": TEXT, "voice": VOICE, "caption_format": "vtt", "caption_max_chars": 32}
    vtt = http.post("/v1/audio/captions", json=body)
    assert vtt.status_code == 200, vtt.text
    assert vtt.headers["content-type"].startswith("text/vtt")
    captions = webvtt.from_buffer(io.StringIO(vtt.text)).captions
    assert all(len(caption.text) <= 32 for caption in captions)
    assert " ".join(caption.text for caption in captions).split() == TEXT.split()
    both = http.post("/v1/audio/captions", json={**body, "caption_format": "srt", "include_audio": True,
                                                 "response_format": "wav"})  # fmt: skip
    payload = both.json()
    samples, rate = decode(base64.b64decode(payload["audio"]))
    cues = list(srt.parse(payload["captions"]))
    assert cues[-1].end.total_seconds() == pytest.approx(len(samples) / rate, abs=0.002)
    assert [cue.content for cue in cues] == [caption.text for caption in captions]


def test_a_cached_results_captions_are_those_of_its_audio(http_cached: httpx.Client) -> None:
    text = f"{TEXT} Cached at {time.time_ns()}."  # a result no other test made
    made = http_cached.post("/v1/audio/speech", json={"input": text, "voice": VOICE, "response_format": "wav"})
    assert made.status_code == 200, made.text
    assert made.headers["X-Voxserve-Cache"] == "miss"
    result = made.headers["X-Voxserve-Result"]
    samples, rate = decode(made.content)
    vtt = http_cached.get(f"/v1/audio/captions/{result}", params={"caption_max_chars": 32})
    assert vtt.status_code == 200, vtt.text
    captions = webvtt.from_buffer(io.StringIO(vtt.text)).captions
    assert " ".join(caption.text for caption in captions).split() == text.split()
    assert all(len(caption.text) <= 32 for caption in captions)
    hours, minutes, seconds = captions[-1].end.split(":")
    assert int(hours) * 3600 + int(minutes) * 60 + float(seconds) == pytest.approx(len(samples) / rate, abs=0.002)
    again = http_cached.post("/v1/audio/speech", json={"input": text, "voice": VOICE, "response_format": "wav"})
    assert (again.headers["X-Voxserve-Cache"], again.headers["X-Voxserve-Result"]) == ("hit", result)
    cues = list(srt.parse(http_cached.get(f"/v1/audio/captions/{result}?caption_format=srt").text))
    assert cues[-1].end.total_seconds() == pytest.approx(len(samples) / rate, abs=0.002)
    for unknown in ("0" * 64, "not-a-result", "%2e%2e%2fetc%2fpasswd"):
        missing = http_cached.get(f"/v1/audio/captions/{unknown}")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] in ("result_not_found", "not_found")
