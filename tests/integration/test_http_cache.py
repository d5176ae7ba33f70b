"""The output audio cache: identical bytes on a hit, counters that move, and ways around it."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import metric_value


def body(text: str, **fields: object) -> dict[str, object]:
    return {"input": text, "voice": "alloy", "response_format": "mp3", **fields}


def test_hit_returns_identical_bytes_and_counts(http_cached: httpx.Client) -> None:
    text = f"Cache me if you can, {uuid.uuid4().hex[:8]}."
    hits_before = metric_value(http_cached, "voxserve_cache_hits_total", {"cache": "audio_memory"})
    first = http_cached.post("/v1/audio/speech", json=body(text))
    second = http_cached.post("/v1/audio/speech", json=body(text))
    assert (first.headers["x-voxserve-cache"], second.headers["x-voxserve-cache"]) == ("miss", "hit")
    assert second.content == first.content
    assert metric_value(http_cached, "voxserve_cache_hits_total", {"cache": "audio_memory"}) == hits_before + 1
    assert "cache;dur=" in second.headers["server-timing"]
    assert "model;dur=" not in second.headers["server-timing"]


def test_parameters_are_part_of_the_address(http_cached: httpx.Client) -> None:
    text = f"Different speed, different audio {uuid.uuid4().hex[:8]}."
    http_cached.post("/v1/audio/speech", json=body(text))
    faster = http_cached.post("/v1/audio/speech", json=body(text, speed=1.5))
    other_format = http_cached.post("/v1/audio/speech", json=body(text, response_format="flac"))
    assert faster.headers["x-voxserve-cache"] == "miss"
    assert other_format.headers["x-voxserve-cache"] == "miss"


def test_cache_can_be_bypassed_per_request(http_cached: httpx.Client) -> None:
    text = f"Do not cache this {uuid.uuid4().hex[:8]}."
    http_cached.post("/v1/audio/speech", json=body(text))
    for headers in ({"Cache-Control": "no-cache"}, {"X-Voxserve-Cache": "off"}):
        response = http_cached.post("/v1/audio/speech", json=body(text), headers=headers)
        assert response.headers["x-voxserve-cache"] == "bypass"


def test_buffered_wav_from_cache_is_sealed(http_cached: httpx.Client) -> None:
    text = f"Sealed from the cache {uuid.uuid4().hex[:8]}."
    streamed = http_cached.post("/v1/audio/speech", json=body(text, response_format="wav"))
    buffered = http_cached.post("/v1/audio/speech", json=body(text, response_format="wav", stream=False))
    assert buffered.headers["x-voxserve-cache"] == "hit"
    assert streamed.content[40:44] == b"\xff\xff\xff\xff"
    assert int.from_bytes(buffered.content[40:44], "little") == len(buffered.content) - 44
    assert buffered.content[44:] == streamed.content[44:]


def test_phoneme_cache_counts_hits(http: httpx.Client) -> None:
    hits_before = metric_value(http, "voxserve_cache_hits_total", {"cache": "phonemes"})
    for _ in range(2):
        http.post("/v1/audio/speech", json=body("Phonemes once, then from the cache."))
    assert metric_value(http, "voxserve_cache_hits_total", {"cache": "phonemes"}) >= hits_before + 1
