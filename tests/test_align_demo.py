"""service/align on the embedded demo model: espeak-ng speech synthesised word by word with
known silences between words, aligned with its text; word boundaries against the known ones."""

from __future__ import annotations

from pathlib import Path

import pytest

import service
from benchmarks import bench_align
from service.align import align
from service.wav2vec2.loading import LoadedModel, load_model
from tests.conftest import require_tool

MODEL_DIR = Path(service.__file__).parent / "models" / "demo-ctc"
# Measured with the committed weights (benchmarks/bench_align.py, 8 sentences, 104 boundaries):
# mean 51 ms, p90 91 ms with the onset refinement (service/align/onsets.py, calibrated on other
# sentences); the path alone: mean 82 ms, p90 140 ms, its starts always late (mean 113 ms): the
# model keeps emitting blank for the first 4-7 frames of a word. Ends: mean 50 ms, bias -6 ms.
MAX_P90_S = 0.12
TARGET_MEAN_S = 0.060  # issue 17
PATH_MAX_MEAN_S = 0.10


@pytest.fixture(scope="module")
def demo() -> LoadedModel:
    require_tool("espeak-ng")
    return load_model(str(MODEL_DIR), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def spoken(demo: LoadedModel) -> list:
    return bench_align.synthesised(demo)


@pytest.fixture(scope="module")
def matching(demo: LoadedModel, spoken: list) -> dict:
    return bench_align.boundary_errors(demo, spoken)


@pytest.mark.slow
def test_word_boundaries_meet_the_issue_target(matching: dict) -> None:
    assert matching["boundaries"] == 2 * sum(len(t.split()) for t, *_ in bench_align.SPOKEN)
    assert matching["mean_s"] < TARGET_MEAN_S, matching
    assert matching["p90_s"] < MAX_P90_S, matching
    assert abs(matching["end_bias_s"]) < 0.03, matching
    assert abs(matching["start_bias_s"]) < 0.05, matching


@pytest.mark.slow
def test_onsets_improve_on_the_paths_late_starts(demo: LoadedModel, spoken: list) -> None:
    path = bench_align.boundary_errors(demo, spoken, onset_log_prob=None)
    assert path["mean_s"] < PATH_MAX_MEAN_S, path
    assert path["start_bias_s"] > 0.08, path  # the late starts the refinement is for
    refined = bench_align.boundary_errors(demo, spoken)
    assert refined["start_mean_s"] < path["start_mean_s"], (path, refined)
    assert refined["end_mean_s"] == path["end_mean_s"], (path, refined)


@pytest.mark.slow
def test_star_absorbs_a_spoken_word_the_text_lacks(demo: LoadedModel, spoken: list) -> None:
    """Text "we will meet the station tomorrow" for speech that also says "at" before "the":
    without the star, THE starts right where the untranscribed AT ends, ~0.6 s before its own
    speech; with it, THE starts at its own speech. (Averaged over all eight sentences with their
    middle word dropped the star is a wash on the round-4 weights: mean 86 ms without, 93 ms
    with; in one other sentence it takes the wrong word. This sentence is the case the star
    exists for.)"""
    words, logits, bounds = next(case for case in spoken if case[0][:3] == ["we", "will", "meet"])
    at = words.index("at")
    text = " ".join(words[:at] + words[at + 1 :])
    fs = demo.frame_seconds
    the_start = {
        star: align(logits, text, demo.tokenizer, star=star).words[at].start * fs
        for star in (False, True)
    }
    known = bounds[at + 1][0]
    assert the_start[False] < known - 0.3, (the_start, known)
    assert abs(the_start[True] - known) < 0.2, (the_start, known)  # starts run ~0.11 s late


def test_the_onset_threshold_was_calibrated_on_other_sentences() -> None:
    """ONSET_LOG_PROB comes from bench_align's calibration section: none of its sentences may
    be one the boundary tests above score."""
    calibration = {text for text, *_ in bench_align.calibration_cases()}
    assert len(calibration) == bench_align.CALIBRATION_SENTENCES
    assert not calibration & {text for text, *_ in bench_align.SPOKEN}
