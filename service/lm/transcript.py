"""One clip's logits -> beam-search text and words: the beam counterpart of decode.transcript."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.errors import BadFieldError
from service.lm.alphabet import BLANK, SPACE, check_alphabet, labels_for
from service.lm.beam import (
    DEFAULT_BEAM_PRUNE_LOGP,
    DEFAULT_BEAM_WIDTH,
    DEFAULT_TOKEN_MIN_LOGP,
    SearchParams,
    search,
)
from service.lm.hotwords import DEFAULT_HOTWORD_WEIGHT, Hotwords
from service.lm.loading import Decoder
from service.schemas import Word
from service.wav2vec2.tokenizer import CTCTokenizer, Decoded, WordSpan


@dataclass(frozen=True)
class BeamOptions:
    """Per-request decoding options; alpha/beta None keep the model's attrs.json values."""

    beam_width: int = DEFAULT_BEAM_WIDTH
    alpha: float | None = None
    beta: float | None = None
    hotwords: tuple[str, ...] = ()
    hotword_weight: float = DEFAULT_HOTWORD_WEIGHT
    beam_prune_logp: float = DEFAULT_BEAM_PRUNE_LOGP
    token_min_logp: float = DEFAULT_TOKEN_MIN_LOGP


@dataclass(frozen=True)
class BeamLimits:
    """Bounds on what one request may ask for (the lead maps them to settings)."""

    max_beam_width: int = 512
    max_hotwords: int = 100
    max_hotword_chars: int = 100


def _bad(code: str, message: str) -> BadFieldError:
    return BadFieldError(message, code=code)


def check_options(options: BeamOptions, limits: BeamLimits) -> None:
    """Raises a 422 BadFieldError for an option out of range."""
    if not 1 <= options.beam_width <= limits.max_beam_width:
        raise _bad(
            "invalid_beam_width",
            f"beam_width must be between 1 and {limits.max_beam_width}, got {options.beam_width}",
        )
    if len(options.hotwords) > limits.max_hotwords:
        raise _bad(
            "too_many_hotwords",
            f"at most {limits.max_hotwords} hotwords, got {len(options.hotwords)}",
        )
    for hotword in options.hotwords:
        if len(hotword) > limits.max_hotword_chars:
            raise _bad(
                "hotword_too_long",
                f"a hotword may have at most {limits.max_hotword_chars} characters, "
                f"got one of {len(hotword)}",
            )
    for name in ("alpha", "beta", "hotword_weight", "beam_prune_logp", "token_min_logp"):
        value = getattr(options, name)
        if value is not None and not math.isfinite(value):
            raise _bad("invalid_field", f"{name} must be a finite number, got {value}")
    for name in ("beam_prune_logp", "token_min_logp"):
        if getattr(options, name) > 0:
            raise _bad("invalid_field", f"{name} is a log-probability and must be <= 0")


def _fold_case(hotwords: tuple[str, ...], labels: list[str | None]) -> tuple[str, ...]:
    """Hotwords in the case the vocabulary spells (upper-case vocabularies never spell 'paris')."""
    letters = "".join(label for label in labels if label)
    if letters.isupper():
        return tuple(h.upper() for h in hotwords)
    if letters.islower():
        return tuple(h.lower() for h in hotwords)
    return hotwords


def beam_decode(
    logits: np.ndarray, tokenizer: CTCTokenizer, decoder: Decoder | None, options: BeamOptions
) -> Decoded:
    """Beam search over one clip's (T, vocab) logits -> text and word frame spans."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be (time, vocab), got shape {logits.shape}")
    labels = labels_for(tokenizer, logits.shape[1])
    lm = decoder.lm if decoder is not None else None
    if decoder is not None:
        check_alphabet(decoder.alphabet, labels)
    if lm is not None:
        lm = lm.with_params(alpha=options.alpha, beta=options.beta)
    hotwords = Hotwords.build(_fold_case(options.hotwords, labels), options.hotword_weight)
    params = SearchParams(options.beam_width, options.beam_prune_logp, options.token_min_logp)
    texts, words = [], []
    for start, end in pieces(logits.argmax(axis=-1), labels):
        best = search(logits[start:end], labels, lm, hotwords, params)[0]
        texts += [best.text] if best.text else []
        words += [WordSpan(w.word, start + w.start, start + w.end) for w in best.words]
    text = " ".join(texts)
    if tokenizer.do_lower_case:
        text = text.lower()
        words = [WordSpan(w.word.lower(), w.start, w.end) for w in words]
    return Decoded(text, words)


def beam_transcript(
    logits: np.ndarray,
    tokenizer: CTCTokenizer,
    decoder: Decoder | None,
    options: BeamOptions,
    frame_seconds: float,
) -> tuple[str, list[Word]]:
    """As decode.transcript, with the beam search: word times in seconds from the clip's start."""
    decoded = beam_decode(logits, tokenizer, decoder, options)
    words = [
        Word(
            word=w.word,
            start=round(w.start * frame_seconds, 3),
            end=round(w.end * frame_seconds, 3),
        )
        for w in decoded.words
    ]
    return decoded.text, words


# Frames searched at once. The search keeps every text prefix it scored and copies texts as
# they grow, so its cost grows faster than the clip: an hour of demo-ctc frames (180,000) was
# still searching after 10 minutes (RSS +570 MB), where 30 s clips take 0.004 s per second.
PIECE_FRAMES = 1500
PAUSE_FRAMES = 10  # a run of blanks this long lies between words


def pieces(ids: np.ndarray, labels: list[str | None]) -> list[tuple[int, int]]:
    """[start, end) frame ranges of at most PIECE_FRAMES, cut between words: after the last
    word-delimiter frame of each range's final quarter, else inside its last pause, else at
    its end. Each piece is searched alone (its LM context starts afresh)."""
    space = np.array([label == SPACE for label in labels])[ids]
    blank = np.array([label == BLANK for label in labels])[ids]
    out, start = [], 0
    while len(ids) - start > PIECE_FRAMES:
        lo, hi = start + PIECE_FRAMES * 3 // 4, start + PIECE_FRAMES
        cut = hi
        delimiters = np.flatnonzero(space[lo:hi])
        if len(delimiters):
            cut = lo + int(delimiters[-1]) + 1
        else:
            run = np.convolve(blank[lo:hi], np.ones(PAUSE_FRAMES, int), "valid")
            paused = np.flatnonzero(run == PAUSE_FRAMES)
            if len(paused):
                cut = lo + int(paused[-1]) + PAUSE_FRAMES // 2
        out.append((start, cut))
        start = cut
    return [*out, (start, len(ids))]
