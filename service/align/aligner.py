"""align(): emissions of one clip and its transcript -> word and character frame spans."""

from __future__ import annotations

import numpy as np

from service.align.errors import AlignmentImpossibleError, EmptyTextError
from service.align.onsets import ONSET_LOG_PROB, with_onsets
from service.align.spans import Alignment, spans
from service.align.text import AlignVocab, normalise
from service.align.trellis import STAR_PENALTY, build, emissions
from service.align.viterbi import best_path
from service.wav2vec2.tokenizer import CTCTokenizer


def align(
    log_probs: np.ndarray,
    text: str,
    tokenizer: CTCTokenizer,
    *,
    star: bool = False,
    star_penalty: float = STAR_PENALTY,
    onset_log_prob: float | None = ONSET_LOG_PROB,
    block: int | None = None,
) -> Alignment:
    """(T, V) CTC logits or log-probabilities of one clip and its transcript -> the best path's
    word and character spans in frames (multiply by the model's frame_seconds for seconds).

    `star` lets word boundaries absorb speech the text lacks (service/align/trellis.py);
    word starts move back to the speech onset the path misses (service/align/onsets.py) unless
    `onset_log_prob` is None;
    `block` is the Viterbi's checkpoint interval (service/align/viterbi.py), for tests.
    Raises EmptyTextError (no word) and AlignmentImpossibleError (too few frames).
    """
    if log_probs.ndim != 2 or not np.isfinite(log_probs).all():
        raise ValueError(f"log_probs must be a finite (frames, vocab) array, not {log_probs.shape}")
    vocab = AlignVocab.from_tokenizer(tokenizer, log_probs.shape[1])
    words = normalise(text, vocab)
    if not words:
        raise EmptyTextError("the text has no word to align")
    trellis = build(words, vocab.blank, vocab.delimiter, log_probs.shape[1], star=star)
    frames = len(log_probs)
    if frames < trellis.needed_frames:
        raise AlignmentImpossibleError(
            frames, trellis.needed_frames, len(trellis.tokens), trellis.repeats
        )
    scores = emissions(log_probs, vocab.blank, star_penalty)
    path = best_path(scores, trellis.labels, trellis.skip, block=block)
    aligned = spans(path, scores[np.arange(frames), trellis.labels[path]], trellis, words)
    if onset_log_prob is None:
        return aligned
    return with_onsets(aligned, scores[:, vocab.blank], onset_log_prob)
