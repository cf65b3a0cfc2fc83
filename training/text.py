"""The demo model's character vocabulary, greedy CTC decoding and error rates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# <pad> (0) is the CTC blank and "|" the word delimiter, as in facebook/wav2vec2-base-960h.
VOCAB = ("<pad>", "<s>", "</s>", "<unk>", "|", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ", "'")
BLANK, DELIMITER, UNK = 0, VOCAB.index("|"), VOCAB.index("<unk>")
_IDS = {t: i for i, t in enumerate(VOCAB)}


def encode(text: str) -> list[int]:
    """'hello world' -> ids of H E L L O | W O R L D."""
    return [_IDS.get(c, UNK) if c != " " else DELIMITER for c in " ".join(text.upper().split())]


def ids_to_text(ids: Sequence[int]) -> str:
    """Collapsed CTC ids (no repeats, no blanks) -> text with spaces between words."""
    text = "".join(" " if i == DELIMITER else VOCAB[i] for i in ids if i > UNK or i == DELIMITER)
    return " ".join(text.split())


def greedy(logits: Tensor) -> str:
    """One clip's (T, vocab) logits -> text: best path, repeats collapsed, blanks removed."""
    best = logits.argmax(dim=-1)
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[1:] = best[1:] != best[:-1]
    return ids_to_text([int(i) for i in best[keep] if i != BLANK])


def edit_distance(a: Sequence[object], b: Sequence[object]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def error_rates(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """Corpus CER and WER: total edits over total reference characters / words."""
    refs = [" ".join(r.upper().split()) for r in refs]
    chars = sum(edit_distance(r, h) for r, h in zip(refs, hyps))
    words = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps))
    return {
        "cer": chars / max(1, sum(len(r) for r in refs)),
        "wer": words / max(1, sum(len(r.split()) for r in refs)),
    }
