"""service/align/wire.py and the Prediction it fills: seconds as greedy words round them, the
spans granularity asks for, and transcription answers exactly as before (no score, no chars)."""

from __future__ import annotations

import pytest

from service.align import AlignedChar, AlignedWord, Alignment
from service.align.wire import fields
from service.schemas import Prediction, ScoredChar, ScoredWord, Word

FRAME = 0.02
ALIGNMENT = Alignment(
    text="HI 1984",
    words=[AlignedWord("HI", 3, 7, -0.25), AlignedWord("1984", 9, 21, -1.5)],
    chars=[
        AlignedChar("H", 3, 5, -0.1, 0),
        AlignedChar("I", 6, 7, -0.4, 0),
        AlignedChar("1984", 9, 21, -1.5, 1),
    ],
    frames=30,
)


@pytest.mark.parametrize(
    "granularity, keys", [("word", {"words"}), ("char", {"chars"}), ("both", {"words", "chars"})]
)
def test_granularity_picks_the_spans(granularity, keys):
    out = fields(ALIGNMENT, FRAME, granularity)
    assert set(out) == {"text", *keys} and out["text"] == "HI 1984"


def test_frames_become_seconds_rounded_to_the_millisecond():
    out = fields(ALIGNMENT, 1 / 3, "both")
    assert out["words"][0] == ScoredWord(word="HI", start=1.0, end=2.333, score=-0.25)
    assert out["chars"][2] == ScoredChar(char="1984", start=3.0, end=7.0, score=-1.5, word=1)


def test_align_and_transcribe_predictions_on_the_wire():
    align = Prediction(model="m", task="align", duration=1.0, **fields(ALIGNMENT, FRAME, "both"))
    body = align.model_dump(exclude_none=True)
    assert body["words"][1] == {"word": "1984", "start": 0.18, "end": 0.42, "score": -1.5}
    assert body["chars"][0] == {"char": "H", "start": 0.06, "end": 0.1, "score": -0.1, "word": 0}
    assert Prediction.model_validate_json(align.model_dump_json()) == align
    words = [Word(word="HI", start=0.06, end=0.14)]
    plain = Prediction(model="m", task="transcribe", duration=1.0, text="HI", words=words)
    assert plain.model_dump(exclude_none=True) == {
        "model": "m",
        "task": "transcribe",
        "duration": 1.0,
        "text": "HI",
        "words": [{"word": "HI", "start": 0.06, "end": 0.14}],
    }
