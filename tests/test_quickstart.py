"""The README's quick start on the embedded demo model, as a new user runs it: `serve` with no
--model on a real uvicorn, then the README's curl on an example; and unseen espeak-ng sentences
through `predict` (no --model) and the REST endpoint, scored by CER."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import soundfile as sf

from tests.conftest import free_port, require_tool, wait_ready
from tests.test_demo_model import MAX_CER, SPOKEN_COMMANDS, UNSEEN, command_clip, espeak
from training.text import edit_distance

# A real server on the demo models, the README's curl and the CLI.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 120
# As on a fresh machine: no W2V_ settings from the shell running the tests.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("W2V_")}


def corpus_cer(refs: list[str], hyps: list[str]) -> float:
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / sum(len(r) for r in refs)


@pytest.fixture(scope="module")
def unseen_wavs(tmp_path_factory) -> list[tuple[Path, str]]:
    require_tool("espeak-ng")
    root = tmp_path_factory.mktemp("unseen")
    out = []
    for k, (text, *voice) in enumerate(UNSEEN):
        path = root / f"unseen-{k}.wav"
        sf.write(path, espeak(text, *voice), 16_000, subtype="PCM_16")
        out.append((path, text.upper()))
    return out


@pytest.fixture(scope="module")
def quickstart_server(tmp_path_factory) -> Iterator[str]:
    """`python -m service serve` exactly as the README starts it (no --model), on loopback."""
    port = free_port()
    log = tmp_path_factory.mktemp("quickstart") / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=CLEAN_ENV,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, proc, log, STARTUP_TIMEOUT)
            yield base
        finally:
            proc.terminate()
            assert proc.wait(timeout=60) == 0, log.read_text()


def test_readme_curl_transcribes_hello_world(quickstart_server):
    curl = require_tool("curl")
    readme = (ROOT / "README.md").read_text()
    command = "curl -s -F file=@examples/hello_world.wav http://127.0.0.1:8000/v1/transcribe"
    assert command in readme  # the test runs what the README says, on this test's port
    out = subprocess.run(
        [curl, "-s", "-F", "file=@examples/hello_world.wav", quickstart_server + "/v1/transcribe"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    body = json.loads(out)
    assert body["model"] == "demo-ctc" and body["task"] == "transcribe"
    # The README's answer (the demo model decodes with its LM by default; since round 10 greedy
    # alone says it right too); two words, timed inside the clip.
    assert body["text"] == "HELLO WORLD", body["text"]
    assert [w["word"] for w in body["words"]] == body["text"].split()
    assert len(body["words"]) == 2
    assert 0 <= body["words"][0]["start"] < body["words"][1]["start"] < body["duration"]


def test_unseen_sentences_over_rest_and_predict_agree(quickstart_server, unseen_wavs):
    refs = [text for _, text in unseen_wavs]
    rest = []
    for path, _ in unseen_wavs:
        r = httpx.post(
            quickstart_server + "/v1/transcribe",
            files={"file": (path.name, path.read_bytes(), "audio/wav")},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        rest.append(r.json()["text"])
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "predict",
            "--no-progress",
            *[str(p) for p, _ in unseen_wavs],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=CLEAN_ENV,
    )
    assert cli.returncode == 0, cli.stderr
    predicted = [json.loads(line)["text"] for line in cli.stdout.splitlines()]
    assert predicted == rest  # one engine behind both doors
    cer = corpus_cer(refs, rest)
    assert cer < MAX_CER, list(zip(refs, rest))


def test_classify_has_a_real_default(quickstart_server, tmp_path):
    """No --model serves the command classifier beside the CTC model: /v1/classify and
    `predict --task classify` both name the spoken command."""
    require_tool("espeak-ng")
    models = httpx.get(quickstart_server + "/v1/models", timeout=10).json()["data"]
    assert {(m["id"], m["task"]) for m in models} == {
        ("demo-ctc", "transcribe"),
        ("demo-commands", "classify"),
        ("demo-speakers", "embed"),
        ("demo-vad", "frames"),
    }
    paths, words = [], []
    for k, (word, *voice) in enumerate(SPOKEN_COMMANDS):
        path = tmp_path / f"command-{k}.wav"
        sf.write(path, command_clip(word, *voice), 16_000, subtype="PCM_16")
        paths.append(path)
        words.append(word)
    rest = []
    for path in paths:
        r = httpx.post(
            quickstart_server + "/v1/classify",
            files={"file": path.open("rb")},
            data={"top_k": "3"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "demo-commands" and len(body["labels"]) == 3
        rest.append(body["labels"][0]["label"])
    assert rest == words
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "predict",
            "--no-progress",
            "--task",
            "classify",
            *map(str, paths),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=CLEAN_ENV,
    )
    assert cli.returncode == 0, cli.stderr
    assert [json.loads(line)["labels"][0]["label"] for line in cli.stdout.splitlines()] == words


def test_embed_verify_and_frames_have_real_defaults(quickstart_server):
    """No --model also serves demo-speakers and demo-vad: the README's examples answer as shown."""
    ex = ROOT / "examples"

    def post(path, **files):
        r = httpx.post(
            quickstart_server + path,
            timeout=60,
            files={k: (v.name, v.read_bytes()) for k, v in files.items()},
        )
        assert r.status_code == 200, r.text
        return r.json()

    body = post("/v1/embed", file=ex / "voice_a1.wav")
    assert body["model"] == "demo-speakers" and len(body["embedding"]) == 128
    same = post("/v1/verify", file1=ex / "voice_a1.wav", file2=ex / "voice_a2.wav")
    other = post("/v1/verify", file1=ex / "voice_a1.wav", file2=ex / "voice_b.wav")
    assert same["same_speaker"] and not other["same_speaker"]
    # The threshold is demo-speakers' own (config.json), chosen on its training voices.
    config = json.loads((ROOT / "service/models/demo-speakers/config.json").read_text())
    assert same["threshold"] == other["threshold"] == config["verify_threshold"]
    frames = post("/v1/frames", file=ex / "speech_and_noise.wav")
    assert frames["model"] == "demo-vad"
    segments = frames["segments"]
    speech = [s for s in segments if s["label"] == "speech" and s["end"] - s["start"] > 0.3]
    # The two sentences of the example: 0.5-1.69 s and 3.49-4.33 s.
    assert len(speech) == 2
    assert abs(speech[0]["start"] - 0.5) < 0.15 and abs(speech[1]["end"] - 4.33) < 0.15
