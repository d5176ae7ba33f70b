"""Benchmark corpora: one utterance per line, `#` lines are comments."""

from __future__ import annotations

from pathlib import Path

from voxserve.errors import ConfigError

BUILTIN_CORPUS = (
    "Hello.",
    "Your table is ready.",
    "The meeting has been moved to Thursday afternoon.",
    "Please hold while I connect you to the next available agent.",
    "The library closes early today, so return your books before five o'clock.",
    "Thank you for calling. Our office hours are Monday to Friday, from nine in the morning until six in the evening.",
    "It was late in the evening when the travelers reached the village. The inn was full, but the baker offered "
    "them a room above the shop.",
    "The quarterly report shows steady growth in every region. Revenue rose by eight percent, costs fell slightly, "
    "and the number of active customers reached a new record.",
)


def load_corpus(path: Path | None) -> list[str]:
    """The utterances in `path`, or the built-in corpus when `path` is None."""
    if path is None:
        return list(BUILTIN_CORPUS)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read corpus {path}: {exc}") from exc
    texts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not texts:
        raise ConfigError(f"corpus {path} has no utterances")
    return texts
