"""service/windows.py: long clips cut in their pauses, frame-exactly, and where speech runs on."""

from __future__ import annotations

import numpy as np
import pytest

from service.windows import frame_windows, pauses

RATE, STEP = 16_000, 320
CHUNK, STRIDE = 6 * RATE, RATE  # the demo model's 6 s windows, 1 s of context each side


def num_frames(n: int) -> int:
    """Frames of a wav2vec2 feature encoder (400-sample receptive field, 320-sample step)."""
    return max(0, (n - 400) // STEP + 1)


def talk(parts: list[tuple[str, float]], seed: int = 0, snr_db: float | None = None) -> np.ndarray:
    """("speech" | "pause", seconds) in order: speech is noise under a syllable-rate envelope
    (dipping for 0.1 s stop closures), a pause is silence; optional noise over everything."""
    rng = np.random.default_rng(seed)
    out = []
    for kind, seconds in parts:
        n = int(seconds * RATE)
        if kind == "pause":
            out.append(np.zeros(n, np.float32))
            continue
        t = np.arange(n) / RATE
        envelope = 0.3 + 0.7 * np.abs(np.sin(2 * np.pi * 2.5 * t))
        closures = (t % 0.7) > 0.6  # a 0.1 s stop closure every 0.7 s
        envelope[closures] = 0.02
        out.append((rng.standard_normal(n) * 0.1 * envelope).astype(np.float32))
    x = np.concatenate(out)
    if snr_db is not None:
        speech = float(np.sqrt(np.mean(x[x != 0] ** 2)))
        x = x + rng.standard_normal(len(x)).astype(np.float32) * speech / 10 ** (snr_db / 20)
    return x


def sentences(count: int, seed: int = 0, snr_db: float | None = None):
    """count sentences of 1.5-3.5 s joined by 0.4-1.5 s pauses; the pauses' sample spans too."""
    rng = np.random.default_rng(seed)
    parts: list[tuple[str, float]] = [("pause", 0.5)]
    for i in range(count):
        if i:
            parts.append(("pause", float(rng.uniform(0.4, 1.5))))
        parts.append(("speech", float(rng.uniform(1.5, 3.5))))
    parts.append(("pause", 0.5))
    spans, pos = [], 0
    for kind, seconds in parts:
        n = int(seconds * RATE)
        if kind == "pause":
            spans.append((pos, pos + n))
        pos += n
    return talk(parts, seed, snr_db), spans


def kept(windows) -> np.ndarray:
    """Each window's kept frames, labelled by their clip frame, stitched in order."""
    pieces = []
    for w in windows:
        first = w.start // STEP
        pieces.append(
            np.arange(first, first + num_frames(w.end - w.start))[w.keep_from : w.keep_to]
        )
    return np.concatenate(pieces)


@pytest.mark.parametrize("snr_db", [None, 20.0])
def test_pauses_are_found_and_stop_closures_are_not(snr_db):
    x, spans = sentences(6, seed=1, snr_db=snr_db)
    found = pauses(x, STEP, min_frames=15)
    assert len(found) == len(spans)
    for (a, b), (s, e) in zip(found, spans):  # within a frame or two of the true silence
        assert abs(a * STEP - s) <= 2 * STEP and abs(b * STEP - e) <= 2 * STEP


def test_silence_and_steady_noise_are_one_pause_each():
    assert pauses(np.zeros(3 * RATE, np.float32), STEP, 15) == [(0, 150)]
    noise = np.random.default_rng(0).standard_normal(3 * RATE).astype(np.float32)
    assert pauses(noise, STEP, 15) in ([], [(0, 150)])  # no speech to tell it from: either way
    assert pauses(np.zeros(100, np.float32), STEP, 15) == []


@pytest.mark.parametrize("snr_db", [None, 20.0])
def test_a_long_clip_is_cut_in_the_last_pause_each_window_reaches(snr_db):
    x, spans = sentences(30, seed=2, snr_db=snr_db)
    windows = frame_windows(x, CHUNK, STRIDE, STEP, RATE)
    np.testing.assert_array_equal(kept(windows), np.arange(num_frames(len(x))))
    assert all(w.end - w.start <= CHUNK for w in windows)

    def in_pause(sample: int) -> bool:  # speech may end in a 0.1 s closure, quiet as a pause
        slack = int(0.1 * RATE) + 2 * STEP
        return any(s - slack <= sample <= e + slack for s, e in spans)

    for w in windows:  # every edge, and every cut, inside a pause: no sentence is split
        first = w.start // STEP
        assert in_pause(w.start) and in_pause(w.end)
        if w.keep_to is not None:
            assert in_pause((first + w.keep_to) * STEP)
    # The last pause each window reaches: none could have reached the middle of the next one.
    assert all(w.pause for w in windows[:-1])
    for w in windows[:-1]:
        cut = w.cut(STEP) * STEP  # type: ignore[operator]
        later = [(s + e) // 2 for s, e in spans if s > cut]
        assert later and later[0] + STEP - w.start > CHUNK - STEP


def test_speech_without_pauses_is_cut_with_stride_context_on_each_side():
    x = talk([("speech", 20.0)], seed=3)
    windows = frame_windows(x, CHUNK, STRIDE, STEP, RATE)
    starts = list(range(0, len(x) - CHUNK, CHUNK - 2 * STRIDE))
    assert [w.start for w in windows] == [*starts, starts[-1] + CHUNK - 2 * STRIDE]
    assert all(w.keep_from == STRIDE // STEP for w in windows[1:])
    assert all(w.keep_to == (CHUNK - STRIDE) // STEP and not w.pause for w in windows[:-1])
    np.testing.assert_array_equal(kept(windows), np.arange(num_frames(len(x))))


@pytest.mark.parametrize("seed", range(40))
def test_any_clip_is_covered_once_in_order(seed):
    """Random mixes of speech, pauses of every length and silence, over many lengths."""
    rng = np.random.default_rng(seed)
    parts = [
        (str(rng.choice(["speech", "pause"])), float(rng.choice([0.05, 0.3, 0.31, 0.6, 2, 7])))
        for _ in range(int(rng.integers(1, 12)))
    ]
    x = talk(parts, seed, snr_db=None if seed % 2 else 15.0)
    x = x[: len(x) - int(rng.integers(0, STEP))]
    windows = frame_windows(x, CHUNK, STRIDE, STEP, RATE)
    assert windows[0].start == 0 and windows[-1].end == len(x)
    assert all(w.end - w.start <= CHUNK and w.start % STEP == 0 for w in windows)
    np.testing.assert_array_equal(kept(windows), np.arange(num_frames(len(x))))


def test_a_clip_that_fits_is_one_window_and_long_edge_silence_is_cut_off_speech():
    x = talk([("pause", 0.5), ("speech", 2.0), ("pause", 0.8), ("speech", 2.0), ("pause", 0.5)])
    assert len(x) <= CHUNK and len(frame_windows(x, CHUNK, STRIDE, STEP, RATE)) == 1
    # 4 s of silence either side: no window reaches the pause, yet no cut falls in speech.
    x = talk([("pause", 4.0), ("speech", 3.0), ("pause", 0.6), ("speech", 2.0), ("pause", 4.0)])
    windows = frame_windows(x, CHUNK, STRIDE, STEP, RATE)
    cuts = [w.cut(STEP) * STEP / RATE for w in windows[:-1]]  # type: ignore[operator]
    assert len(cuts) == 3 and cuts[0] < 4.0 and 7.0 < cuts[1] < 7.6 and cuts[2] > 9.6
    np.testing.assert_array_equal(kept(windows), np.arange(num_frames(len(x))))
