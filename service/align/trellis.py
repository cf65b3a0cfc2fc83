"""The CTC state sequence of a transcript and the emission score of every state.

States alternate blank, token, blank, ..., token, blank (S = 2n + 1 for n tokens, the word
delimiter a token between words). A path starts in state 0 or 1, ends in S - 2 or S - 1, and at
each frame stays, moves one state on, or skips a blank between two different tokens: two equal
tokens (two WILDCARDs included) need a blank frame between them, as CTC collapses repeats.

Emission columns: the V vocabulary columns, then WILD_COLUMN(V) = the best non-blank
log-probability of the frame (what a WILDCARD token scores), then STAR_COLUMN(V) = the blank's
log-probability or, where better, the frame's best log-probability minus `star_penalty`.

The star (garbage) token absorbs speech the text lacks. It is not a state of its own: with
`star=True` the blank states at word boundaries (before the first word, either side of each
delimiter, after the last word) score STAR_COLUMN, so they may cover any emission at a cost of
`star_penalty` nats per frame against the frame's best token. It never appears inside a word,
it needs no frame of its own (a path may ignore it), and `frames < tokens + repeats` stays the
exact test of an impossible alignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.align.text import WILDCARD, TextWord, Token

# Nats per frame a star frame pays against the frame's best token. Measured on demo-ctc with
# espeak speech and one spoken word missing from each text (benchmarks/bench_align.py): any
# penalty from 0.5 to 5 cuts the mean boundary error from 99 to 93-94 ms and leaves text that
# matches the audio unchanged (81-82 ms); 8 loses the gain. 2 sits inside that range. (Measured
# on the path's own starts; with service/align/onsets.py, 2 takes the mean from 73 to 66 ms.)
STAR_PENALTY = 2.0


def wild_column(vocab_size: int) -> int:
    return vocab_size


def star_column(vocab_size: int) -> int:
    return vocab_size + 1


@dataclass(frozen=True)
class Trellis:
    labels: np.ndarray  # (S,) int64: the emission column each state scores
    skip: np.ndarray  # (S,) bool: the state may be entered from s - 2
    tokens: list[Token]  # (n,) token i is state 2 i + 1, delimiters included
    word_of_token: np.ndarray  # (n,) int64: the word a token belongs to, -1 for delimiters
    repeats: int  # tokens equal to the one before them: each needs a blank frame between

    @property
    def needed_frames(self) -> int:
        return len(self.tokens) + self.repeats


def build(
    words: list[TextWord], blank: int, delimiter: int | None, vocab_size: int, *, star: bool
) -> Trellis:
    """The state sequence of `words`, a delimiter token between two words when there is one."""
    tokens: list[Token] = []
    word_of: list[int] = []
    boundaries = {0}  # token indices a word boundary precedes: the blank before them is one
    for w, word in enumerate(words):
        if w and delimiter is not None:
            boundaries.add(len(tokens))
            tokens.append(Token(delimiter, " "))
            word_of.append(-1)
        boundaries.add(len(tokens))
        tokens.extend(word.tokens)
        word_of.extend([w] * len(word.tokens))
    boundaries.add(len(tokens))
    wild = wild_column(vocab_size)
    ids = np.array([wild if t.id == WILDCARD else t.id for t in tokens], np.int64)
    labels = np.full(2 * len(tokens) + 1, blank, np.int64)
    labels[1::2] = ids
    if star:
        labels[[2 * i for i in boundaries]] = star_column(vocab_size)
    same = ids[1:] == ids[:-1]
    skip = np.zeros(len(labels), bool)
    skip[3::2] = ~same
    return Trellis(labels, skip, tokens, np.array(word_of, np.int64), int(same.sum()))


def emissions(log_probs: np.ndarray, blank: int, star_penalty: float) -> np.ndarray:
    """(T, V) logits or log-probabilities -> (T, V + 2) float32 log-probabilities with the
    WILD and STAR columns (log_softmax is idempotent, so log-probabilities pass unchanged).
    Written in place into the output: an hour of emissions is 23 MB a copy."""
    frames, vocab = log_probs.shape
    out = np.empty((frames, vocab + 2), np.float32)
    x = out[:, :vocab]
    np.subtract(log_probs, log_probs.max(axis=1, keepdims=True), out=x)
    x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
    best = x.max(axis=1)
    wild = out[:, wild_column(vocab)]
    wild[:] = -np.inf
    for part in (x[:, :blank], x[:, blank + 1 :]):  # every column but the blank, no copy
        if part.shape[1]:
            np.maximum(wild, part.max(axis=1), out=wild)
    np.maximum(x[:, blank], best - star_penalty, out=out[:, star_column(vocab)])
    return out
