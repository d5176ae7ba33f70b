"""Bottleneck rules on synthetic windows: each shape of trouble gives its finding, and only where it should."""

from __future__ import annotations

from voxserve.obs.bottleneck import Evidence, diagnose
from voxserve.obs.system import SystemSummary
from voxserve.obs.window import RequestRecord, window_stats


def records(stages: dict[str, float], count: int = 20, chars: int = 100, total_s: float = 1.0) -> list[RequestRecord]:
    return [
        RequestRecord(200, "piper", "wav", chars, audio_s=5.0, total_s=total_s, ttfa_s=0.1, stages=dict(stages))
        for _ in range(count)
    ]


def system(cpu: float = 0.5, cores: int = 2, gpu: float | None = None, throttle: tuple[str, ...] = (),
           busiest: float | None = None, idlest: float | None = None) -> SystemSummary:  # fmt: skip
    return SystemSummary(
        samples=10, cores=cores, process_cpu_cores=cpu * cores, system_cpu_ratio=cpu,
        busiest_core_ratio=cpu if busiest is None else busiest, idlest_core_ratio=cpu if idlest is None else idlest,
        rss_bytes=1, peak_rss_bytes=1, threads=10, gpu_utilization=gpu, gpu_throttle_reasons=throttle,
    )  # fmt: skip


def findings(stats_records: list[RequestRecord], **evidence: object) -> dict[str, dict]:
    found = diagnose(Evidence(window_stats(stats_records, 60.0), **evidence))
    return {finding.id: finding.as_dict() for finding in found}


def test_model_bound_window_names_the_model_and_its_share() -> None:
    found = findings(records({"phonemize": 0.02, "model": 0.92, "encode": 0.06, "queue": 0.05}))
    assert found["limiting_stage"]["numbers"]["stage"] == "model"
    assert found["limiting_stage"]["summary"] == "model: 92% of busy time"
    assert "queue_bound" not in found
    assert "encode_bound" not in found


def test_queue_bound_window_compares_wait_with_service() -> None:
    found = findings(records({"model": 0.4, "encode": 0.1, "queue": 2.0}))
    queue = found["queue_bound"]
    assert queue["severity"] == "critical"
    assert queue["numbers"] == {"wait_s_per_request": 2.0, "service_s_per_request": 0.5, "ratio": 4.0}


def test_encode_bound_window_warns_about_the_encoder() -> None:
    found = findings(records({"model": 0.5, "encode": 0.4, "postprocess": 0.1}))
    assert found["encode_bound"]["severity"] == "warning"
    assert found["encode_bound"]["numbers"]["share"] == 0.4
    assert "wav" in found["encode_bound"]["action"]


def test_length_correlated_latency_gives_slope_and_r() -> None:
    window = [
        RequestRecord(
            200,
            "piper",
            "wav",
            chars,
            audio_s=chars / 15,
            total_s=0.05 + chars * 0.002,
            ttfa_s=0.1,
            stages={"model": chars * 0.002},
        )
        for chars in range(20, 420, 20)
    ]
    correlation = findings(window)["latency_tracks_length"]["numbers"]
    assert correlation["slope_s_per_100_chars"] == 0.2
    assert correlation["r"] == 1.0
    assert correlation["requests"] == 20


def test_uncorrelated_latency_gives_no_length_finding() -> None:
    window = [
        RequestRecord(200, "piper", "wav", chars, audio_s=1.0, total_s=total, ttfa_s=0.1, stages={"model": total})
        for chars, total in zip(range(20, 420, 20), [0.3, 0.1, 0.2] * 7, strict=False)
    ]
    assert "latency_tracks_length" not in findings(window)


def test_cpu_saturation_and_gpu_underuse_and_throttling() -> None:
    found = findings(records({"model": 1.0}), system=system(cpu=0.97, gpu=0.15, throttle=("hw_thermal",)),
                     gpu_available=True)  # fmt: skip
    assert found["cpu_saturated"]["numbers"]["system_cpu_ratio"] == 0.97
    assert found["gpu_underused"]["summary"] == "GPU at 15% while the CPU is at 97%"
    assert found["gpu_throttled"]["severity"] == "critical"


def test_idle_cores_while_requests_wait() -> None:
    found = findings(records({"model": 0.5, "queue": 0.5}), system=system(cpu=0.3))
    assert "idle_cores" in found
    assert "cpu_saturated" not in found


def test_one_hot_core_points_at_a_serial_step() -> None:
    found = findings(records({"model": 1.0}), system=system(cpu=0.55, busiest=0.98, idlest=0.1))
    assert found["one_core_hot"]["numbers"]["busiest_core_ratio"] == 0.98


def test_event_loop_lag_findings_by_severity() -> None:
    assert "event_loop_lag" not in findings(records({"model": 1.0}), loop_lag_p95_s=0.01)
    assert findings(records({"model": 1.0}), loop_lag_p95_s=0.08)["event_loop_lag"]["severity"] == "warning"
    assert findings(records({"model": 1.0}), loop_lag_p95_s=0.5)["event_loop_lag"]["severity"] == "critical"


def test_findings_come_most_severe_first_and_empty_window_says_so() -> None:
    ordered = diagnose(Evidence(window_stats(records({"model": 0.4, "queue": 2.0}), 60.0), loop_lag_p95_s=0.08))
    severities = [finding.severity for finding in ordered]
    assert severities == sorted(severities, key=["critical", "warning", "info"].index)
    assert [finding.id for finding in diagnose(Evidence(window_stats([], 0.0)))] == ["no_traffic"]


def test_errors_are_counted_but_left_out_of_latency() -> None:
    window = [*records({"model": 1.0}, count=3), RequestRecord(500, "piper", "wav", 10, 0.0, 9.0, None)]
    stats = window_stats(window, 10.0)
    assert stats.errors == 1
    assert stats.requests == 3
    assert stats.latency_p95_s == 1.0
