"""Token id -> what the beam search spells: a character, the word break, the blank, or nothing."""

from __future__ import annotations

import re

from service.errors import ModelError
from service.wav2vec2.tokenizer import CTCTokenizer

BLANK = ""
SPACE = " "
# <s>, </s>, <unk>, [PAD]...: never spelled, so they never become (part of) a word.
_SPECIAL = re.compile(r"^[<\[].+[>\]]$")


def labels_for(tokenizer: CTCTokenizer, vocab_size: int) -> list[str | None]:
    """One entry per logit column: BLANK for pad, SPACE for the word delimiter, None for special
    tokens and ids without a token, else the token's text."""
    labels: list[str | None] = []
    for i in range(vocab_size):
        token = tokenizer.id_to_token.get(i)
        if token == tokenizer.pad_token:
            labels.append(BLANK)
        elif token == tokenizer.word_delimiter_token:
            labels.append(SPACE)
        elif token is None or token == tokenizer.unk_token or _SPECIAL.match(token):
            labels.append(None)
        else:
            labels.append(token)
    if BLANK not in labels:
        raise ModelError(f"the vocabulary has no pad token {tokenizer.pad_token!r} (the CTC blank)")
    return labels


def check_alphabet(alphabet: list[str], labels: list[str | None]) -> None:
    """alphabet.json's labels must name the same columns as the tokenizer, as pyctcdecode
    normalises them ('|' -> ' ', pad -> '', <unk> -> '⁇'); special tokens may be written anyhow."""
    if len(alphabet) != len(labels):
        raise ModelError(
            f"alphabet.json has {len(alphabet)} labels but the model has {len(labels)} logits"
        )
    for i, (written, ours) in enumerate(zip(alphabet, labels)):
        normal = {"|": SPACE, "⁇": None}.get(written, written)
        if ours is None or normal is None or _SPECIAL.match(written):
            continue
        if normal != ours and not (ours == BLANK and written in ("<pad>", "[PAD]", "_")):
            raise ModelError(f"alphabet.json label {i} is {written!r}, the tokenizer has {ours!r}")
