"""CTC prefix beam search with word-level LM fusion and hotwords, over one clip's logits.

The search is pyctcdecode's (the decoder behind transformers' Wav2Vec2ProcessorWithLM), same
states, merging, scores and pruning, so both give the same text: a beam is (text, word in
progress, last token); a finished word is scored by the LM when its word break is spelled; each
frame keeps the beam_width best beams within beam_prune_logp of the best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.lm.alphabet import BLANK, SPACE
from service.lm.hotwords import Hotwords
from service.lm.language_model import LanguageModel, State
from service.wav2vec2.tokenizer import WordSpan

DEFAULT_BEAM_WIDTH = 100
DEFAULT_BEAM_PRUNE_LOGP = -10.0
DEFAULT_TOKEN_MIN_LOGP = -5.0
# Log-probabilities are clipped here so malformed logits cannot underflow to -inf.
MIN_LOGP = math.log(1e-15)


@dataclass(frozen=True)
class SearchParams:
    beam_width: int = DEFAULT_BEAM_WIDTH
    beam_prune_logp: float = DEFAULT_BEAM_PRUNE_LOGP
    token_min_logp: float = DEFAULT_TOKEN_MIN_LOGP


@dataclass(frozen=True)
class Hypothesis:
    text: str
    words: list[WordSpan]
    logit_score: float
    score: float


# (text, word in progress, last token, finished words' frames, part start, part end, logit score)
_Beam = tuple[str, str, str | None, tuple[tuple[int, int], ...], int, int, float]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """(T, V) logits -> clipped log-probabilities in float64."""
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    x = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return np.clip(x, MIN_LOGP, 0.0)


def _join(text: str, word: str) -> str:
    if not word:
        return text
    return f"{text} {word}" if text else word


def _logaddexp(a: float, b: float) -> float:
    if a >= b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


class _TextScores:
    """Per-clip cache: text -> (LM + hotword score of its finished words, LM state)."""

    def __init__(self, lm: LanguageModel | None, hotwords: Hotwords) -> None:
        self.lm = lm
        self.hotwords = hotwords
        state: State = lm.start_state() if lm else ()
        self.done: dict[str, tuple[float, State]] = {"": (0.0, state)}
        self.ended: dict[str, float] = {}
        self.parts: dict[str, float] = {}

    def extend(self, text: str, word: str, new_text: str) -> None:
        """Scores new_text = text + word (called once per new text)."""
        if new_text in self.done:
            return
        score, state = self.done[text]
        if self.lm is not None:
            word_score, state = self.lm.score(state, word, is_last=False)
            score += word_score
        self.done[new_text] = (score + self.hotwords.word_score(word), state)

    def end(self, text: str, word: str, new_text: str) -> float:
        """Score of new_text = text + word as a whole sentence."""
        if new_text not in self.ended:
            score, state = self.done[text]
            if self.lm is not None:
                if word:
                    word_score, _ = self.lm.score(state, word, is_last=True)
                    score += word_score
                else:  # the last word is scored already; only the sentence end is left
                    score += self.lm.end_score(state)
            self.ended[new_text] = score + self.hotwords.word_score(word)
        return self.ended[new_text]

    def part(self, part: str) -> float:
        """Score of a word in progress: a hotword's share, else the LM's unknown-prefix penalty."""
        if not part:
            return 0.0
        if part not in self.parts:
            if self.hotwords.is_prefix(part) or self.lm is None:
                self.parts[part] = self.hotwords.partial_score(part)
            else:
                self.parts[part] = self.lm.partial_score(part)
        return self.parts[part]


def _merge(beams: dict[tuple[str, str, str | None], _Beam], key: tuple, beam: _Beam) -> None:
    """Adds a beam; one with the same state keeps the first's frames and sums probabilities."""
    old = beams.get(key)
    if old is None:
        beams[key] = beam
    else:
        beams[key] = (*old[:6], _logaddexp(old[6], beam[6]))


def _prune(scored: list[tuple[float, _Beam]], params: SearchParams) -> list[tuple[float, _Beam]]:
    best = max(s for s, _ in scored)
    kept = [sb for sb in scored if sb[0] >= best + params.beam_prune_logp]
    kept.sort(key=lambda sb: sb[0], reverse=True)  # stable: ties keep their order
    return kept[: params.beam_width]


def _candidates(logp: np.ndarray, labels: list[str | None], min_logp: float) -> list[list[int]]:
    """Per frame, the token ids worth extending with: the best spellable one and all above
    min_logp; special tokens never."""
    spellable = np.array([label is not None for label in labels])
    masked = np.where(spellable, logp, -np.inf)
    keep = masked >= min_logp
    keep[np.arange(len(logp)), masked.argmax(axis=-1)] = True
    return [np.flatnonzero(row).tolist() for row in keep]


def search(
    logits: np.ndarray,
    labels: list[str | None],
    lm: LanguageModel | None,
    hotwords: Hotwords,
    params: SearchParams,
) -> list[Hypothesis]:
    """(T, V) logits -> the final beams, best first. labels as alphabet.labels_for gives them."""
    logp = log_softmax(logits)
    rows = logp.tolist()
    texts = _TextScores(lm, hotwords)
    beams: list[_Beam] = [("", "", None, (), -1, -1, 0.0)]
    for t, ids in enumerate(_candidates(logp, labels, params.token_min_logp)):
        row = rows[t]
        grown: dict[tuple[str, str, str | None], _Beam] = {}
        for i in ids:
            char, p = labels[i], row[i]
            assert char is not None
            for text, part, last, frames, start, end, score in beams:
                if char == BLANK:
                    _merge(
                        grown, (text, part, char), (text, part, char, frames, start, end, score + p)
                    )
                elif char == last:  # a repeat collapses into the same token
                    _merge(
                        grown,
                        (text, part, char),
                        (text, part, char, frames, start, t + 1, score + p),
                    )
                elif char == SPACE:
                    new_text = _join(text, part)
                    if part:
                        frames = (*frames, (start, end))
                        texts.extend(text, part, new_text)
                    _merge(
                        grown, (new_text, "", char), (new_text, "", char, frames, -1, -1, score + p)
                    )
                else:
                    begin = t if start < 0 else start
                    new_part = part + char
                    _merge(
                        grown,
                        (text, new_part, char),
                        (text, new_part, char, frames, begin, t + 1, score + p),
                    )
        scored = [(b[6] + texts.done[b[0]][0] + texts.part(b[1]), b) for b in grown.values()]
        beams = [b for _, b in _prune(scored, params)]
    return _finish(beams, texts, params)


def _finish(beams: list[_Beam], texts: _TextScores, params: SearchParams) -> list[Hypothesis]:
    """Ends every beam's word in progress, scores the sentence ends and ranks the texts."""
    finals: dict[str, tuple[str, str, tuple[tuple[int, int], ...], float]] = {}
    for text, part, _, frames, start, end, score in beams:
        new_text = _join(text, part)
        if part:
            frames = (*frames, (start, end))
        old = finals.get(new_text)
        if old is None:
            finals[new_text] = (text, part, frames, score)
        else:
            finals[new_text] = (*old[:3], _logaddexp(old[3], score))
    scored: list[tuple[float, _Beam]] = []
    for new_text, (text, part, frames, score) in finals.items():
        total = score + texts.end(text, part, new_text)
        scored.append((total, (new_text, "", None, frames, -1, -1, score)))
    return [
        Hypothesis(
            text=b[0],
            words=[WordSpan(w, s, e) for w, (s, e) in zip(b[0].split(), b[3])],
            logit_score=b[6],
            score=total,
        )
        for total, b in _prune(scored, params)
    ]
