"""Model outputs of one clip -> Prediction fields: CTC text and words, labels, segments."""

from __future__ import annotations

import numpy as np

from service.schemas import Label, Segment, Word
from service.wav2vec2.tokenizer import CTCTokenizer, Decoded


def seconds(frames: int, frame_seconds: float) -> float:
    """A frame index as seconds, rounded to the millisecond as every time on the wire is."""
    return round(frames * frame_seconds, 3)


def words(decoded: Decoded, frame_seconds: float, first_frame: int = 0) -> list[Word]:
    """Word times in seconds; `first_frame` places a segment's words on its stream's clock."""
    return [
        Word(
            word=w.word,
            start=seconds(first_frame + w.start, frame_seconds),
            end=seconds(first_frame + w.end, frame_seconds),
        )
        for w in decoded.words
    ]


def transcript(
    logits: np.ndarray, tokenizer: CTCTokenizer, frame_seconds: float
) -> tuple[str, list[Word]]:
    """Greedy CTC over (T, vocab) logits; word times in seconds from the clip's start."""
    decoded = tokenizer.decode(logits.argmax(axis=-1).tolist())
    return decoded.text, words(decoded, frame_seconds)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def labels(logits: np.ndarray, id2label: dict[int, str], top_k: int) -> list[Label]:
    """Softmax probabilities, highest first, at most top_k."""
    probs = softmax(logits.astype(np.float64))
    order = np.argsort(-probs, kind="stable")[:top_k]
    return [Label(label=id2label.get(int(i), str(i)), score=float(probs[i])) for i in order]


def segments(logits: np.ndarray, id2label: dict[int, str], frame_seconds: float) -> list[Segment]:
    """Runs of frames whose sigmoid probability for a label is > 0.5, sorted by start time."""
    active = logits > 0.0  # sigmoid(x) > 0.5 <=> x > 0
    out = []
    for label in range(active.shape[1]):
        column = np.concatenate([[False], active[:, label], [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(column))
        for start, end in zip(edges[::2], edges[1::2]):
            out.append(
                Segment(
                    label=id2label.get(label, str(label)),
                    start=seconds(start, frame_seconds),
                    end=seconds(end, frame_seconds),
                )
            )
    return sorted(out, key=lambda s: (s.start, s.end, s.label))
