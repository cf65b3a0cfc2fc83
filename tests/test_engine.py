"""Engine.plan / Engine.finish: long clips cut into windows and stitched back frame-exactly."""

from __future__ import annotations

import numpy as np
import pytest

from service.engine import Engine
from service.schemas import Options
from service.wav2vec2.loading import load_model
from service.windows import Window
from tests.checkpoints import speech_like


@pytest.fixture(scope="module")
def engines(checkpoints):
    """task -> Engine with 4 s windows and 1 s strides, so short clips already need several."""
    variants = {"transcribe": "ctc-group", "frames": "frames-weighted", "classify": "xvector"}
    out = {}
    for task, variant in variants.items():
        loaded = load_model(str(checkpoints(variant)), device="cpu")
        out[task] = Engine(loaded, chunk_seconds=4, stride_seconds=1)
    return out


LENGTHS = [400, 16_000, 63_999, 64_000, 64_001, 64_320, 100_000, 111_111, 16_000 * 21 + 7]


def signal(kind: str, n: int) -> np.ndarray:
    """n samples of speech-like noise, or of silence (one long pause: cuts in pauses)."""
    if kind == "silence":
        return np.zeros(n, np.float32)
    return speech_like(n / 16_000 + 1, seed=n)[:n]


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("kind", ["speech", "silence"])
@pytest.mark.parametrize("task", ["transcribe", "frames"])
def test_frame_windows_cover_every_frame_once(engines, task, kind, n):
    """Each window's kept frames, labelled by their clip frame, stitch to 0..num_frames-1."""
    engine = engines[task]
    config = engine.loaded.config
    plan = engine.plan(signal(kind, n))
    assert plan[0].start == 0 and plan[-1].end == n
    assert all(w.end - w.start <= engine.chunk for w in plan)
    assert all(w.start % engine.step == 0 for w in plan)  # windows on the clip's frame grid
    pieces = []
    for w in plan:
        first = w.start // engine.step
        frames = np.arange(first, first + config.num_frames(w.end - w.start))
        pieces.append(frames[w.keep_from : w.keep_to])
    stitched = np.concatenate(pieces)
    np.testing.assert_array_equal(stitched, np.arange(config.num_frames(n)))


def test_pooled_windows_partition_the_clip(engines):
    engine = engines["classify"]
    for n in LENGTHS:
        plan = engine.plan(signal("speech", n))
        assert [w.start for w in plan[1:]] == [w.end for w in plan[:-1]]
        assert plan[0].start == 0 and plan[-1].end == n
        assert all(w.end - w.start <= engine.chunk for w in plan)


def test_long_clip_transcript_has_clip_times(engines):
    """Words of a 10 s clip cut into 4 s windows: times from the file start, increasing."""
    engine = engines["transcribe"]
    samples = speech_like(10.0, seed=3)
    assert len(engine.plan(samples)) > 2
    prediction = engine.predict(samples, 10.0)
    assert prediction.words is not None
    ends = [0.0] + [w.end for w in prediction.words]
    for word, prev_end in zip(prediction.words, ends):
        assert prev_end <= word.start < word.end <= 10.0 + 1e-6
    # Repeated delimiters make double spaces in the text (as transformers decodes), not words.
    assert prediction.text.split() == [w.word for w in prediction.words]


def test_frame_predictions_stitch_to_the_full_length(engines):
    engine = engines["frames"]
    samples = speech_like(9.3, seed=4)
    windows = engine.plan(samples)
    outputs = engine.run_batch([samples[w.start : w.end] for w in windows])
    frames = np.concatenate([o[w.keep_from : w.keep_to] for w, o in zip(windows, outputs)])
    assert len(frames) == engine.loaded.config.num_frames(len(samples))
    prediction = engine.finish(windows, outputs, 9.3)
    assert all(0 <= s.start < s.end <= 9.3 + 1e-6 for s in prediction.segments or [])


def test_a_cut_in_a_pause_is_a_word_boundary(engines):
    """Each side of a pause cut ends its speech in silence with no delimiter: the stitched
    frames get one at the cut, unless a delimiter already stands next to it."""
    engine = engines["transcribe"]
    tokenizer = engine.tokenizer()
    vocab = {t: i for i, t in tokenizer.id_to_token.items()}
    blank = vocab[tokenizer.pad_token]
    letters = [t for t in vocab if len(t) == 1 and t.isalpha()][:2]

    def frames(tokens: list[str | None]) -> np.ndarray:
        ids = [blank if t is None else vocab[t] for t in tokens]
        out = np.zeros((len(ids), len(vocab)), np.float32)
        out[np.arange(len(ids)), ids] = 5.0
        return out

    a, b = letters
    said = [a, None, None, None, None, b]  # a pause between a and b, cut at frame 3
    windows = [Window(0, 3 * engine.step, 0, 3, pause=True), Window(0, 6 * engine.step, 3)]
    text, _ = engine.transcript(engine.pauses_between_words(windows, frames(said), None), Options())
    assert text == f"{a} {b}"
    fixed = [Window(0, 3 * engine.step, 0, 3), Window(0, 6 * engine.step, 3)]  # not a pause
    text, _ = engine.transcript(engine.pauses_between_words(fixed, frames(said), None), Options())
    assert text == f"{a}{b}"
    written = [a, "|", None, None, None, b]  # the model wrote one: no second
    text, _ = engine.transcript(
        engine.pauses_between_words(windows, frames(written), None), Options()
    )
    assert text == f"{a} {b}"
    alone = [None, None, None, None, None, b]  # nothing before the pause: nothing to divide
    assert engine.pauses_between_words(windows, frames(alone), None).argmax(-1)[3] == blank
