"""The README's performance figures are those of the committed reports under `docs/bench/`: a figure changed
without re-running its benchmark, or a report re-run without updating the README, fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def report(name: str) -> dict[str, Any]:
    return json.loads((ROOT / "docs" / "bench" / f"{name}.json").read_text(encoding="utf-8"))


PIPER_SECTION = README[README.index("**Against piper's own HTTP server**") :]


def table_row(first_cell: str) -> list[str]:
    """The cells of the piper comparison's table row that starts with `first_cell`."""
    line = next(line for line in PIPER_SECTION.splitlines() if line.startswith(f"| {first_cell}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def numbers(cell: str) -> list[float]:
    return [float(number.replace(",", "")) for number in re.findall(r"\d[\d,]*(?:\.\d+)?", cell)]


@pytest.mark.parametrize("concurrency", [1, 4, 8])
def test_the_piper_table_is_the_committed_report(concurrency: int) -> None:
    piper = report("vs_piper")
    ratios, medians = piper["voxserve_vs_piper"], piper["medians"]
    ours, theirs = medians[f"voxserve_c{concurrency}"], medians[f"piper_c{concurrency}"]
    cells = table_row(f"{concurrency} |")
    throughput = ratios[f"c{concurrency}_throughput"]
    assert numbers(cells[1]) == [
        round(ours["audio_s_per_wall_s"], 1), round(theirs["audio_s_per_wall_s"], 1),
        round(throughput["median"], 2), round(throughput["min"], 2), round(throughput["max"], 2),
    ]  # fmt: skip
    latency = [ratios[f"c{concurrency}_latency_{p}"] for p in ("p50", "p95")]
    assert numbers(cells[2])[::3] == [round(latency[0]["median"], 2), round(latency[1]["median"], 2)]
    assert numbers(cells[3]) == [round(ours["ttfa_p50_s"] * 1000), round(ours["ttfa_p95_s"] * 1000)]
    assert numbers(cells[4]) == [round(theirs["ttfa_p50_s"] * 1000), round(theirs["ttfa_p95_s"] * 1000)]
    assert numbers(cells[5])[0] == ours["requests_with_stall"]


@pytest.mark.parametrize(
    ("first_cell", "server"),
    [("defaults", "voxserve"), ("`decode_windows = false`", "no_windows"), ("whole sentences", "whole_sentences")],
)
def test_the_variant_table_is_the_committed_report(first_cell: str, server: str) -> None:
    piper = report("vs_piper")
    ratios = {name: value["median"] for name, value in piper[f"{server}_vs_piper"].items()}
    medians = piper["medians"]
    cells = table_row(first_cell)
    c1 = medians[f"{server}_c1"]
    assert numbers(cells[1]) == [
        round(ratios["c1_throughput"], 2), round(ratios["c1_latency_p50"], 2),
        round(c1["ttfa_p50_s"] * 1000), round(c1["ttfa_p95_s"] * 1000),
    ]  # fmt: skip
    assert numbers(cells[2]) == [round(ratios["c4_throughput"], 2), round(medians[f"{server}_c4"]["ttfa_p95_s"] * 1000)]
    assert numbers(cells[3]) == [
        round(ratios["c8_throughput"], 2), round(ratios["c8_latency_p95"], 2),
        round(medians[f"{server}_c8"]["ttfa_p95_s"] * 1000),
    ]  # fmt: skip
    assert numbers(cells[4]) == [medians[f"{server}_c{c}"]["requests_with_stall"] for c in (1, 4, 8)]


def test_the_windowed_decoder_figures_are_the_committed_report() -> None:
    windowed = report("windowed_decoder")
    whole, default = windowed["whole_call"], windowed["configs"]["default"]
    paragraph = README[README.index("**The windowed decoder in-process**") :].split("\n\n")[0]
    expected = [
        f"takes {whole['ms_p50']:.0f} ms p50 ({whole['ms_p95']:.0f} ms p95)",
        f"grows by {whole['ms_per_100_chars']:.0f} ms per 100 characters",
        f"first audio in {default['first_audio_ms_p50']:.0f} ms p50 ({default['first_audio_ms_p95']:.0f} ms p95)",
        f"growing by {default['first_audio_ms_per_100_chars']:.0f} ms",
        f"took {default['total_vs_whole_call_median']:.2f}x its whole call",
        f"{windowed['configs']['first16_x2_to256']['total_vs_whole_call_median']:.2f}x with windows doubling",
        f"{windowed['configs']['first16_x4_to512']['total_vs_whole_call_median']:.2f}x growing fourfold",
    ]
    for figure in expected:
        assert figure in " ".join(paragraph.split()), figure
    worst = max(config["max_relative_error"] for config in windowed["configs"].values())
    assert worst < 1e-3


def test_the_server_sweep_table_is_the_committed_report() -> None:
    sweep = report("server_sweep")["runs"]
    stream = sweep["stream"]
    best = max(config["audio_s_per_wall_s"] for config in stream["in_process"])
    section = README[README.index("| concurrency | audio s / s | vs in-process |") :]
    for level in stream["levels"]:
        line = next(line for line in section.splitlines() if line.startswith(f"| {level['concurrency']} |"))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        server = level["server"]
        assert numbers(" ".join(cells[1:])) == [
            round(level["audio_s_per_wall_s"], 2), round(level["audio_s_per_wall_s"] / best, 2),
            round(level["latency_s"]["p50"] * 1000), round(level["latency_s"]["p95"] * 1000),
            round(level["ttfa_s"]["p50"] * 1000), round(level["ttfa_s"]["p95"] * 1000), level["requests_with_stall"],
            round(server["cpu_cores"], 2), round(server["peak_rss_bytes"] / 1e9, 2),
        ]  # fmt: skip
    targets = README[README.index("| target (issue 3) |") :].split("\n\n")[0]
    c8 = next(level for level in stream["levels"] if level["concurrency"] == 8)
    buffered = sweep["buffered_c1"]
    single = min(config["latency_s"]["p50"] for config in buffered["in_process"])
    cache = sweep["cache"]["levels"][0]["latency_s"]
    for figure in (
        f"{c8['audio_s_per_wall_s']:.2f} / {best:.2f} audio-s per s",
        f"**{c8['audio_s_per_wall_s'] / best:.2f}**",
        f"{buffered['levels'][0]['latency_s']['p50'] * 1000:.0f} / {single * 1000:.0f} ms",
        f"**{c8['ttfa_s']['p95'] * 1000:.0f} ms**",
        f"**{cache['p50'] * 1000:.0f} ms** (p95 {cache['p95'] * 1000:.0f} ms",
    ):
        assert figure in targets, figure


def test_the_telemetry_cost_is_the_committed_report() -> None:
    telemetry = report("telemetry_overhead")
    ratio = telemetry["on_vs_off_per_round"]
    paragraph = " ".join(README[README.index("**Cost**: with `telemetry = false`") :].split("\n\n")[0].split())
    for figure in (
        f"on/off per round **{ratio['median']:.2f}** (median; {ratio['min']:.2f}-{ratio['max']:.2f})",
        f"medians {telemetry['audio_s_per_s_on']:.2f} audio-s/s on and {telemetry['audio_s_per_s_off']:.2f} off",
    ):
        assert figure in paragraph, figure


def test_the_decoder_precision_figures_are_the_committed_report() -> None:
    variants = report("decoder_precision")["variants"]
    paragraph = " ".join(README[README.index("**The decoder at the onnxruntime level**") :].split("\n\n")[0].split())

    def ms(name: str) -> str:
        return " / ".join(f"{value:.0f}" for value in variants[name]["ms_per_call_by_window_frames"].values())

    def ratios(prefix: str) -> list[float]:
        return [ratio for name, variant in variants.items() if name.startswith(prefix)
                for ratio in variant["vs_fp32_all_same_threads"].values()]  # fmt: skip

    fp16, int8 = ratios("fp16"), ratios("int8")
    int8_error = variants["int8_dynamic_all_2t"]["max_relative_error"]
    for figure in (
        f"{ms('fp32_all_2t')} ms on 2 threads, {ms('fp32_all_1t')} ms on 1",
        f"relative error {variants['fp16_all_2t']['max_relative_error']:.1e}".replace("e-0", "e-"),
        f"no faster on this CPU ({min(fp16):.2f}-{max(fp16):.2f}x fp32)",
        f"{min(int8):.1f}-{max(int8):.1f}x slower with a relative error of {int8_error:.2f}",
        f"up to {max(ratios('fp32_basic') + ratios('fp32_extended')):.2f}x slower",
    ):
        assert figure in paragraph, figure


def test_the_first_audio_slope_is_the_committed_report() -> None:
    slope = report("server_sweep")["c1_ttfa_by_first_sentence"]
    low, high = slope["first_sentence_chars_min_max"]
    paragraph = " ".join(README[README.index("**First audio no longer grows with the first sentence**") :].split())
    figure = (
        f"over the {slope['requests']} c=1 requests (first sentences of {low} to {high} characters), TTFA grows "
        f"by {slope['ms_per_100_chars']:.0f} ms per 100 characters (correlation {slope['correlation']})"
    )
    assert figure in paragraph
    whole = report("windowed_decoder")["whole_call"]["ms_per_100_chars"]
    assert f"against {whole:.0f} ms for a whole call in-process" in paragraph


def test_the_jobs_lane_figures_are_the_committed_report() -> None:
    jobs = report("jobs_lane")
    ratios, ttfa = jobs["ratios"], jobs["ttfa_ms_pooled"]
    section = " ".join(README[README.index("**Jobs lane, measured**") :].split("**From the command line.**")[0].split())

    def level(concurrency: int) -> str:
        ratio = ratios[f"ttfa_p95_c{concurrency}_beside_vs_alone"]
        beside, alone = ttfa[f"c{concurrency}_beside"]["p95"], ttfa[f"c{concurrency}_alone"]["p95"]
        return (f"**{ratio['median']:.2f}x at c={concurrency}** ({ratio['min']:.2f}-{ratio['max']:.2f}; "
                f"{beside:.0f} / {alone:.0f} ms")  # fmt: skip

    job = ratios["job_vs_in_process_audio_s_per_s"]
    for figure in (
        f"**{job['median']:.2f}x** the in-process throughput limit ({job['min']:.2f}-{job['max']:.2f} over rounds",
        level(1),
        level(4),
        f"**{jobs['long_job']['peak_second_half_vs_first_half']:.2f}x** the first half's",
    ):
        assert figure in section, figure


QUALITY_SECTION = README[README.index("## Speech quality") : README.index("## GPU")]


def test_the_quality_figures_are_the_committed_report() -> None:
    quality = report("quality")
    phonemes = quality["phonemes"]
    assert f"{phonemes['segments_with_pipers_ids']} of\n{phonemes['segments']})" in QUALITY_SECTION
    assert f"{phonemes['lines_split_where_espeak_ends_sentences']} of the corpus's {phonemes['lines']}" in (
        QUALITY_SECTION.replace("\n", " ")
    )
    rows = [line for line in QUALITY_SECTION.splitlines() if line.startswith("| ") and "LUFS" in line]
    measured = [*quality["loudness"]["voices"].values(), quality["loudness"]["raw_model"]]
    assert len(rows) == len(measured)
    for row, voice in zip(rows, measured, strict=True):
        lines = voice["line_lufs"]
        expected = [voice["corpus_lufs"], lines["median"], lines["min"], lines["max"], voice["true_peak_dbtp"]]
        assert [-value for value in numbers(row.split("|", 2)[2])[:5]] == expected
    trip = quality["round_trip"]
    text = QUALITY_SECTION.replace("\n", " ")
    default, whole = trip["voxserve_default"], trip["voxserve_whole_sentences"]
    assert f"alone, each sentence decoded whole, {trip['raw_model']['wer']};" in text
    assert f"`max_segment_chars`) {whole['wer']}, every line within" in text
    assert (
        f"On default settings voxserve scores {default['wer']} (+{default['wer'] - trip['raw_model']['wer']:.3f})"
        in text
    )
    durations = default["duration_vs_whole_decode"]
    assert (
        f"run {(durations['median'] - 1) * 100:.1f}% longer (median; {durations['lines_beyond_2_percent']} of" in text
    )
    piper = report("vs_piper")["medians"]
    assert (f"c=4 TTFA p95 was {piper['whole_sentences_c4']['ttfa_p95_s']:.2f} s against "
            f"{piper['voxserve_c4']['ttfa_p95_s']:.2f} s") in text  # fmt: skip


def test_the_conversion_table_is_the_committed_report() -> None:
    pairs = report("conversion_quality")["pairs"]
    section = README[README.index("**Quality**, measured by `benchmarks/conversion_quality.py`") :]
    rows = [line for line in section.splitlines() if line.startswith("| ") and " -> " in line][1 : len(pairs) + 1]
    assert len(rows) == len(pairs)
    for row, pair in zip(rows, pairs, strict=True):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0] == f"{pair['source']} -> {pair['target']}"
        low, high = pair["f0_error_range"]
        assert numbers(cells[4]) == [round(pair["f0_error"] * 100, 1), round(low * 100, 1), round(high * 100, 1)]
        assert numbers(cells[5]) + numbers(cells[6]) == [round(pair["cos_target"], 3), round(pair["cos_source"], 3)]
        assert cells[-1] == ("yes" if pair["pass"] else "no")


CLUSTER_SECTION = README[README.index("**What it costs on one machine**") : README.index("Two nodes by hand")]


def cluster_row(first_cell: str) -> list[float]:
    line = next(line for line in CLUSTER_SECTION.splitlines() if line.startswith(f"| {first_cell}"))
    return numbers(line.split("|", 2)[2])


@pytest.mark.parametrize(
    ("first_cell", "level", "metric", "ratio", "scale"),
    [
        ("c=1 throughput", "c1", "audio_s_per_s", "throughput_c1", 1),
        ("c=8 throughput", "c8", "audio_s_per_s", "throughput_c8", 1),
        ("c=1 TTFA p50", "c1", "ttfa_p50_s", "ttfa_p50_c1", 1000),
        ("c=8 TTFA p95", "c8", "ttfa_p95_s", "ttfa_p95_c8", 1000),
    ],
)
def test_the_cluster_table_is_the_committed_report(
    first_cell: str, level: str, metric: str, ratio: str, scale: int
) -> None:
    cluster = report("cluster_overhead")
    medians = cluster["medians"]
    digits = 0 if scale == 1000 else 2
    values = [
        round(medians[peer][level][metric] * scale, digits) for peer in ("single", "single_no_windows", "cluster")
    ]
    spread = cluster["cluster_vs_single"][ratio]
    expected = [*values, round(spread["median"], 2), round(spread["min"], 2), round(spread["max"], 2)]
    assert cluster_row(first_cell) == expected


def test_the_clusters_memory_and_first_audio_figures_are_the_committed_report() -> None:
    cluster = report("cluster_overhead")
    peaks = cluster["peak_rss_bytes"]
    expected = [round(peaks[peer] / 2**20) for peer in ("single", "single_no_windows", "cluster")]
    assert cluster_row("peak RSS") == [*expected, cluster["peak_rss_cluster_vs_single"]]
    added, ray = cluster["ttfa_added_p50_c1_ms"], cluster["ttfa_added_p50_c1_vs_no_windows_ms"]
    assert f"{round(added['median'])} ms ({round(added['min'])}-{round(added['max'])})" in CLUSTER_SECTION
    assert f"{round(ray['median'])} ms ({round(ray['min'])}-{round(ray['max'])};" in CLUSTER_SECTION
    assert f"{cluster['cluster_vs_single']['throughput_c8']['median']:.2f}x the audio" in CLUSTER_SECTION
