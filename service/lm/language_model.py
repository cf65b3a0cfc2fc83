"""Shallow fusion of a word n-gram model: alpha, beta, unigram list, unknown-word offset.

Parameter meanings and defaults are pyctcdecode's (which transformers' Wav2Vec2ProcessorWithLM
wraps): scores are alpha * log10 P * ln(10) + beta per word, the unknown-word offset is added in
log10 units, and a partial word that starts no known unigram pays the offset at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.lm.arpa import EOS

DEFAULT_ALPHA = 0.5
DEFAULT_BETA = 1.5
DEFAULT_UNK_SCORE_OFFSET = -10.0
DEFAULT_SCORE_BOUNDARY = True
# A partial word longer than this pays its offset in proportion to its length.
AVG_WORD_LENGTH = 6
LN_10 = math.log(10.0)


class Ngram(Protocol):
    """A word n-gram model: arpa.NgramModel, or a KenLM binary through kenlm_binary."""

    @property
    def order(self) -> int: ...
    def __contains__(self, word: str) -> bool: ...
    def begin_state(self) -> Any: ...
    def null_state(self) -> Any: ...
    def score(self, context: Any, word: str) -> tuple[float, Any]: ...


# An n-gram model's context: a tuple of words for ARPA models, KenLM's State for binaries.
State = Any


@dataclass(frozen=True)
class LMParams:
    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
    unk_score_offset: float = DEFAULT_UNK_SCORE_OFFSET
    score_boundary: bool = DEFAULT_SCORE_BOUNDARY


@dataclass(frozen=True)
class LanguageModel:
    """An n-gram model with its known words and fusion parameters."""

    ngram: Ngram
    unigrams: frozenset[str] | None
    params: LMParams = LMParams()
    prefixes: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        # Unigrams the n-gram model does not know are dropped, as pyctcdecode does.
        if self.unigrams is not None:
            known = frozenset(w for w in self.unigrams if w in self.ngram)
            object.__setattr__(self, "unigrams", known)
        words = self.unigrams or ()
        prefixes = {w[:i] for w in words for i in range(1, len(w) + 1)}
        object.__setattr__(self, "prefixes", frozenset(prefixes))

    def with_params(self, **changes: float | bool | None) -> LanguageModel:
        """A copy with some fusion parameters replaced (None keeps the current value)."""
        given = {k: v for k, v in changes.items() if v is not None}
        if not given:
            return self
        params = LMParams(**{**self.params.__dict__, **given})
        return LanguageModel(self.ngram, self.unigrams, params)

    def start_state(self) -> State:
        return self.ngram.begin_state() if self.params.score_boundary else self.ngram.null_state()

    def is_unknown(self, word: str) -> bool:
        listed = self.unigrams is not None and len(self.unigrams) > 0
        return (listed and word not in self.unigrams) or word not in self.ngram  # type: ignore[operator]

    def score(self, state: State, word: str, is_last: bool) -> tuple[float, State]:
        """Fused score of one finished word (and of the sentence end when is_last)."""
        log10, next_state = self.ngram.score(state, word)
        if self.is_unknown(word):
            log10 += self.params.unk_score_offset
        if is_last:
            log10 += self.end_log10(next_state)
        return self.params.alpha * log10 * LN_10 + self.params.beta, next_state

    def end_log10(self, state: State) -> float:
        """log10 P(</s> | state) when scoring sentence boundaries, else 0."""
        return self.ngram.score(state, EOS)[0] if self.params.score_boundary else 0.0

    def end_score(self, state: State) -> float:
        """Fused score of the sentence end after a text whose last word is already scored."""
        return self.params.alpha * self.end_log10(state) * LN_10

    def partial_score(self, part: str) -> float:
        """Penalty for a word in progress that starts no known unigram."""
        if part in self.prefixes:
            return 0.0
        score = self.params.unk_score_offset
        if len(part) > AVG_WORD_LENGTH:
            score *= len(part) / AVG_WORD_LENGTH
        return score
