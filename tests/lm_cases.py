"""Shared material for the tests/test_lm_*.py files: a hand-written ARPA model and logits that
spell chosen tokens, over the tiny test vocabulary (tests/checkpoints.VOCAB)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from service.wav2vec2.tokenizer import CTCTokenizer
from tests.checkpoints import VOCAB

# Every probability is picked so the hand computations in test_lm_arpa.py stay readable.
ARPA = """\
\\data\\
ngram 1=6
ngram 2=3
ngram 3=1

\\1-grams:
-1.0\t</s>
-99\t<s>\t-0.5
-2.0\t<unk>
-0.7\tHAT\t-0.3
-0.9\tTHE\t-0.2
-1.2\tSEA\t-0.1

\\2-grams:
-0.2\t<s> THE\t-0.25
-0.4\tTHE HAT\t-0.15
-0.3\tHAT </s>

\\3-grams:
-0.05\t<s> THE HAT

\\end\\
"""

BLANK = VOCAB["<pad>"]
SPACE = VOCAB["|"]
SPECIALS = [VOCAB["<s>"], VOCAB["</s>"], VOCAB["<unk>"]]


def tokenizer() -> CTCTokenizer:
    return CTCTokenizer(VOCAB)


def alphabet_labels() -> list[str]:
    """alphabet.json labels for VOCAB, written as pyctcdecode writes them."""
    names = {"<pad>": "", "|": " ", "<unk>": "⁇"}
    return [names.get(t, t) for t, _ in sorted(VOCAB.items(), key=lambda kv: kv[1])]


def write_decoder(path: Path, arpa: str = ARPA, unigrams: list[str] | None = None, **attrs) -> Path:
    """A checkpoint-like directory in Wav2Vec2ProcessorWithLM's decoder layout."""
    lm_dir = path / "language_model"
    lm_dir.mkdir(parents=True, exist_ok=True)
    (path / "alphabet.json").write_text(json.dumps({"labels": alphabet_labels(), "is_bpe": False}))
    params = {"alpha": 0.5, "beta": 1.5, "unk_score_offset": -10.0, "score_boundary": True}
    (lm_dir / "attrs.json").write_text(json.dumps({**params, **attrs}))
    words = ["HAT", "THE", "SEA"] if unigrams is None else unigrams
    (lm_dir / "unigrams.txt").write_text("".join(w + "\n" for w in words))
    (lm_dir / "lm.arpa").write_text(arpa)
    return path


def spell(frames: list[dict[str, float]]) -> np.ndarray:
    """(T, V) logits: each frame gives the named tokens these probabilities, the rest 1e-4."""
    logits = np.full((len(frames), len(VOCAB)), np.log(1e-4))
    for t, probs in enumerate(frames):
        for token, p in probs.items():
            logits[t, VOCAB[token]] = np.log(p)
    return logits


def sure(tokens: str) -> list[dict[str, float]]:
    """Frames that spell tokens one per frame ('_' blank, ' ' the delimiter), near certainly."""
    names = {"_": "<pad>", " ": "|"}
    return [{names.get(c, c): 0.99} for c in tokens]


def random_logits(rng: np.random.Generator, frames: int, scale: float = 3.0) -> np.ndarray:
    """Random logits where special tokens are never likely (the beam never spells them)."""
    logits = rng.normal(size=(frames, len(VOCAB))) * scale
    logits[:, SPECIALS] -= 100.0
    return logits
