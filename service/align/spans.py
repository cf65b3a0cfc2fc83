"""A frame path through the trellis -> token and word spans with their scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.align.text import TextWord
from service.align.trellis import Trellis


@dataclass(frozen=True)
class AlignedWord:
    """A word and its frames: start = first frame, end = one past the last frame (as
    CTCTokenizer word offsets); score = mean log-probability of its frames on the path."""

    word: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class AlignedChar:
    """A token of a word (a WILDCARD's run of characters is one), `word` its index."""

    char: str
    start: int
    end: int
    score: float
    word: int


@dataclass(frozen=True)
class Alignment:
    text: str  # the normalised text: the words joined by single spaces
    words: list[AlignedWord]
    chars: list[AlignedChar]
    frames: int


def spans(
    path: np.ndarray, frame_scores: np.ndarray, trellis: Trellis, words: list[TextWord]
) -> Alignment:
    """Token i holds the frames where the (non-decreasing) path is in state 2 i + 1."""
    token_states = 2 * np.arange(len(trellis.tokens)) + 1
    starts = np.searchsorted(path, token_states, side="left")
    ends = np.searchsorted(path, token_states, side="right")
    total = np.concatenate([[0.0], np.cumsum(frame_scores, dtype=np.float64)])

    def mean(start: int, end: int) -> float:
        return float((total[end] - total[start]) / (end - start))

    chars = [
        AlignedChar(
            trellis.tokens[i].text, int(starts[i]), int(ends[i]), mean(starts[i], ends[i]), int(w)
        )
        for i, w in enumerate(trellis.word_of_token)
        if w >= 0
    ]
    in_words = np.flatnonzero(trellis.word_of_token >= 0)  # tokens, delimiters left out
    owner = trellis.word_of_token[in_words]  # non-decreasing word index
    numbers = np.arange(len(words))
    firsts = in_words[np.searchsorted(owner, numbers, side="left")]
    lasts = in_words[np.searchsorted(owner, numbers, side="right") - 1]
    aligned = [
        AlignedWord(word.text, int(starts[f]), int(ends[k]), mean(starts[f], ends[k]))
        for word, f, k in zip(words, firsts, lasts)
    ]
    return Alignment(" ".join(w.text for w in words), aligned, chars, len(path))
