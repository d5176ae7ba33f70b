"""Speech recognition round trips for the quality gate: what a listener (pocketsphinx's English model) hears, and
the word error rate against the text. pocketsphinx is a benchmark and test dependency, imported on first use."""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING

import numpy as np
import soxr

if TYPE_CHECKING:
    from pocketsphinx import Decoder

_ASR_RATE_HZ = 16_000
_WORD = re.compile(r"[a-z0-9']+")
_decoder: Decoder | None = None
_decoder_lock = threading.Lock()


def transcribe(samples: np.ndarray, sample_rate: int) -> str:
    """The words pocketsphinx hears in `samples` (lower case; empty when it hears none)."""
    global _decoder
    audio = soxr.resample(np.asarray(samples, np.float32), sample_rate, _ASR_RATE_HZ)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    with _decoder_lock:
        if _decoder is None:
            from pocketsphinx import Decoder

            _decoder = Decoder(samprate=_ASR_RATE_HZ, loglevel="FATAL")
        _decoder.start_utt()
        _decoder.process_raw(pcm, full_utt=True)
        _decoder.end_utt()
        hypothesis = _decoder.hyp()
    return "" if hypothesis is None else hypothesis.hypstr


def words(text: str) -> list[str]:
    """`text` as the words a transcript is compared in: lower case, punctuation dropped."""
    return _WORD.findall(text.lower().replace("’", "'"))


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Word errors (substitutions, insertions, deletions) over all references' words, pooled over the pairs."""
    errors = sum(_edit_distance(words(ref), words(hyp)) for ref, hyp in zip(references, hypotheses, strict=True))
    return errors / max(1, sum(len(words(ref)) for ref in references))


def _edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    row = list(range(len(hypothesis) + 1))
    for i, word in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, heard in enumerate(hypothesis, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != heard))
    return row[-1]
