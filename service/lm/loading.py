"""Reads a decoder saved in Wav2Vec2ProcessorWithLM's layout:

alphabet.json                 {"labels": [...], "is_bpe": false}
language_model/attrs.json     {"alpha", "beta", "unk_score_offset", "score_boundary"}
language_model/unigrams.txt   one known word per line (may be empty)
language_model/<name>.arpa    the n-gram model (a KenLM .bin only with the `kenlm` extra)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from service.errors import ModelError
from service.lm.arpa import read_arpa
from service.lm.kenlm_binary import read_kenlm_binary
from service.lm.language_model import DEFAULT_SCORE_BOUNDARY, LanguageModel, LMParams

LM_DIR = "language_model"


@dataclass(frozen=True)
class Decoder:
    """What a checkpoint ships for beam search: its alphabet and (maybe) its language model."""

    alphabet: list[str]
    lm: LanguageModel | None


def has_decoder(path: Path) -> bool:
    """Whether a checkpoint directory ships a beam-search decoder."""
    return (path / "alphabet.json").is_file()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def load_decoder(path: Path) -> Decoder:
    """The decoder in a checkpoint directory; its language model if language_model/ exists."""
    alphabet = _read_json(path / "alphabet.json")
    if not isinstance(alphabet, dict) or not isinstance(alphabet.get("labels"), list):
        raise ModelError(f"{path / 'alphabet.json'} needs a 'labels' list")
    if alphabet.get("is_bpe", False):
        raise ModelError(f"{path / 'alphabet.json'}: BPE alphabets are not supported")
    lm_dir = path / LM_DIR
    lm = load_language_model(lm_dir) if lm_dir.is_dir() else None
    return Decoder([str(label) for label in alphabet["labels"]], lm)


def load_language_model(lm_dir: Path) -> LanguageModel:
    attrs = _read_json(lm_dir / "attrs.json")
    names = {f.name for f in fields(LMParams)}
    if not isinstance(attrs, dict) or set(attrs) - names:
        raise ModelError(f"{lm_dir / 'attrs.json'} may hold only {sorted(names)}")
    numbers = {k: v for k, v in attrs.items() if k != "score_boundary"}
    boundary = attrs.get("score_boundary", DEFAULT_SCORE_BOUNDARY)
    if not all(isinstance(v, (int, float)) for v in numbers.values()) or not isinstance(
        boundary, bool
    ):
        raise ModelError(f"{lm_dir / 'attrs.json'}: numbers and a true/false score_boundary")
    params = LMParams(score_boundary=boundary, **{k: float(v) for k, v in numbers.items()})
    unigrams_file = lm_dir / "unigrams.txt"
    unigrams = (
        frozenset(unigrams_file.read_text(encoding="utf-8").split())
        if unigrams_file.is_file()
        else None
    )
    models = sorted(p for p in lm_dir.iterdir() if p.suffix in (".arpa", ".bin", ".binary"))
    if len(models) != 1:
        raise ModelError(f"{lm_dir} needs exactly one .arpa (or .bin) file, found {len(models)}")
    model = models[0]
    ngram = read_arpa(model) if model.suffix == ".arpa" else read_kenlm_binary(model)
    return LanguageModel(ngram, unigrams, params)
