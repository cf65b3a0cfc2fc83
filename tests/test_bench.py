"""The engine benchmark in smoke mode on the tiny config: it runs, reports, and stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_engine
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_engine_smoke(tmp_path, capsys):
    out = tmp_path / "engine.json"
    assert bench_engine.main(["--config", "tiny", "--smoke", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert set(rep["cases"]) == {"single_2s", "batch_4_mixed"}
    for case in rep["cases"].values():
        for side in ("ours", "transformers"):
            assert case[side]["median_s"] > 0 and case[side]["audio_s_per_s"] > 0
        assert case["speedup"] > 0
    # Same weights, fp32, one clip alone: our logits match transformers'.
    assert rep["cases"]["single_2s"]["max_abs_diff"] < 1e-4
    assert rep["environment"]["torch"] and rep["environment"]["transformers"]
    md = out.with_suffix(".md").read_text()
    assert "| single_2s |" in md and "speedup" in md
    assert "| batch_4_mixed |" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_memory_child_reports_peak_rss(tmp_path):
    """One side in a fresh process, as --memory runs it; our side needs no server packages."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "tiny", "tiny")
    code = (
        "import sys, runpy; sys.argv = sys.argv[1:]; "
        "runpy.run_path('benchmarks/bench_engine.py', run_name='__main__')"
    )
    argv = ["bench_engine.py", "--memory-child", "ours", "--checkpoint", str(ckpt)]
    argv += ["--cases", "batch_4_mixed", "--smoke"]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["peak_rss_mib"] >= result["rss_after_load_mib"] > 50
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    assert "torch" in imported  # the -X importtime listing was read
    # The GPU box has torch + transformers only: the engine path must not pull the server in.
    for package in ("fastapi", "starlette", "uvicorn", "soundfile", "transformers"):
        assert package not in imported, f"{package} imported by the engine benchmark's side"


@pytest.mark.slow
def test_bench_stream_sweep_smoke(checkpoints, tmp_path, capsys):
    """The streaming sweep (no server part) on a tiny checkpoint: every geometry reports
    error rates against the offline transcript and the text."""
    require_tool("espeak-ng")
    from benchmarks import bench_stream

    out = tmp_path / "stream.json"
    args = ["--model", str(checkpoints("ctc-group")), "--skip-server", "--out", str(out)]
    assert bench_stream.main(args) == 0
    rep = json.loads(out.read_text())
    rows = rep["sweep"]["rows"]
    assert [(r["chunk"], r["left"], r["lookahead"]) for r in rows] == bench_stream.GRID
    for r in rows:
        assert r["compute_x"] == (r["left"] + r["chunk"] + r["lookahead"]) / r["chunk"]
        assert r["cer_vs_offline"] >= 0 and r["cer"] >= 0 and r["cpu_rtf"] > 0
    assert rep["seconds"] > 20 and len(rep["reference"].split()) > 40
    assert "| **1** | **4** | **0.5** |" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_rtfx_smoke_on_cpu(tmp_path):
    """The leaderboard-method benchmark on a tiny config: both sides transcribe every clip."""
    from benchmarks import bench_rtfx

    out = tmp_path / "rtfx.json"
    argv = ["--config", "tiny", "--device", "cpu", "--smoke", "--out", str(out)]
    assert bench_rtfx.main(argv) == 0
    rep = json.loads(out.read_text())
    assert rep["clips"] == 6 and rep["audio_seconds"] > 6
    assert set(rep["sides"]) == {"ours_float32", "transformers_float32"}
    for side in rep["sides"].values():
        assert side["rtfx"] > 0 and len(side["wall_s"]) == 1
    assert rep["sides"]["transformers_float32"]["vs_transformers"] == 1.0
    assert "| ours_float32 |" in out.with_suffix(".md").read_text()


def test_rtfx_lengths_look_like_librispeech():
    from benchmarks import bench_rtfx

    seconds = bench_rtfx.lengths(bench_rtfx.LIBRISPEECH_CLIPS)
    assert seconds == bench_rtfx.lengths(bench_rtfx.LIBRISPEECH_CLIPS)  # seeded
    assert min(seconds) >= 1.3 and max(seconds) <= 35.0
    assert 4.5 < float(np.median(seconds)) < 7.5 and 5.0 * 3600 < sum(seconds) < 6.0 * 3600


def test_run_all_cuda_includes_rtfx():
    script = (ROOT / "benchmarks" / "run_all.sh").read_text()
    cuda = script.split('if [ "$DEVICE" = cuda ]; then')[1].split("else")[0]
    assert "benchmarks/bench_rtfx.py --device cuda" in cuda


@pytest.mark.slow
def test_bench_stream_reuse_smoke(tmp_path):
    """Streams with and without front-end reuse on a tiny layer-norm model: same finals,
    less compute (the front end is most of a tiny model's forward)."""
    from benchmarks import bench_stream_reuse

    out = tmp_path / "reuse"
    argv = ["--config", "tiny", "--seconds", "12", "--repeats", "1", "--skip-demo"]
    assert bench_stream_reuse.main([*argv, "--out", str(out)]) == 0
    (row,) = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert row["finals_equal"] and row["rtf_reuse"] < row["rtf_full"]
    assert "| random tiny |" in out.with_suffix(".md").read_text()
