"""`voxserve bench compare A.json B.json`: ratios B/A per level and metric, regressions flagged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from voxserve.errors import ConfigError

# metric path in a level -> True when higher is better
METRICS = {
    "audio_s_per_wall_s": True,
    "requests_per_s": True,
    "latency_s.p50": False,
    "latency_s.p95": False,
    "ttfa_s.p50": False,
    "ttfa_s.p95": False,
    "errors": False,
}


@dataclass(frozen=True, slots=True)
class Comparison:
    concurrency: int
    metric: str
    before: float
    after: float
    ratio: float | None
    regression: bool


def _value(level: dict[str, object], path: str) -> float | None:
    value: object = level
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, int | float) else None


def _levels(path: Path) -> dict[int, dict[str, object]]:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        return {int(level["concurrency"]): level for level in report["levels"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a voxserve bench report: {exc}") from exc


def compare_reports(before: Path, after: Path, threshold: float) -> list[Comparison]:
    """A row per shared concurrency level and metric; `regression` when `after` is worse by more than
    `threshold` (a fraction), or has errors where `before` had none."""
    old, new = _levels(before), _levels(after)
    rows = []
    for concurrency in sorted(old.keys() & new.keys()):
        for metric, higher_is_better in METRICS.items():
            a, b = _value(old[concurrency], metric), _value(new[concurrency], metric)
            if a is None or b is None:
                continue
            ratio = b / a if a else None
            if ratio is None:
                worse = b > a if not higher_is_better else b < a
            else:
                worse = ratio < 1 - threshold if higher_is_better else ratio > 1 + threshold
            rows.append(Comparison(concurrency, metric, a, b, ratio, worse))
    return rows
