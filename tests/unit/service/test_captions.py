from __future__ import annotations

import io
import itertools

import pytest
import srt
import webvtt

from voxserve.service.captions import caption_cues, render
from voxserve.service.timestamps import WordTiming

TEXT = "It was late when they reached the village. The inn was full, so the baker offered them a room --> upstairs."


def timed_words(text: str, pause_after: dict[str, float] | None = None) -> list[WordTiming]:
    """Each word 0.3 s long, 0.05 s apart, plus any pause after the words named."""
    words, cursor, start = [], 0.0, 0
    for token in text.split():
        start = text.index(token, start)
        word = token.strip(".,")
        words.append(WordTiming(word, round(cursor, 3), round(cursor + 0.3, 3), start, start + len(word)))
        cursor += 0.35 + (pause_after or {}).get(word, 0.0)
        start += len(token)
    return words


def test_cues_keep_to_the_length_break_at_sentences_and_pauses_and_cover_the_audio() -> None:
    words = timed_words(TEXT, pause_after={"full": 0.5})
    cues = caption_cues(TEXT, words, audio_s=9.0, max_chars=30)
    texts = [cue.text for cue in cues]
    assert all(len(text) <= 30 for text in texts)
    assert texts[1].endswith("village.")  # a sentence end closes its cue
    assert texts[2] == "The inn was full,"  # so does a pause
    assert " ".join(texts).split() == TEXT.split()  # every word once, in order, with its punctuation
    assert cues[0].start == words[0].start
    assert cues[-1].end == 9.0
    for before, after in itertools.pairwise(cues):
        assert before.end == after.start


def test_srt_and_webvtt_parse_with_real_parsers_and_escape_what_they_must() -> None:
    cues = caption_cues(TEXT, timed_words(TEXT), audio_s=8.0, max_chars=42)
    parsed_srt = list(srt.parse(render(cues, "srt")))
    assert [item.content for item in parsed_srt] == [cue.text.replace("-->", "->") for cue in cues]
    assert parsed_srt[-1].end.total_seconds() == pytest.approx(8.0)
    parsed_vtt = webvtt.from_buffer(io.StringIO(render(cues, "vtt")))
    assert [caption.text for caption in parsed_vtt] == [cue.text.replace("-->", "--&gt;") for cue in cues]
    assert [caption.start for caption in parsed_vtt][:2] == ["00:00:00.000", "00:00:02.800"]  # eight words of 0.35 s
    assert render([], "json") == '{"cues": []}'
