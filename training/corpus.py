"""The synthesized corpus as the training loop reads it: utterances and length-sorted batches."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from service.cost import fill_in_order
from service.wav2vec2.features import normalize
from training.data import SAMPLE_RATE

PAUSE_SECONDS = (0.3, 1.5)  # between sentences of a joined recording


def transcripts(data_dir: Path) -> list[str]:
    """Every training utterance's text, shard by shard (what the model heard spelled)."""
    return [
        u["text"]
        for f in sorted(data_dir.glob("train-*.json"))
        for u in json.loads(f.read_text())["utterances"]
    ]


@dataclass
class Split:
    """Utterances of one or more shards: audio stays in the memory-mapped int16 files."""

    audio: list[np.ndarray]
    shard: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    texts: list[str]
    paused: int = 0  # utterances with a pause between two words (corpus version 2)
    frequent: int = 0  # random sequences drawn by word frequency (frequent-word shards)
    connected: int = 0  # function-word chunk sequences (connected shards)
    # Samples of silence the renderer put before and after each utterance's speech.
    lead: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tail: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @staticmethod
    def load(data_dir: Path, names: list[str]) -> Split:
        audio, shard, offset, length, texts, paused, frequent = [], [], [], [], [], 0, 0
        connected = 0
        lead, tail = [], []
        for k, name in enumerate(names):
            meta = json.loads((data_dir / f"{name}.json").read_text())["utterances"]
            audio.append(np.load(data_dir / f"{name}.npy", mmap_mode="r"))
            shard += [k] * len(meta)
            offset += [m["offset"] for m in meta]
            length += [m["length"] for m in meta]
            texts += [m["text"] for m in meta]
            paused += sum(bool(m.get("pause_word")) for m in meta)
            frequent += sum(m.get("kind") == "frequent" for m in meta)
            connected += sum(m.get("kind") == "connected" for m in meta)
            lead += [int(m.get("lead_s", 0) * SAMPLE_RATE) for m in meta]
            tail += [int(m.get("tail_s", 0) * SAMPLE_RATE) for m in meta]
        return Split(
            audio,
            np.array(shard),
            np.array(offset),
            np.array(length),
            texts,
            paused,
            frequent,
            connected,
            np.array(lead),
            np.array(tail),
        )

    def __len__(self) -> int:
        return len(self.texts)

    def samples(self, i: int) -> np.ndarray:
        """Utterance i as float32 in [-1, 1), not normalised."""
        a = self.audio[self.shard[i]][self.offset[i] : self.offset[i] + self.length[i]]
        return a.astype(np.float32) / 32768

    def clip(self, i: int) -> Tensor:
        """Utterance i as the model's input: float32, normalised over the clip."""
        return torch.from_numpy(normalize(self.samples(i)))

    def speech(self, i: int) -> np.ndarray:
        """Utterance i without the silence either side of its speech, float32."""
        x = self.samples(i)
        return x[self.lead[i] : len(x) - self.tail[i]]

    def joined(self, rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, str]:
        """A multi-sentence recording of about `seconds`: random utterances' speech joined by
        0.3-1.5 s pauses, 0-0.5 s of silence at each end (what long audio sounds like; the
        corpus's own utterances last 1-8 s), and its transcript."""

        def silence(lo: float, hi: float) -> np.ndarray:
            return np.zeros(int(rng.uniform(lo, hi) * SAMPLE_RATE), np.float32)

        parts, texts = [silence(0.0, 0.5)], []
        while sum(len(p) for p in parts) < seconds * SAMPLE_RATE:
            if texts:
                parts.append(silence(*PAUSE_SECONDS))
            i = int(rng.integers(len(self)))
            parts.append(self.speech(i))
            texts.append(self.texts[i])
        return np.concatenate([*parts, silence(0.0, 0.5)]), " ".join(texts)

    def hours(self) -> float:
        return float(self.length.sum()) / SAMPLE_RATE / 3600


class Batches:
    """Length-sorted batches of at most `budget` padded samples, in random order.

    During the curriculum only batches whose longest clip is under `cap` samples are handed
    out; shorter clips first shortens CTC's all-blank plateau.
    """

    def __init__(self, lengths: np.ndarray, budget: int, seed: int) -> None:
        self.lengths, self.budget = lengths, budget
        self.rng = np.random.default_rng(seed)
        self.pending: list[np.ndarray] = []
        self.epochs = 0

    def _new_epoch(self) -> None:
        jitter = self.rng.uniform(0.9, 1.1, len(self.lengths))  # new neighbours every epoch
        order = np.argsort(self.lengths * jitter)
        batches = [np.array(b) for b in fill_in_order(order, self.lengths, self.budget)]
        self.rng.shuffle(batches)
        self.pending = batches
        self.epochs += 1

    def next(self, cap: float | None = None) -> np.ndarray:
        for _ in range(2):
            for j, b in enumerate(self.pending):
                if cap is None or self.lengths[b].max() <= cap:
                    return self.pending.pop(j)
            self._new_epoch()
        return min(self.pending, key=lambda b: self.lengths[b].max())
