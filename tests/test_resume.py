"""A stream's windows reuse its front-end frames (service/wav2vec2/resume.py).

Streams of the same audio through tiny random checkpoints, once with each window computing
its whole front end and once reusing the frames earlier windows computed: the finals must be
the same, every window's logits equal up to the conv library's algorithm choice, and the
front end must see a fraction of the samples. Checkpoints that normalise each window, group-
norm their first conv or run int8 must not reuse.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from service.runtime import ServedModel
from service.settings import Settings
from service.streaming import Stream, windowing_for
from service.wav2vec2.loading import LoadedModel, load_model
from service.wav2vec2.resume import FrontEndCache
from tests.checkpoints import speech_like

# Layer-norm front ends: Wav2Vec2's, Data2Vec's under an adapter (a model frame is 4
# front-end frames, so the cache is indexed by front-end frame), HuBERT's without the
# projection's layer norm.
LOCAL = [
    "ctc-layer-stable-bias-bin",
    "data2vec-ctc-add-adapter",
    "hubert-ctc-stable-bias-noprojnorm",
]


def without_normalize(path: Path) -> Path:
    """The checkpoint with do_normalize false: each window's samples as they are."""
    f = path / "preprocessor_config.json"
    raw = json.loads(f.read_text())
    f.write_text(json.dumps({**raw, "do_normalize": False}))
    return path


@pytest.fixture
def local(checkpoints, tmp_path, request) -> Path:
    import shutil

    return without_normalize(Path(shutil.copytree(checkpoints(request.param), tmp_path / "ckpt")))


async def stream_through(loaded: LoadedModel, x: np.ndarray, reuse: bool):
    """(finals, every window's logits, samples the first conv saw)."""
    w = windowing_for(
        loaded, chunk=1.0, left=4.0, lookahead=0.5, pause=0.5, max_segment=20.0, parallel=4
    )
    cache = FrontEndCache()
    logits: list[np.ndarray] = []

    async def infer(window: np.ndarray, start: int) -> np.ndarray:
        (out,) = loaded.forward([window], resume=[(start, cache) if reuse else None])
        logits.append(out)
        return out

    seen = [0]
    first_conv = loaded.model.backbone.feature_extractor.layers[0].conv

    def count(_module, args) -> None:
        seen[0] += args[0].numel()

    # frontend.in_pieces calls the first conv module on each piece of samples.
    hook = first_conv.register_forward_pre_hook(count)
    try:
        assert loaded.tokenizer is not None
        stream = Stream(w, loaded.tokenizer, loaded.frame_seconds, infer, interim=False)
        finals = []
        for i in range(0, len(x), 1600):  # 100 ms frames
            stream.feed(x[i : i + 1600])
            finals += [m.text for m in await stream.advance() if m.type == "final"]
        finals += [m.text for m in await stream.finish() if m.type == "final"]
    finally:
        hook.remove()
    return finals, logits, seen[0]


@pytest.mark.parametrize("local", LOCAL, indirect=True)
def test_reused_frames_leave_the_finals_unchanged(local):
    loaded = load_model(str(local), device="cpu", dtype="float32")
    assert loaded.front_end_reusable
    x = speech_like(23.0, seed=3) * 0.3
    finals, logits, seen = asyncio.run(stream_through(loaded, x, reuse=False))
    finals_r, logits_r, seen_r = asyncio.run(stream_through(loaded, x, reuse=True))
    assert finals_r == finals and any(finals)
    assert len(logits_r) == len(logits) > 10
    for a, b in zip(logits, logits_r):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * max(1.0, np.abs(a).max()))
    # Windows of 5.5 s for 1 s chunks: about 5.5x the audio through the front end, against
    # a little over 1x with reuse (each window's new second, plus the receptive field).
    assert seen >= 4.5 * len(x) and seen_r <= 1.3 * len(x), (seen, seen_r, len(x))


@pytest.mark.parametrize("local", LOCAL[:1], indirect=True)
def test_a_window_not_in_the_cache_computes_all_its_frames(local):
    """A jump (a window starting past the cached frames) recomputes, and is then cached."""
    loaded = load_model(str(local), device="cpu", dtype="float32")
    step = loaded.config.samples_per_frame
    x = speech_like(8.0, seed=1)
    cache = FrontEndCache()
    (a,) = loaded.forward([x[: 3 * 16000]], resume=[(0, cache)])
    assert cache.start == 0 and cache.frames is not None and len(cache.frames) == len(a)
    later = 200 * step  # past the 3 s window's 149 frames
    (b,) = loaded.forward([x[later:]], resume=[(later, cache)])
    (alone,) = loaded.forward([x[later:]])
    np.testing.assert_allclose(b, alone, rtol=0, atol=1e-5)
    assert cache.start == 200


@pytest.mark.parametrize("local", LOCAL[:1], indirect=True)
def test_a_window_shorter_than_the_cache_takes_only_its_frames(local):
    """Windows of one stream may run out of order (a round's windows share the queue): a
    window inside what the cache holds gets exactly its own frames."""
    loaded = load_model(str(local), device="cpu", dtype="float32")
    step = loaded.config.samples_per_frame
    x = speech_like(8.0, seed=4)
    cache = FrontEndCache()
    loaded.forward([x], resume=[(0, cache)])  # the cache now holds all 8 s
    start = 50 * step
    for end in (start + 16000, start + 16000 + 7 * step):
        (inside,) = loaded.forward([x[start:end]], resume=[(start, cache)])
        (alone,) = loaded.forward([x[start:end]])
        assert inside.shape == alone.shape
        np.testing.assert_allclose(inside, alone, rtol=0, atol=1e-4 * np.abs(alone).max())


def test_only_local_unnormalised_float_front_ends_reuse(checkpoints, tmp_path):
    import shutil

    layer = checkpoints("ctc-layer-stable-bias-bin")
    assert not load_model(str(layer), device="cpu").front_end_reusable  # do_normalize true
    unnormalised = without_normalize(Path(shutil.copytree(layer, tmp_path / "layer")))
    assert load_model(str(unnormalised), device="cpu").front_end_reusable
    assert not load_model(str(unnormalised), device="cpu", dtype="int8").front_end_reusable
    group = without_normalize(Path(shutil.copytree(checkpoints("ctc-group"), tmp_path / "g")))
    assert not load_model(str(group), device="cpu").front_end_reusable


@pytest.mark.parametrize("local", LOCAL[:1], indirect=True)
def test_the_served_stream_reuses_its_front_end(local, monkeypatch):
    """Through ServedModel.open_stream and the batcher: the windows carry the stream's cache."""
    served = ServedModel(load_model(str(local), device="cpu"), Settings())
    seen: list[tuple[int, FrontEndCache] | None] = []
    run = served._engine.run_batch

    def spy(clips, languages=(), resume=()):
        seen.extend(resume)
        return run(clips, languages, resume)

    monkeypatch.setattr(served._engine, "run_batch", spy)
    x = (speech_like(7.0, seed=2) * 0.3 * 32767).astype("<i2").tobytes()

    async def go() -> None:
        served.start()
        try:
            live = served.open_stream("pcm_s16le", 16000, interim=False)
            for i in range(0, len(x), 3200):
                await live.feed(x[i : i + 3200])
            await live.finish()
        finally:
            await served.stop(drain_timeout=5.0)

    asyncio.run(go())
    assert seen and all(r is not None for r in seen)
    caches = {id(r[1]) for r in seen if r is not None}
    assert len(caches) == 1  # one stream, one cache
    starts = [r[0] for r in seen if r is not None]
    assert starts == sorted(starts) and starts[-1] > 0
    last = seen[-1]
    assert last is not None and torch.is_tensor(last[1].frames)
