"""`python -m service predict --task align`: transcripts from --text, --text-file or --pairs,
one JSON line per input in input order, errors per input, bad flags refused (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service import cli
from service.audio import encode_wav
from tests.conftest import require_tool

SENTENCES = ["hello world", "the weather is nice today"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """espeak-ng speech of each sentence as a WAV file."""
    require_tool("espeak-ng")
    from training.data import espeak

    root = tmp_path_factory.mktemp("align-clips")
    paths = []
    for i, text in enumerate(SENTENCES):
        path = root / f"clip{i}.wav"
        path.write_bytes(encode_wav(espeak(text, "en-us", "", 150, 50), 16_000))
        paths.append(path)
    return paths


def run(capsys, *args: str) -> tuple[int, list[dict]]:
    code = cli.main(["predict", "--no-progress", "--task", "align", *args])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def check(line: dict, text: str) -> None:
    assert line["task"] == "align" and line["model"] == "demo-ctc"
    assert line["text"] == text.upper()
    assert " ".join(w["word"] for w in line["words"]) == line["text"]
    flat = [t for w in line["words"] for t in (w["start"], w["end"])]
    assert flat == sorted(flat) and flat[0] >= 0 and flat[-1] <= line["duration"]
    assert all(w["score"] <= 0 for w in line["words"])


@pytest.mark.slow  # the demo model, twice
def test_text_for_every_file_and_char_granularity(clips, capsys):
    code, lines = run(capsys, "--text", "hello world", *map(str, clips[:1] * 2))
    assert code == 0 and [line["file"] for line in lines] == [str(clips[0])] * 2
    check(lines[0], "hello world")
    assert lines[0] == lines[1] and "chars" not in lines[0]
    code, (line,) = run(capsys, "--text", "hello world", "--granularity", "char", str(clips[0]))
    assert "words" not in line and "".join(c["char"] for c in line["chars"]) == "HELLOWORLD"


@pytest.mark.slow  # the demo model
def test_one_text_file_per_file_in_order(clips, tmp_path, capsys):
    texts = []
    for i, sentence in enumerate(SENTENCES):
        texts.append(tmp_path / f"t{i}.txt")
        texts[-1].write_text(sentence + "\n")
    missing = tmp_path / "missing.txt"
    flags = [x for t in [*texts, missing] for x in ("--text-file", str(t))]
    code, lines = run(capsys, *flags, *map(str, [*clips, clips[0]]))
    assert code == 1 and [line["file"] for line in lines] == list(map(str, [*clips, clips[0]]))
    for line, sentence in zip(lines, SENTENCES):
        check(line, sentence)
    assert lines[2]["error"]["code"] == "unreadable_file"


@pytest.mark.slow  # the demo model
def test_pairs_relative_to_their_file_with_errors_in_place(clips, tmp_path, capsys):
    pairs = clips[0].parent / "pairs.jsonl"
    rows = [
        {"audio": clips[1].name, "text": SENTENCES[1]},
        {"audio": "missing.wav", "text": "hello"},
        {"audio": str(clips[0]), "text": SENTENCES[0]},  # absolute paths stay as they are
        {"audio": clips[0].name, "text": "hello world " * 40},  # more letters than frames
        {"audio": clips[0].name, "text": "  "},
    ]
    pairs.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" +
                     "\n".join(json.dumps(r) for r in rows[2:]) + "\n")  # fmt: skip
    code, lines = run(capsys, "--pairs", str(pairs), "--granularity", "both")
    assert code == 1 and [line["file"] for line in lines] == [r["audio"] for r in rows]
    check(lines[0], SENTENCES[1])
    check(lines[2], SENTENCES[0])
    assert lines[0]["chars"] and lines[2]["chars"]
    codes = [line.get("error", {}).get("code") for line in lines]
    assert codes == [None, "unreadable_file", None, "alignment_impossible", "empty_text"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["a.wav"], "needs --text, --text-file or --pairs"),
        (["--text-file", "t.txt", "a.wav", "b.wav"], "1 --text-file for 2 FILEs"),
        (["--pairs", "p.jsonl", "a.wav"], "not both"),
        (["--text", "hi"], "no input files"),
    ],
)
def test_flags_that_do_not_fit_exit_2(args, message, capsys):
    assert cli.main(["predict", "--no-progress", "--task", "align", *args]) == 2
    assert message in capsys.readouterr().err


def test_text_needs_task_align(capsys):
    assert cli.main(["predict", "--text", "hi", "a.wav"]) == 2
    assert "go with --task align" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, message",
    [("{not json\n", "line 1: not JSON"), ('\n{"audio": 3, "text": "a"}\n', "line 2: expected"),
     ("\n", "has no pairs")],
)  # fmt: skip
def test_malformed_pairs_exit_2_naming_the_line(content, message, tmp_path, capsys):
    pairs = tmp_path / "p.jsonl"
    pairs.write_text(content)
    assert cli.main(["predict", "--task", "align", "--pairs", str(pairs)]) == 2
    assert message in capsys.readouterr().err


def test_a_model_without_a_ctc_head_cannot_align(checkpoints, tmp_path, capsys):
    model = str(checkpoints("classify-weighted"))
    code = cli.main(["predict", "--task", "align", "--model", model, "--text", "hi", "a.wav"])
    assert code == 2 and "alignment needs a CTC" in capsys.readouterr().err
