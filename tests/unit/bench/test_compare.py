from __future__ import annotations

import json
from pathlib import Path

import pytest

from voxserve.bench.compare import compare_reports
from voxserve.errors import ConfigError


def write_report(path: Path, throughput: float, latency_p50: float, errors: int = 0) -> Path:
    level = {"concurrency": 8, "audio_s_per_wall_s": throughput, "requests_per_s": throughput / 5,
             "latency_s": {"p50": latency_p50, "p95": latency_p50 * 2}, "ttfa_s": {"p50": 0.1},
             "errors": errors}  # fmt: skip
    path.write_text(json.dumps({"levels": [level]}))
    return path


def test_ratios_and_regressions(tmp_path: Path) -> None:
    before = write_report(tmp_path / "a.json", throughput=20.0, latency_p50=1.0)
    after = write_report(tmp_path / "b.json", throughput=15.0, latency_p50=1.05, errors=2)
    rows = {row.metric: row for row in compare_reports(before, after, threshold=0.1)}
    assert rows["audio_s_per_wall_s"].ratio == pytest.approx(0.75)
    assert rows["audio_s_per_wall_s"].regression
    assert not rows["latency_s.p50"].regression
    assert rows["errors"].regression
    assert not rows["ttfa_s.p50"].regression


def test_same_report_has_no_regressions(tmp_path: Path) -> None:
    report = write_report(tmp_path / "a.json", throughput=20.0, latency_p50=1.0)
    assert not any(row.regression for row in compare_reports(report, report, threshold=0.0))


def test_not_a_report_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(ConfigError, match="not a voxserve bench report"):
        compare_reports(tmp_path / "x.json", tmp_path / "x.json", 0.1)
