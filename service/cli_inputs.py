"""`predict`'s inputs: audio files and, for --task align, where each one's transcript is."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from service.errors import ServiceError


@dataclass(frozen=True)
class Input:
    """One input: its audio and, for --task align, where its transcript is."""

    name: str  # as given: the output line's "file"
    audio: Path
    text: str | None = None
    text_file: Path | None = None

    def transcript(self) -> str:
        if self.text_file is None:
            assert self.text is not None  # predict_inputs gives every align input one or the other
            return self.text
        data = read_file(self.text_file)
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ServiceError(
                f"{self.text_file} is not UTF-8 text", code="invalid_field", status=422
            ) from None


def predict_inputs(args: argparse.Namespace) -> list[Input]:
    """The inputs in order, from FILEs (with --text / --text-file) or --pairs."""
    given = args.text is not None or args.text_file or args.pairs
    if given and args.task != "align":
        raise ServiceError("--text, --text-file and --pairs go with --task align")
    if args.task == "align" and not given:
        raise ServiceError("--task align needs --text, --text-file or --pairs")
    if args.pairs:
        if args.files:
            raise ServiceError("give the audio files in --pairs or as FILEs, not both")
        return _pairs(args.pairs)
    if not args.files:
        raise ServiceError("no input files")
    if args.text_file and len(args.text_file) != len(args.files):
        raise ServiceError(
            f"{len(args.text_file)} --text-file for {len(args.files)} FILEs: give one per FILE"
        )
    text_files = args.text_file or [None] * len(args.files)
    return [Input(f, Path(f), args.text, t) for f, t in zip(args.files, text_files)]


def _pairs(path: Path) -> list[Input]:
    """--pairs: one {"audio": path, "text": transcript} object a line (blank lines skipped)."""
    try:
        lines = read_file(path).decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise ServiceError(f"{path} is not UTF-8 text") from None
    inputs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            pair = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ServiceError(f"{path} line {number}: not JSON ({exc.msg})") from None
        if not (
            isinstance(pair, dict)
            and isinstance(pair.get("audio"), str)
            and isinstance(pair.get("text"), str)
        ):
            raise ServiceError(f'{path} line {number}: expected {{"audio": path, "text": str}}')
        inputs.append(Input(pair["audio"], path.parent / pair["audio"], pair["text"]))
    if not inputs:
        raise ServiceError(f"{path} has no pairs")
    return inputs


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServiceError(
            f"cannot read {path}: {exc.strerror}", code="unreadable_file", status=400
        ) from None
