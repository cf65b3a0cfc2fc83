"""`python -m service predict`: one JSON line per file, errors per file, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from service import cli
from service.audio import decode_audio, encode_wav
from service.engine import Engine
from service.wav2vec2.loading import load_model
from tests.api.test_decoding import HEARD, LM_TEXT, SAID, greedy_text, misheard
from tests.checkpoints import speech_like


def run_predict(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service", "predict", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "good.wav"
    good.write_bytes(encode_wav(speech_like(1.5), 16_000))
    stereo = tmp_path / "stereo44k.flac"
    sf.write(stereo, np.stack([speech_like(1.2, 1, 44_100)] * 2, axis=1), 44_100)
    bad = {
        "empty.wav": b"",
        "not-audio.wav": b"this is a text file, not audio\n" * 10,
        "truncated.wav": encode_wav(speech_like(1.0), 16_000)[:30],
        "short.wav": encode_wav(speech_like(0.01), 16_000),
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    nan = tmp_path / "nan.wav"
    samples = speech_like(1.0)
    samples[100] = np.nan
    sf.write(nan, samples, 16_000, subtype="FLOAT")
    return good, stereo, [tmp_path / n for n in bad] + [nan]


@pytest.mark.slow  # a `python -m service` process: torch imports take seconds
def test_bad_files_get_an_error_line_each_and_the_rest_succeed(checkpoints, files):
    good, stereo, bad = files
    paths = [str(good), *map(str, bad), str(stereo)]
    result = run_predict("--model", str(checkpoints("ctc-group")), *paths)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == paths  # input order
    assert "text" in lines[0] and "text" in lines[-1]
    codes = [line["error"]["code"] for line in lines[1:-1]]
    assert codes == [
        "empty_audio",
        "unsupported_media_type",
        "undecodable_audio",
        "audio_too_short",
        "non_finite_audio",
    ]
    assert lines[-1]["duration"] == pytest.approx(1.2, abs=1e-3)


@pytest.mark.slow  # a `python -m service` process: torch imports take seconds
def test_task_auto_env_model_and_output_file(checkpoints, files, tmp_path):
    good, _, _ = files
    out = tmp_path / "results.jsonl"
    env = {"W2V_MODEL": f"speaker={checkpoints('xvector')}"}
    result = run_predict(str(good), "--output", str(out), env=env)
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["model"] == "speaker" and line["task"] == "embed"
    assert len(line["embedding"]) == 20


@pytest.mark.slow  # a `python -m service` process: torch imports take seconds
def test_classify_top_k(checkpoints, files):
    good, _, _ = files
    result = run_predict(
        "--model", str(checkpoints("classify-weighted")), "--top-k", "2", str(good)
    )
    (line,) = [json.loads(x) for x in result.stdout.splitlines()]
    assert [label["label"] for label in line["labels"]][:2] and len(line["labels"]) == 2
    assert line["labels"][0]["score"] >= line["labels"][1]["score"]


@pytest.mark.slow  # a `python -m service` process: torch imports take seconds
def test_unloadable_model_is_one_clear_line(tmp_path, files):
    good, _, _ = files
    result = run_predict("--model", str(tmp_path), str(good))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "no config.json" in result.stderr


def test_predict_in_process_batches_windows_and_keeps_input_order(checkpoints, tmp_path, capsys):
    """Clips of several windows, in groups of 2 and forward passes of similar lengths: each
    line equals the file run alone, in input order, with the unreadable file in its place."""
    ckpt = str(checkpoints("ctc-group"))
    paths = []
    for i, seconds in enumerate([9.0, 1.0, 5.5, 2.0]):
        path = tmp_path / f"clip{i}.wav"
        path.write_bytes(encode_wav(speech_like(seconds, seed=i), 16_000))
        paths.append(str(path))
    paths.insert(2, str(tmp_path / "missing.wav"))
    flags = ["--model", ckpt, "--max-batch-size", "2", "--chunk-seconds", "4"]
    code = cli.main(["predict", "--no-progress", *flags, "--stride-seconds", "1", *paths])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1 and [line["file"] for line in lines] == paths
    assert lines[2]["error"]["code"] == "unreadable_file"
    engine = Engine(load_model(ckpt, device="cpu"), chunk_seconds=4, stride_seconds=1)
    for path, line in zip(paths, lines):
        if "error" in line:
            continue
        data = Path(path).read_bytes()
        audio = decode_audio(data, 16_000, max_seconds=60, min_samples=400)
        alone = engine.predict(audio.samples, audio.duration)
        assert line == {"file": path, **alone.model_dump(exclude_none=True)}


DEMO_LM = Path(__file__).parents[1] / "service" / "models" / "demo-ctc" / "language_model"
HELLO = str(Path(__file__).parents[1] / "examples" / "hello_world.wav")
HEARD_CLIP = str(Path(__file__).parents[1] / "examples" / f"{HEARD}.wav")


@pytest.mark.skipif(not DEMO_LM.is_dir(), reason="the demo model with its LM is not here")
def test_decoding_flags(capsys):
    """No flag: the demo model's beam+LM; --decoder greedy: the argmax text; --hotwords keeps
    the word as greedy heard it, which the LM alone corrects."""
    heard = misheard(HEARD)
    texts = []
    for clip, flags in (
        (HELLO, []),
        (HELLO, ["--decoder", "greedy"]),
        (HEARD_CLIP, ["--beam-width", "16", "--hotwords", heard]),
    ):
        assert cli.main(["predict", "--no-progress", "--device", "cpu", clip, *flags]) == 0
        texts.append(json.loads(capsys.readouterr().out)["text"])
    assert texts[:2] == [LM_TEXT["hello_world"], greedy_text("hello_world")]
    assert heard in texts[2].split() and heard not in SAID[HEARD].split()


@pytest.mark.parametrize(
    "flags",
    [["--beam-width", "0"], ["--alpha", "x"], ["--hotwords", "y" * 101], ["--decoder", "lm"]],
)
def test_bad_decoding_flags_exit_2_before_loading(flags, capsys):
    try:  # files first: --hotwords takes every word after it
        code = cli.main(["predict", HELLO, "--model", "/nonexistent/model", *flags])
    except SystemExit as exc:  # argparse's own refusal (--decoder choices)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "/nonexistent" not in err  # refused before loading
