"""The training forward (fast on a CPU, same function as the serving one), CTC loss and the
greedy held-out evaluation through the serving forward."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from service.cost import fill_batches
from service.wav2vec2.attention import use_kernel
from service.wav2vec2.features import FeatureExtractor
from service.wav2vec2.heads import Head, Wav2Vec2ForCTC
from service.wav2vec2.packed import Packed
from training.corpus import Split
from training.text import encode, error_rates, greedy

FEATURES = FeatureExtractor()  # the demo model's: 16 kHz, normalised per clip


def training_logits(model: Wav2Vec2ForCTC, waves: list[Tensor]) -> Packed:
    """model(waves), computed the way that is fast to train on a CPU (training_hidden)."""
    h = training_hidden(model, waves)
    return h.with_data(model.lm_head(h.data))  # (N, vocab)


def training_hidden(model: Head, waves: list[Tensor]) -> Packed:
    """model.hidden(waves) (no layer mix), computed the way that is fast to train on a CPU.

    The conv front end runs once on the zero-padded batch: equal to the per-clip front end
    for feat_extract_norm="layer", as each clip keeps exactly the frames whose receptive field
    lies inside it (config.num_frames) and layer norm is per frame. Attention is one padded,
    key-masked SDPA call per layer: the serving kernel's per-clip slices cost B zero-filled
    full-size gradients per layer in backward (2.5x slower steps here). --check compares both
    with model(waves).
    """
    config = model.config
    lengths = [config.num_frames(len(w)) for w in waves]
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)  # (B, T_max)
    with use_kernel(model, "padded"):
        feats = model.wav2vec2.feature_extractor(list(padded))  # equal lengths: one conv call
        frames = feats.data.view(len(waves), -1, feats.data.shape[-1])  # (B, F_max, C)
        x = Packed(torch.cat([frames[i, :n] for i, n in enumerate(lengths)]), lengths)
        x = x.with_data(model.wav2vec2.feature_projection(x.data))  # (N, D)
        h, _ = model.wav2vec2.encoder(x)
    return x.with_data(h)  # (N, D)


def ctc_loss(logits: Packed, texts: list[str]) -> Tensor:
    """Mean CTC loss per target character."""
    targets = [torch.tensor(encode(t)) for t in texts]
    log_probs = logits.padded().float().log_softmax(-1).transpose(0, 1)  # (T, B, V)
    loss = F.ctc_loss(
        log_probs,
        torch.cat(targets),
        logits.lengths,
        [len(t) for t in targets],
        blank=0,
        reduction="sum",
        zero_infinity=True,
    )
    return loss / sum(len(t) for t in targets)


def transcribe(model: Head, clips: list[np.ndarray], budget: int) -> list[str]:
    """Greedy transcripts of raw clips through the serving forward (Head.infer), in
    length-sorted batches of at most `budget` padded samples."""
    out: list[str] = [""] * len(clips)
    for batch in fill_batches([len(c) for c in clips], budget):
        for j, logits in zip(batch, model.infer([clips[j] for j in batch], FEATURES)):
            out[j] = greedy(torch.from_numpy(logits))
    return out


def evaluate(
    model: Head,
    sets: dict[str, Split],
    n: int | None,
    budget: int,
    hyps_out: list[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Greedy CER/WER on the first n utterances of each held-out set (transcripts appended
    to hyps_out), with the serving attention kernel."""
    was_training = model.training
    model.eval()
    results = {}
    with use_kernel(model, "auto"):
        for name, split in sets.items():
            idx = range(min(n or len(split), len(split)))
            hyps = transcribe(model, [split.samples(i) for i in idx], budget)
            results[name] = {**error_rates([split.texts[i] for i in idx], hyps), "n": len(idx)}
            if hyps_out is not None:
                hyps_out += hyps
    model.train(was_training)
    return results


def mean_cer(results: dict[str, dict[str, float]]) -> float:
    return sum(r["cer"] for r in results.values()) / len(results)
