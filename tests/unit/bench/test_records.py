from __future__ import annotations

import pytest

from voxserve.bench.records import RequestRecord, summarize


def test_summary_counts_errors_and_times_only_successes() -> None:
    records = [
        RequestRecord(text_chars=10, status=200, ttfa_s=0.1, latency_s=0.5, audio_s=2.0, max_gap_s=0.2),
        RequestRecord(text_chars=20, status=200, ttfa_s=0.3, latency_s=1.5, audio_s=3.0, max_gap_s=0.4),
        RequestRecord(text_chars=5, status=429, latency_s=0.01, error="HTTP 429"),
    ]
    summary = summarize(2, records, wall_s=2.0)
    assert (summary.requests, summary.errors) == (3, 1)
    assert summary.audio_s_per_wall_s == pytest.approx(2.5)
    assert summary.requests_per_s == pytest.approx(1.0)
    assert summary.chars_per_s == pytest.approx(15.0)
    assert summary.latency_s["p50"] == pytest.approx(1.0)
    assert summary.ttfa_s["p50"] == pytest.approx(0.2)
    assert summary.rtf_p50 == pytest.approx((0.25 + 0.5) / 2)


def test_an_all_error_level_has_no_timings() -> None:
    summary = summarize(1, [RequestRecord(text_chars=3, error="boom")], wall_s=1.0)
    assert summary.errors == 1
    assert summary.latency_s == {}
    assert summary.rtf_p50 is None
