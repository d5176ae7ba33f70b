"""Bottleneck diagnosis: deterministic rules over a recent window that say, in words and numbers, what limits
the server and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from voxserve.obs.system import SystemSummary
from voxserve.obs.window import WindowStats

Severity = Literal["critical", "warning", "info"]
_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}

# A stage other than the model taking this share of busy time is worth a warning.
STAGE_SHARE_WARNING = 0.25
CPU_SATURATED = 0.90
CPU_IDLE = 0.60
GPU_UNDERUSED = 0.30
LOOP_LAG_WARNING_S = 0.05
LOOP_LAG_CRITICAL_S = 0.25
LENGTH_CORRELATION_R = 0.8
MIN_REQUESTS_FOR_CORRELATION = 10
_SLOWDOWN_REASONS = ("sw_thermal", "hw_thermal", "sw_power_cap", "hw_power_brake", "hw_slowdown")

_STAGE_ACTIONS = {
    "model": "the model limits: give it more cores (`voxserve tune` picks workers x threads), a GPU engine, "
    "or more replicas",
    "encode": "encoding is expensive: prefer wav/pcm or opus; mp3 and aac cost the most CPU per second of audio",
    "phonemize": "the phonemizer is slow for this text mix: repeated texts hit the phoneme cache, check its hit rate",
    "write": "clients read slowly: the network or the clients limit, not the server",
    "postprocess": "joining and resampling is unusually expensive: check crossfade_ms and the output sample rate",
    "normalize": "text normalization is unusually expensive: very long or unusual input",
    "segment": "segmentation is unusually expensive: very long input",
    "receive": "reading requests is slow: large bodies or a slow network",
    "cache": "the audio cache is slow: check its disk directory",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One diagnosis: what (`id`, `summary`), how sure and how bad (`severity`, `numbers`), and what to do."""

    id: str
    severity: Severity
    summary: str
    action: str
    numbers: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "severity": self.severity, "summary": self.summary, "action": self.action,
                "numbers": self.numbers}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the rules look at: the window's request statistics, the machine over the same span, event-loop
    lag, and whether a GPU is there."""

    stats: WindowStats
    system: SystemSummary | None = None
    loop_lag_p95_s: float | None = None
    gpu_available: bool = False


def diagnose(evidence: Evidence) -> list[Finding]:
    """Every finding, most severe first."""
    stats = evidence.stats
    if stats.requests == 0:
        findings = [
            Finding("no_traffic", "info", "no successful speech requests in the window", "send traffic, or run "
                    "POST /diagnostics/benchmark", {"errors": stats.errors, "span_s": round(stats.span_s, 1)})
        ]  # fmt: skip
    else:
        findings = [*_stage_findings(stats), *_queue_findings(stats), *_length_findings(stats)]
    findings += [*_cpu_findings(evidence), *_gpu_findings(evidence), *_loop_findings(evidence)]
    return sorted(findings, key=lambda finding: _SEVERITY_ORDER[finding.severity])


def _stage_findings(stats: WindowStats) -> list[Finding]:
    shares = stats.stage_shares()
    if not shares:
        return []
    top = max(shares, key=lambda stage: shares[stage])
    numbers = {"shares": {stage: round(share, 3) for stage, share in shares.items()}, "busy_s": round(stats.busy_s, 3)}
    findings = [
        Finding("limiting_stage", "info", f"{top}: {shares[top]:.0%} of busy time", _STAGE_ACTIONS.get(top, ""),
                {"stage": top, **numbers})
    ]  # fmt: skip
    for stage, share in shares.items():
        if stage != "model" and share >= STAGE_SHARE_WARNING:
            findings.append(
                Finding(f"{stage}_bound", "warning", f"{stage} takes {share:.0%} of busy time",
                        _STAGE_ACTIONS.get(stage, ""), {"stage": stage, "share": round(share, 3)})
            )  # fmt: skip
    return findings


def _queue_findings(stats: WindowStats) -> list[Finding]:
    wait = stats.stage_totals_s.get("queue", 0.0) / stats.requests
    service = stats.busy_s / stats.requests
    if service <= 0 or wait < service:
        return []
    ratio = wait / service
    return [
        Finding(
            "queue_bound", "critical" if ratio >= 3 else "warning",
            f"requests wait {wait:.2f} s in the queue for {service:.2f} s of work ({ratio:.1f}x)",
            "demand exceeds capacity: add cores, a GPU or replicas; a lower max_queue_size sheds load sooner (429)",
            {"wait_s_per_request": round(wait, 4), "service_s_per_request": round(service, 4),
             "ratio": round(ratio, 2)},
        )
    ]  # fmt: skip


def _length_findings(stats: WindowStats) -> list[Finding]:
    correlation = stats.length_correlation
    if correlation is None or correlation.requests < MIN_REQUESTS_FOR_CORRELATION:
        return []
    if correlation.r < LENGTH_CORRELATION_R:
        return []
    return [
        Finding(
            "latency_tracks_length", "info",
            f"latency grows {correlation.slope_s_per_100_chars * 1000:.0f} ms per 100 characters "
            f"(r = {correlation.r:.2f})",
            "whole-body latency follows text length by nature; stream responses (the default) so first audio "
            "does not, and watch time to first audio instead",
            {"slope_s_per_100_chars": round(correlation.slope_s_per_100_chars, 4),
             "intercept_s": round(correlation.intercept_s, 4), "r": round(correlation.r, 3),
             "requests": correlation.requests},
        )
    ]  # fmt: skip


def _cpu_findings(evidence: Evidence) -> list[Finding]:
    system = evidence.system
    if system is None or system.cores == 0:
        return []
    numbers = {"process_cpu_cores": round(system.process_cpu_cores, 2), "cores": system.cores,
               "system_cpu_ratio": round(system.system_cpu_ratio, 3)}  # fmt: skip
    if system.system_cpu_ratio >= CPU_SATURATED:
        return [
            Finding("cpu_saturated", "warning",
                    f"CPU saturated: {system.system_cpu_ratio:.0%} of {system.cores} cores busy "
                    f"({system.process_cpu_cores:.1f} cores by this server)",
                    "this machine is at its limit: more cores, a GPU or more replicas", numbers)
        ]  # fmt: skip
    stats = evidence.stats
    waiting = stats.requests and stats.stage_totals_s.get("queue", 0.0) >= 0.5 * stats.busy_s
    if waiting and system.system_cpu_ratio < CPU_IDLE:
        return [
            Finding("idle_cores", "warning",
                    f"cores idle ({system.system_cpu_ratio:.0%} busy) while requests wait in the queue",
                    "more workers or threads would use them: run `voxserve tune`", numbers)
        ]  # fmt: skip
    if system.cores > 1 and system.busiest_core_ratio >= CPU_SATURATED and system.idlest_core_ratio < 0.3:
        return [
            Finding("one_core_hot", "warning",
                    f"one core {system.busiest_core_ratio:.0%} busy while another is {system.idlest_core_ratio:.0%}",
                    "a serial step limits (the event loop or work that holds the GIL): capture a profile",
                    {**numbers, "busiest_core_ratio": round(system.busiest_core_ratio, 3),
                     "idlest_core_ratio": round(system.idlest_core_ratio, 3)})
        ]  # fmt: skip
    return []


def _gpu_findings(evidence: Evidence) -> list[Finding]:
    system = evidence.system
    if not evidence.gpu_available or system is None:
        return []
    findings = []
    utilization = system.gpu_utilization
    if utilization is not None and utilization < GPU_UNDERUSED and system.system_cpu_ratio >= CPU_SATURATED:
        findings.append(
            Finding("gpu_underused", "warning",
                    f"GPU at {utilization:.0%} while the CPU is at {system.system_cpu_ratio:.0%}",
                    "the CPU side (phonemizer, encoder, Python) cannot feed the GPU: more CPU cores per GPU, larger "
                    "batches, cheaper output formats",
                    {"gpu_utilization": round(utilization, 3), "system_cpu_ratio": round(system.system_cpu_ratio, 3)})
        )  # fmt: skip
    slowdowns = [reason for reason in system.gpu_throttle_reasons if reason in _SLOWDOWN_REASONS]
    if slowdowns:
        thermal = any("thermal" in reason for reason in slowdowns)
        findings.append(
            Finding("gpu_throttled", "critical" if thermal else "warning",
                    f"GPU clocks held down: {', '.join(slowdowns)}",
                    "check cooling, power limits and the GPU's clocks (nvidia-smi -q -d PERFORMANCE)",
                    {"reasons": slowdowns})
        )  # fmt: skip
    return findings


def _loop_findings(evidence: Evidence) -> list[Finding]:
    lag = evidence.loop_lag_p95_s
    if lag is None or lag < LOOP_LAG_WARNING_S:
        return []
    return [
        Finding("event_loop_lag", "critical" if lag >= LOOP_LAG_CRITICAL_S else "warning",
                f"the event loop runs {lag * 1000:.0f} ms late (p95)",
                "something blocks the loop or the process is starved: streamed audio stalls with it; capture a "
                "profile", {"lag_p95_s": round(lag, 4)})
    ]  # fmt: skip
