"""service/align/viterbi.py and trellis.py: the path is the optimum over every valid CTC path
(brute force, wildcards and star included), and checkpointing changes nothing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from service.align.text import WILDCARD, AlignVocab, normalise
from service.align.trellis import build, emissions, star_column, wild_column
from service.align.viterbi import best_path
from service.wav2vec2.tokenizer import CTCTokenizer

BLANK, DELIM = 0, 1
TOKENIZER = CTCTokenizer({"<pad>": 0, "|": 1, "A": 2, "B": 3, "C": 4, "D": 5})
V = 6
STAR = "star"  # a brute-force symbol: a frame of speech the text lacks


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def target(text: str) -> tuple[list[int], set[int]]:
    """Token ids with delimiters between words, and the gaps (token positions) at a word
    boundary: where a star frame may go. Written out here, apart from trellis.build."""
    words = normalise(text, AlignVocab.from_tokenizer(TOKENIZER, V))
    ids: list[int] = []
    gaps = {0}
    for w, word in enumerate(words):
        if w:
            gaps.add(len(ids))
            ids.append(DELIM)
            gaps.add(len(ids))
        ids.extend(t.id for t in word.tokens)
    gaps.add(len(ids))
    return ids, gaps


def valid(seq: tuple, ids: list[int], gaps: set[int]) -> bool:
    """CTC: merge repeats, drop blanks (and star frames, only allowed in boundary gaps)."""
    out: list = []
    prev = None
    for sym in seq:
        if sym in (BLANK, STAR):
            if sym == STAR and len(out) not in gaps:
                return False
        elif sym != prev:
            out.append(sym)
        prev = sym
    return out == ids


def frame_score(lp: np.ndarray, t: int, sym, penalty: float) -> float:
    if sym == STAR:
        return float(lp[t].max() - penalty)
    if sym == WILDCARD:
        return float(np.delete(lp[t], BLANK).max())
    return float(lp[t, sym])


def brute_force(
    lp: np.ndarray, ids: list[int], gaps: set[int], star: bool, penalty: float
) -> float:
    alphabet = sorted({BLANK, *ids}) + ([STAR] if star else [])
    best = -np.inf
    for seq in itertools.product(alphabet, repeat=len(lp)):
        if valid(seq, ids, gaps):
            best = max(best, sum(frame_score(lp, t, s, penalty) for t, s in enumerate(seq)))
    return best


def as_symbols(path: np.ndarray, labels: np.ndarray, lp: np.ndarray, penalty: float) -> tuple:
    """The brute-force symbols of a Viterbi path: a star column frame is STAR where it won."""
    syms = []
    for t, s in enumerate(path):
        col = int(labels[s])
        if col == wild_column(V):
            syms.append(WILDCARD)
        elif col == star_column(V):
            syms.append(STAR if lp[t].max() - penalty > lp[t, BLANK] else BLANK)
        else:
            syms.append(col)
    return tuple(syms)


CASES = [  # (text, frames, star)
    ("A", 1, False),
    ("A", 5, False),
    ("AA", 3, False),
    ("AA", 6, False),
    ("AB", 5, False),
    ("A B", 6, False),
    ("AB BA", 6, False),
    ("A1", 5, False),  # WILDCARD after a token
    ("1", 6, False),
    ("1 2", 6, False),  # two wildcards, a delimiter between
    ("A.B", 6, False),
    ("A", 6, True),
    ("AB", 6, True),
    ("A A", 6, True),
    ("A 1", 6, True),
    ("AB C", 7, True),
]


@pytest.mark.parametrize(("text", "frames", "star"), CASES)
def test_path_is_the_optimum_of_all_valid_paths(text: str, frames: int, star: bool) -> None:
    penalty = 0.5  # small, so that random emissions do use the star
    ids, gaps = target(text)
    for seed in range(4):
        logits = np.random.default_rng(seed).normal(scale=3, size=(frames, V))
        lp = log_softmax(logits)
        trellis = build(
            normalise(text, AlignVocab.from_tokenizer(TOKENIZER, V)), BLANK, DELIM, V, star=star
        )
        scores = emissions(logits.astype(np.float32), BLANK, penalty)
        path = best_path(scores, trellis.labels, trellis.skip)
        syms = as_symbols(path, trellis.labels, lp, penalty)
        assert valid(syms, ids, gaps), (syms, ids)
        ours = sum(frame_score(lp, t, s, penalty) for t, s in enumerate(syms))
        assert ours == pytest.approx(brute_force(lp, ids, gaps, star, penalty), abs=1e-4)


def test_star_is_used_when_cheap_and_never_inside_a_word() -> None:
    """Brute-force cases above only prove optimality; check the star cases do exercise it."""
    ids, gaps = target("AB C")
    used = 0
    for seed in range(20):
        logits = np.random.default_rng(seed).normal(scale=3, size=(9, V))
        trellis = build(
            normalise("AB C", AlignVocab.from_tokenizer(TOKENIZER, V)), BLANK, DELIM, V, star=True
        )
        path = best_path(
            emissions(logits.astype(np.float32), BLANK, 0.5), trellis.labels, trellis.skip
        )
        syms = as_symbols(path, trellis.labels, log_softmax(logits), 0.5)
        assert valid(syms, ids, gaps)
        used += STAR in syms
    assert used > 0


def full_table_path(scores: np.ndarray, labels: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """The textbook Viterbi: a (T, S) table of scores and back-pointers, same tie rules."""
    frames, states = len(scores), len(labels)
    alpha = np.full((frames, states), -np.inf)
    back = np.zeros((frames, states), np.int64)
    alpha[0, :2] = scores[0, labels[:2]]
    for t in range(1, frames):
        for s in range(states):
            options = [(alpha[t - 1, s], 0)]
            if s >= 1:
                options.append((alpha[t - 1, s - 1], 1))
            if s >= 2 and skip[s]:
                options.append((alpha[t - 1, s - 2], 2))
            value, step = options[0]
            for v, k in options[1:]:
                if v > value:
                    value, step = v, k
            alpha[t, s] = value + scores[t, labels[s]]
            back[t, s] = step
    path = np.empty(frames, np.int64)
    s = states - 1 if alpha[-1, -1] >= alpha[-1, -2] else states - 2
    for t in range(frames - 1, -1, -1):
        path[t] = s
        s -= back[t, s]
    return path


@pytest.mark.parametrize("star", [False, True])
@pytest.mark.parametrize("spare", [0, 3, 200])  # frames beyond the fewest the text needs
def test_checkpointed_path_equals_the_full_table(star: bool, spare: int) -> None:
    rng = np.random.default_rng(7)
    words = ["".join(rng.choice(list("ABCD1"), size=rng.integers(1, 5))) for _ in range(12)]
    text = " ".join(words)
    trellis = build(
        normalise(text, AlignVocab.from_tokenizer(TOKENIZER, V)), BLANK, DELIM, V, star=star
    )
    frames = trellis.needed_frames + spare
    logits = rng.normal(scale=4, size=(frames, V)).astype(np.float32)
    scores = emissions(logits, BLANK, 2.0)
    expected = full_table_path(scores, trellis.labels, trellis.skip)
    for block in (1, 2, 7, 64, frames - 1, frames, frames + 5, None):
        got = best_path(scores, trellis.labels, trellis.skip, block=block)
        np.testing.assert_array_equal(got, expected, err_msg=f"block={block}")


def test_tightest_fit_uses_one_frame_per_token_and_a_blank_per_repeat() -> None:
    trellis = build(
        normalise("AAB", AlignVocab.from_tokenizer(TOKENIZER, V)), BLANK, DELIM, V, star=False
    )
    assert trellis.needed_frames == 4
    scores = emissions(np.zeros((4, V), np.float32), BLANK, 5.0)
    path = best_path(scores, trellis.labels, trellis.skip, block=2)
    np.testing.assert_array_equal(path, [1, 2, 3, 5])  # A, blank, A, B
