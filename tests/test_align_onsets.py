"""service/align/onsets.py: word starts moved back over the onset frames the path misses."""

from __future__ import annotations

import numpy as np
import pytest

from service.align import align
from service.align.onsets import ONSET_LOG_PROB, onset_starts
from tests.test_align import UPPER, VOCAB

SILENCE = -15.0  # non-blank log-probability of a frame the blank is sure of
ONSET = -6.0  # blank still wins, but something is being said


def test_a_start_moves_back_over_the_loud_run_before_it_and_no_further() -> None:
    nonblank = np.full(30, SILENCE)
    nonblank[6:10] = ONSET  # onset of the word whose path starts at 10
    nonblank[2] = ONSET  # an isolated blip, cut off from the run by the quiet frame 5
    moved = onset_starts(np.array([10]), np.array([0]), nonblank, ONSET_LOG_PROB, 10)
    assert moved.tolist() == [6]


def test_a_start_never_enters_the_previous_word_nor_moves_past_the_cap() -> None:
    nonblank = np.full(40, ONSET)  # never quiet: only the bounds stop the run
    starts, floors = np.array([0, 12, 35]), np.array([0, 9, 20])
    moved = onset_starts(starts, floors, nonblank, ONSET_LOG_PROB, 10)
    assert moved.tolist() == [0, 9, 25]


def test_a_start_after_a_quiet_frame_stays() -> None:
    nonblank = np.full(20, ONSET)
    nonblank[9] = SILENCE
    moved = onset_starts(np.array([10]), np.array([0]), nonblank, ONSET_LOG_PROB, 10)
    assert moved.tolist() == [10]


def emissions(blank_at_onset: float) -> np.ndarray:
    """Log-probabilities spelling "HI": silence sure of its blank, then 4 onset frames whose
    blank has probability exp(blank_at_onset), H and I spikes, silence again."""
    frames = 20
    lp = np.full((frames, len(VOCAB)), SILENCE - np.log(len(VOCAB) - 1))
    lp[:, 0] = np.log1p(-np.exp(SILENCE))
    lp[6:10, 0] = blank_at_onset
    lp[6:10, 1:] = np.log(-np.expm1(blank_at_onset) / (len(VOCAB) - 1))
    for frame, char in ((10, "H"), (12, "I")):
        lp[frame] = -20.0
        lp[frame, VOCAB[char]] = 0.0
    return lp


@pytest.mark.parametrize(("blank_at_onset", "start"), [(-1e-4, 6), (-1e-6, 10)])
def test_align_starts_words_at_their_onset(blank_at_onset: float, start: int) -> None:
    """p(blank) = 1 - 1e-4 at the onset: non-blank log-probability -9.2, above the threshold;
    1 - 1e-6 (-13.8): silence. The end, the chars' other times and the score stay the path's."""
    lp = emissions(blank_at_onset)
    path = align(lp, "hi", UPPER, onset_log_prob=None)
    moved = align(lp, "hi", UPPER)
    assert (path.words[0].start, path.words[0].end) == (10, 13)
    assert (moved.words[0].start, moved.words[0].end) == (start, 13)
    assert moved.words[0].score == path.words[0].score
    assert [(c.start, c.end) for c in moved.chars] == [(start, 11), (12, 13)]
