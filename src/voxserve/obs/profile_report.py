"""Reading captures back: per-request time by stage, engine operator and Python function (`analyze`), and
where two captures differ (`compare`: the slow-server-versus-fast-server question)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from voxserve.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class ProfileDigest:
    """Milliseconds per captured request: by stage, by engine operator; Python functions by self time."""

    requests: int
    stages_ms: dict[str, float]
    operators_ms: dict[str, float]
    functions_ms: dict[str, float]


@dataclass(frozen=True, slots=True)
class Difference:
    kind: str  # "stage" or "operator"
    name: str
    before_ms: float
    after_ms: float

    @property
    def delta_ms(self) -> float:
        return self.after_ms - self.before_ms

    @property
    def ratio(self) -> float | None:
        return self.after_ms / self.before_ms if self.before_ms > 0 else None


def load_trace(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequestError(f"cannot read trace {path}: {exc}") from exc
    if isinstance(data, list):  # the bare-array form of the Chrome trace format
        return {"traceEvents": data}
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise InvalidRequestError(f"{path} is not a Chrome trace (no traceEvents)")
    return data


def digest(trace: dict[str, object]) -> ProfileDigest:
    events = [event for event in trace["traceEvents"] if isinstance(event, dict) and event.get("ph") == "X"]
    stages: dict[str, float] = defaultdict(float)
    operators: dict[str, float] = defaultdict(float)
    request_ids = set()
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") == "stage":
            stages[str(event["name"])] += float(event.get("dur", 0)) / 1000
            request_ids.add(args.get("request_id"))
        elif event.get("cat") == "Node":
            operators[str(args.get("op_name") or event["name"])] += float(event.get("dur", 0)) / 1000
    summary = (trace.get("otherData") or {}).get("voxserve") or {}
    requests = len(request_ids) or int(summary.get("requests") or 1)
    functions = {str(row["function"]): float(row["self_ms"]) for row in summary.get("top_functions", [])}
    return ProfileDigest(
        requests=requests,
        stages_ms={name: ms / requests for name, ms in stages.items()},
        operators_ms={name: ms / requests for name, ms in operators.items()},
        functions_ms={name: ms / requests for name, ms in functions.items()},
    )


def compare(before: ProfileDigest, after: ProfileDigest) -> list[Difference]:
    """Per-request differences by stage and by operator, largest absolute change first."""
    differences = [
        Difference(kind, name, getattr(before, field).get(name, 0.0), getattr(after, field).get(name, 0.0))
        for kind, field in (("stage", "stages_ms"), ("operator", "operators_ms"))
        for name in getattr(before, field).keys() | getattr(after, field).keys()
    ]
    return sorted(differences, key=lambda difference: -abs(difference.delta_ms))


def largest_stage_difference(differences: list[Difference]) -> Difference | None:
    """The stage that changed most; queue wait is left out (it follows load, not the work)."""
    return next((d for d in differences if d.kind == "stage" and d.name != "queue"), None)
