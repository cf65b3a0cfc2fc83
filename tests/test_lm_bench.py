"""benchmarks/bench_lm.py on a two-utterance corpus: it runs and reports every section."""

from __future__ import annotations

import io
import json
import subprocess

import numpy as np
import pytest
import soundfile as sf
import soxr

from benchmarks import bench_lm
from tests.conftest import require_tool
from training.data import HELDOUT_SETS


def write_split(path, texts):
    clips = []
    for text in texts:
        wav = subprocess.run(["espeak-ng", "--stdout", text], capture_output=True, check=True)
        x, rate = sf.read(io.BytesIO(wav.stdout), dtype="float32")
        clips.append((soxr.resample(x, rate, 16_000) * 32767).astype(np.int16))
    offsets = np.cumsum([0] + [len(c) for c in clips])
    np.save(path.with_suffix(".npy"), np.concatenate(clips))
    meta = [
        {"text": t, "offset": int(o), "length": len(c)} for t, o, c in zip(texts, offsets, clips)
    ]
    path.with_suffix(".json").write_text(json.dumps({"utterances": meta}))


@pytest.mark.slow
def test_bench_lm_smoke(tmp_path):
    require_tool("espeak-ng")
    for kind in HELDOUT_SETS:
        write_split(tmp_path / f"heldout-{kind}", ["hello world", "the weather is nice today"])
    out = tmp_path / "lm.json"
    assert (
        bench_lm.main(["--data", str(tmp_path), "--n", "2", "--speed-n", "6", "--out", str(out)])
        == 0
    )
    rep = json.loads(out.read_text())
    assert set(rep["accuracy"]) == set(HELDOUT_SETS)
    natural = rep["accuracy"]["natural"]
    assert natural["n"] == 2 and natural["beam+lm"]["wer"] <= natural["greedy"]["wer"]
    assert set(rep["speed"]) == {str(w) for w in bench_lm.WIDTHS}
    assert all(row["ours_s_per_audio_s"] > 0 for row in rep["speed"].values())
    assert 0 < rep["ten_seconds"]["beam_share_of_total"] < 1
