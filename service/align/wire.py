"""An Alignment in frames -> a Prediction's text, words and chars in seconds."""

from __future__ import annotations

from typing import Any

from service.align.spans import Alignment
from service.decode import seconds
from service.schemas import Granularity, ScoredChar, ScoredWord


def fields(alignment: Alignment, frame_seconds: float, granularity: Granularity) -> dict[str, Any]:
    """`text`, and `words` and/or `chars` as `granularity` asks, times rounded as greedy words'."""
    out: dict[str, Any] = dict(text=alignment.text)
    if granularity in ("word", "both"):
        out["words"] = [
            ScoredWord(
                word=w.word,
                start=seconds(w.start, frame_seconds),
                end=seconds(w.end, frame_seconds),
                score=w.score,
            )
            for w in alignment.words
        ]
    if granularity in ("char", "both"):
        out["chars"] = [
            ScoredChar(
                char=c.char,
                start=seconds(c.start, frame_seconds),
                end=seconds(c.end, frame_seconds),
                score=c.score,
                word=c.word,
            )
            for c in alignment.chars
        ]
    return out
