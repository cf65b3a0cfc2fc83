"""service/align on the embedded demo model: espeak-ng speech synthesised word by word with
known silences between words, aligned with its text; word boundaries against the known ones."""

from __future__ import annotations

from pathlib import Path

import pytest

import service
from benchmarks import bench_align
from service.wav2vec2.loading import LoadedModel, load_model
from tests.conftest import require_tool

MODEL_DIR = Path(service.__file__).parent / "models" / "demo-ctc"
# Measured with the committed weights (benchmarks/bench_align.py, 8 sentences, 104 boundaries):
# mean 82 ms, p90 140 ms. Ends are right (mean 50 ms, bias -6 ms); starts are late (mean 113
# ms, always late): the model keeps emitting blank for the first 4-7 frames of a word and
# spikes its first letter at the end of the first phoneme, so no path can start earlier.
MAX_MEAN_S = 0.10
MAX_P90_S = 0.18
TARGET_MEAN_S = 0.060  # issue 17


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
def test_word_boundaries_are_near_the_known_ones(matching: dict) -> None:
    assert matching["boundaries"] == 2 * sum(len(t.split()) for t, *_ in bench_align.SPOKEN)
    assert matching["mean_s"] < MAX_MEAN_S, matching
    assert matching["p90_s"] < MAX_P90_S, matching
    assert abs(matching["end_bias_s"]) < 0.03, matching


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="demo-ctc's word starts are ~110 ms late (mean 82 ms)")
def test_word_boundaries_meet_the_issue_target(matching: dict) -> None:
    assert matching["mean_s"] < TARGET_MEAN_S, matching


@pytest.mark.slow
def test_star_helps_when_the_text_lacks_a_spoken_word(demo: LoadedModel, spoken: list) -> None:
    """Measured: mean 99 ms without the star, 93 ms with it (one middle word dropped)."""
    plain = bench_align.boundary_errors(demo, spoken, drop=True)
    star = bench_align.boundary_errors(demo, spoken, drop=True, star=True)
    assert star["mean_s"] < plain["mean_s"], (plain, star)
