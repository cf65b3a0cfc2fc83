"""Train the demo CTC model in rounds on the espeak-ng corpus of training/data.py.

    python -m training.train --from-scratch --minutes 120 --run training/runs/round1   # round 1
    python -m training.train --minutes 120 --run training/runs/round2                  # round N

A round warm-starts from the weights committed in service/models/demo-ctc (no optimizer
state, short warmup) unless --from-scratch. Every --export-every minutes and at the end it
exports the best checkpoint so far (by mean held-out CER) to RUN/export, a complete model
directory with its card; copying that directory over service/models/demo-ctc and committing
it is what makes the round count.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from service.wav2vec2.attention import _padded_sdpa
from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.features import normalize
from service.wav2vec2.heads import Head, Wav2Vec2ForCTC
from service.wav2vec2.loading import read_weights, rename
from service.wav2vec2.model import Packed
from training import export
from training.data import (
    DATA_DIR,
    HELDOUT_SETS,
    HELDOUT_VARIANTS,
    SAMPLE_RATE,
    VOICES,
    seen_variants,
)
from training.text import VOCAB, encode, error_rates, greedy

RUNS_DIR = Path(__file__).parent / "runs"


def model_config(first_conv: int = 64) -> Wav2Vec2Config:
    """3.9 M parameters: a pre-LN 4 x 256 transformer on a layer-norm conv front end."""
    return Wav2Vec2Config(
        vocab_size=len(VOCAB), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=1024, hidden_act="gelu", feat_extract_norm="layer",
        feat_extract_activation="gelu", conv_dim=(first_conv, 64, 128, 128, 256, 256, 256),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_bias=True,
        num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=16, do_stable_layer_norm=True,
        mask_time_prob=0.0, mask_feature_prob=0.0, pad_token_id=0,
        architectures=("Wav2Vec2ForCTC",), id2label={0: "LABEL_0", 1: "LABEL_1"},
        extra={"bos_token_id": 1, "eos_token_id": 2, "ctc_loss_reduction": "mean",
               "ctc_zero_infinity": True, "hidden_dropout": 0.0, "attention_dropout": 0.0,
               "activation_dropout": 0.0, "feat_proj_dropout": 0.0, "final_dropout": 0.0,
               "layerdrop": 0.0},
    )


def load_weights(model: Wav2Vec2ForCTC, model_dir: Path) -> None:
    """The committed (fp16) weights into a training model, in fp32, weight norm kept."""
    weights = rename(read_weights(model_dir), model.config, pretraining=False)
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)


@torch.no_grad()
def check_grown(before: Wav2Vec2ForCTC, after: Wav2Vec2ForCTC) -> None:
    clips = [torch.randn(16_000), torch.randn(24_000)]
    a, b = before.eval()(clips).data, after.eval()(clips).data
    diff = float((a - b).abs().max())
    assert diff < 1e-4 * float(a.abs().max()), diff
    print(f"grown to {after.config.num_hidden_layers} layers: same outputs (max |diff| "
          f"{diff:.1e})", flush=True)


def grow(model: Wav2Vec2ForCTC, layers: int) -> Wav2Vec2ForCTC:
    """The same function with `layers` transformer layers: new ones start as the identity.

    A pre-LN layer adds attention(LN(x)) and FFN(LN(x)) to x, so with its two output
    projections at zero it passes x through unchanged. New layers go between the trained ones
    (old layer i at position i * layers // old), randomly initialised but for those zeros: the
    round starts from exactly the committed model's outputs, with more depth to learn into.
    """
    config = model.config
    old = config.num_hidden_layers
    if layers <= old:
        return model
    if not config.do_stable_layer_norm:
        raise SystemExit("--layers: only a pre-LN (do_stable_layer_norm) encoder grows exactly")
    grown = Wav2Vec2ForCTC(dataclasses.replace(config, num_hidden_layers=layers))
    state = grown.state_dict()
    position = {i: i * layers // old for i in range(old)}  # old layer -> its new index
    prefix = "wav2vec2.encoder.layers."
    for key, value in model.state_dict().items():
        if key.startswith(prefix):
            i, rest = key[len(prefix):].split(".", 1)
            key = f"{prefix}{position[int(i)]}.{rest}"
        state[key] = value
    for n in set(range(layers)) - set(position.values()):
        for name in ("attention.out_proj", "feed_forward.output_dense"):
            state[f"{prefix}{n}.{name}.weight"].zero_()
            state[f"{prefix}{n}.{name}.bias"].zero_()
    grown.load_state_dict(state, strict=True)
    return grown


@dataclass
class Split:
    """Utterances of one or more shards: audio stays in the memory-mapped int16 files."""

    audio: list[np.ndarray]
    shard: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    texts: list[str]
    paused: int = 0  # utterances with a pause between two words (corpus version 2)

    @staticmethod
    def load(data_dir: Path, names: list[str]) -> Split:
        audio, shard, offset, length, texts, paused = [], [], [], [], [], 0
        for k, name in enumerate(names):
            meta = json.loads((data_dir / f"{name}.json").read_text())["utterances"]
            audio.append(np.load(data_dir / f"{name}.npy", mmap_mode="r"))
            shard += [k] * len(meta)
            offset += [m["offset"] for m in meta]
            length += [m["length"] for m in meta]
            texts += [m["text"] for m in meta]
            paused += sum(bool(m.get("pause_word")) for m in meta)
        return Split(audio, np.array(shard), np.array(offset), np.array(length), texts, paused)

    def __len__(self) -> int:
        return len(self.texts)

    def clip(self, i: int) -> Tensor:
        """Utterance i as the model's input: float32, normalised over the clip."""
        a = self.audio[self.shard[i]][self.offset[i]:self.offset[i] + self.length[i]]
        return torch.from_numpy(normalize(a.astype(np.float32) / 32768))

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
        batches, current, longest = [], [], 0
        for i in order:
            n = int(self.lengths[i])
            if current and max(longest, n) * (len(current) + 1) > self.budget:
                batches.append(np.array(current))
                current, longest = [], 0
            current.append(i)
            longest = max(longest, n)
        batches.append(np.array(current))
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
    for layer in model.wav2vec2.encoder.layers:
        layer.attention.kernel = _padded_sdpa
    config = model.config
    lengths = [config.num_frames(len(w)) for w in waves]
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)  # (B, T_max)
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
    loss = F.ctc_loss(log_probs, torch.cat(targets), logits.lengths, [len(t) for t in targets],
                      blank=0, reduction="sum", zero_infinity=True)
    return loss / sum(len(t) for t in targets)


@torch.no_grad()
def transcribe(model: Wav2Vec2ForCTC, clips: list[Tensor], budget: int) -> list[str]:
    """Greedy transcripts through the serving forward (model(waves)), in length-sorted batches."""
    order = sorted(range(len(clips)), key=lambda i: len(clips[i]))
    out: list[str] = [""] * len(clips)
    batch: list[int] = []
    for i in [*order, None]:
        if i is not None and (not batch or len(clips[i]) * (len(batch) + 1) <= budget):
            batch.append(i)
            continue
        for j, logits in zip(batch, model([clips[j] for j in batch]).split()):
            out[j] = greedy(logits)
        batch = [i] if i is not None else []
    return out


def evaluate(model: Wav2Vec2ForCTC, sets: dict[str, Split], n: int | None, budget: int,
             hyps_out: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Greedy CER/WER on the first n utterances of each held-out set (transcripts appended
    to hyps_out)."""
    was_training = model.training
    model.eval()
    model.wav2vec2.set_attention("auto")  # the serving kernel
    results = {}
    for name, split in sets.items():
        idx = range(min(n or len(split), len(split)))
        hyps = transcribe(model, [split.clip(i) for i in idx], budget)
        results[name] = {**error_rates([split.texts[i] for i in idx], hyps), "n": len(idx)}
        if hyps_out is not None:
            hyps_out += hyps
    model.train(was_training)
    return results


def mean_cer(results: dict[str, dict[str, float]]) -> float:
    return sum(r["cer"] for r in results.values()) / len(results)


def choose_dtype(requested: str) -> torch.dtype:
    """bf16 autocast only where this CPU runs bf16 matmuls clearly faster than fp32.

    The CPU flag is not enough to go by: AMX and AVX512-BF16 (Zen 4/5) make bf16 2-4x faster,
    while plain AVX2/AVX512 machines run it hundreds of times slower. A 2048x256x1024 matmul,
    the size of this model's FFN on a 30 s batch, is timed in both dtypes.
    """
    if requested != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[requested]

    def seconds(dtype: torch.dtype) -> float:
        a, w = torch.randn(2048, 256, dtype=dtype), torch.randn(1024, 256, dtype=dtype)
        a @ w.T
        t0 = time.perf_counter()
        for _ in range(10):
            a @ w.T
        return time.perf_counter() - t0

    fp32, bf16 = min(seconds(torch.float32) for _ in range(3)), min(
        seconds(torch.bfloat16) for _ in range(3))
    print(f"matmul fp32 {fp32 * 100:.2f} ms, bf16 {bf16 * 100:.2f} ms", flush=True)
    return torch.bfloat16 if bf16 * 1.25 < fp32 else torch.float32


def machine(dtype: torch.dtype = torch.float32) -> str:
    cpu = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                   if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {torch.get_num_threads()} threads, "
            f"{torch.backends.cpu.get_cpu_capability()}, "
            f"{'bf16 autocast' if dtype == torch.bfloat16 else 'fp32'}")


def recipe(config: Wav2Vec2Config, args: argparse.Namespace, params: int) -> list[str]:
    return [
        f"- Model: Wav2Vec2ForCTC, {params / 1e6:.2f} M parameters; conv front end "
        f"{list(config.conv_dim)} (kernels {list(config.conv_kernel)}, strides "
        f"{list(config.conv_stride)}, bias, layer norm), pre-LN transformer "
        f"{config.num_hidden_layers} x {config.hidden_size} ({config.num_attention_heads} heads, "
        f"FFN {config.intermediate_size}), positional conv {config.num_conv_pos_embeddings}/"
        f"{config.num_conv_pos_embedding_groups}; no dropout, no masking.",
        f"- Vocabulary: {len(VOCAB)} tokens, `<pad>` = 0 is the CTC blank, `|` separates words; "
        "upper-case A-Z and apostrophe.",
        "- Loss: torch.nn.functional.ctc_loss, summed and divided by the target characters.",
        f"- AdamW (0.9, 0.98), weight decay {args.weight_decay} (not on biases and norms), "
        f"gradient clip {args.clip}; linear warmup, then cosine to {args.final_lr:g} over the "
        "round's wall-clock budget. Round 1: warmup "
        "100 steps to 2e-3; warm-started rounds: a short warmup to a lower peak.",
        f"- Batches grouped by length, at most {args.batch_seconds:g} s of padded audio; round 1 "
        "starts on short clips only (curriculum), the cap on clip length rising to none over "
        "its first steps.",
        "- Forward in bf16 autocast where the CPU runs bf16 clearly faster (measured at the "
        "start of each round), fp32 weights and optimizer; evaluation in fp32.",
        "- Evaluated and exported: an exponential moving average of the weights (decay "
        f"{args.ema:g}, from round 2 on), so a checkpoint taken mid-round is not one noisy step.",
        "- Best checkpoint by mean held-out CER (periodic greedy evaluation), exported in fp16.",
    ]


def data_description(train: Split) -> list[str]:
    return [
        f"- {len(train):,} training utterances ({train.hours():.1f} h) synthesized by espeak-ng: "
        "70% random sequences of the 5,000 most frequent English words (`wordfreq`, a-z and "
        "apostrophe, abbreviations dropped), 30% from natural templates.",
        f"- Voices: {len(VOICES)} espeak-ng English voices x {len(seen_variants())} variants "
        f"(`+variant`, and none); {len(HELDOUT_VARIANTS)} more variants held out "
        f"({', '.join(HELDOUT_VARIANTS)}); 120-230 wpm, pitch 20-80.",
        "- 16 kHz (soxr), 0-0.5 s of silence at each end, peak gain 0.3-1.0, Gaussian noise at "
        "20-45 dB SNR on 60% of utterances. Seeded: `python -m training.data` rebuilds it.",
        *([f"- A 0.3-1.5 s pause between two words in {train.paused / len(train):.0%} of the "
           "training utterances (corpus version 2; rounds 1-3 had none)."] if train.paused else []),
        "- Held-out sets of 200 utterances each: natural (sentence templates never trained on, "
        "seen voices), random (random word sequences, seen voices), voices (variants never "
        "trained on).",
    ]


class ActiveClock:
    """Seconds since creation, less the time the process was stopped (SIGSTOP/SIGCONT).

    Benchmarks on this shared machine stop other processes to measure on a quiet CPU; the
    budget and the LR schedule should not run on while this one is frozen. A daemon thread
    ticks every second; a tick that comes `PAUSE_S` late means the process was stopped.
    """

    PAUSE_S = 30.0

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()
        self.paused = 0.0
        threading.Thread(target=self._tick, daemon=True).start()

    def _tick(self) -> None:
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            if now - self.last > self.PAUSE_S:
                self.paused += now - self.last - 1.0
                tqdm.write(f"[clock] process was stopped for {now - self.last:.0f} s; "
                           "not counted in the budget", file=sys.stdout)
            self.last = now

    def __call__(self) -> float:
        now = time.monotonic()
        # A stop still under way (the ticker has not caught up yet) is not counted either.
        behind = now - self.last
        return now - self.start - self.paused - (behind if behind > self.PAUSE_S else 0.0)


@torch.no_grad()
def update_average(averaged: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """averaged <- decay * averaged + (1 - decay) * model, parameter by parameter."""
    torch._foreach_lerp_(list(averaged.parameters()), list(model.parameters()), 1 - decay)


def lr_at(step: int, frac: float, args: argparse.Namespace) -> float:
    """Linear warmup over steps, then cosine over the fraction of the time budget spent."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    return args.final_lr + 0.5 * (args.lr - args.final_lr) * (1 + math.cos(math.pi * min(frac, 1)))


def optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": rest, "weight_decay": 0.0}],
                             lr=args.lr, betas=(0.9, 0.98))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--from-scratch", action="store_true", help="round 1: random initialisation")
    p.add_argument("--init", type=Path, default=export.MODEL_DIR, help="model to warm-start from")
    p.add_argument("--run", type=Path, default=RUNS_DIR / "round", help="run dir (export/ in it)")
    p.add_argument("--data", type=Path, default=DATA_DIR)
    p.add_argument("--minutes", type=float, default=120, help="training budget (wall clock)")
    p.add_argument("--max-steps", type=int, default=None, help="stop early (smoke tests)")
    p.add_argument("--lr", type=float, default=None, help="peak LR (2e-3 scratch, 1e-3 warm)")
    p.add_argument("--final-lr", type=float, default=4e-5)
    p.add_argument("--warmup", type=int, default=None, help="steps (100 scratch, 30 warm)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--batch-seconds", type=float, default=30.0, help="padded audio per batch")
    p.add_argument("--curriculum-steps", type=int, default=None, help="(400 scratch, 0 warm)")
    p.add_argument("--first-conv", type=int, default=64, help="channels of the first conv")
    p.add_argument("--layers", type=int, default=None,
                   help="grow a warm start to this many transformer layers (new: identity)")
    p.add_argument("--eval-every", type=float, default=5.0, help="minutes")
    p.add_argument("--export-every", type=float, default=10.0, help="minutes")
    p.add_argument("--eval-n", type=int, default=30, help="utterances per held-out set")
    p.add_argument("--final-eval-n", type=int, default=None, help="default: whole sets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="training forward; auto: bf16 autocast where measured faster")
    p.add_argument("--ema", type=float, default=0.999,
                   help="decay of the weight average that is evaluated and exported (0: off)")
    p.add_argument("--check", action="store_true",
                   help="verify the padded front end equals model(waves) first")
    args = p.parse_args(argv)
    scratch = args.from_scratch
    args.lr = args.lr or (2e-3 if scratch else 1e-3)
    args.warmup = args.warmup if args.warmup is not None else (100 if scratch else 30)
    if args.curriculum_steps is None:
        args.curriculum_steps = 400 if scratch else 0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal activations early in training slow steps down
    torch.manual_seed(args.seed)
    args.run.mkdir(parents=True, exist_ok=True)

    if args.from_scratch:
        config, history = model_config(args.first_conv), {"rounds": []}
        model = Wav2Vec2ForCTC(config)
        init = "scratch"
    else:
        config = Wav2Vec2Config.from_file(args.init / "config.json")
        model = Wav2Vec2ForCTC(config)
        load_weights(model, args.init)
        # Only the rounds carry over: scores and checks belong to the weights they measured.
        history = {"rounds": json.loads((args.init / "training.json").read_text())["rounds"]}
        init = f"round {len(history['rounds'])} weights"
        if args.layers and args.layers > config.num_hidden_layers:
            before, model = model, grow(model, args.layers)
            config = model.config
            check_grown(before, model)
            init += f", grown to {args.layers} layers"
    model.train()
    params = sum(p.numel() for p in model.parameters())
    dtype = choose_dtype(args.dtype)
    # What is evaluated and exported: the weight average, or the weights themselves.
    averaged = copy.deepcopy(model) if args.ema > 0 else model

    shards = sorted(f.stem for f in args.data.glob("train-*.json"))
    train = Split.load(args.data, shards)
    heldout = {k: Split.load(args.data, [f"heldout-{k}"]) for k in HELDOUT_SETS}
    budget = int(args.batch_seconds * SAMPLE_RATE)
    print(f"{params / 1e6:.2f} M parameters, init: {init}; {len(train)} training utterances "
          f"({train.hours():.1f} h, {len(shards)} shards); {machine(dtype)}", flush=True)

    if args.check:
        clips = [train.clip(i) for i in range(5)]
        with torch.no_grad():
            a = training_logits(model, clips)
            model.wav2vec2.set_attention("auto")
            b = model(clips)
        diff = float((a.data - b.data).abs().max())
        assert a.lengths == b.lengths and diff < 1e-4, (a.lengths, b.lengths, diff)
        print(f"training forward == model(waves): max |diff| {diff:.1e}", flush=True)

    entry: dict[str, Any] = {
        "round": len(history["rounds"]) + 1,
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(dtype), "init": init,
        "command": "python -m training.train " + " ".join(sys.argv[1:] if argv is None else argv),
        "train_utterances": len(train), "train_hours": round(train.hours(), 2),
        "eval_n": args.eval_n, "minutes": 0.0, "steps": 0, "audio_hours": 0.0,
        "status": "started", "curve": [],
    }
    history = {**history, "parameters": params, "layers": config.num_hidden_layers,
               "recipe": recipe(config, args, params),
               "data": {"description": data_description(train)},
               "rounds": [*history["rounds"], entry]}

    opt = optimizer(model, args)
    batches = Batches(train.length, budget, args.seed + entry["round"])
    longest = float(train.length.max())
    best: dict[str, Any] = {"cer": float("inf"), "state": copy.deepcopy(averaged.state_dict()),
                            "eval": None}
    clock = ActiveClock()
    # A warm start is scored before its first step, so a round never exports worse weights.
    next_eval = 0.0 if not args.from_scratch else args.eval_every * 60
    next_export = args.export_every * 60
    audio_seconds, loss_ema, step = 0.0, None, 0
    bar = tqdm(unit="step", mininterval=20, smoothing=0.05, file=sys.stdout)

    def export_best(status: str) -> None:
        entry["status"] = status
        if best["eval"] is not None:
            entry["eval"] = best["eval"]
        current = copy.deepcopy(averaged.state_dict())
        averaged.load_state_dict(best["state"])
        export.save(averaged, config, args.run / "export", history)
        averaged.load_state_dict(current)
        (args.run / "training.json").write_text(json.dumps(history, indent=1))

    while True:
        elapsed = clock()
        done = elapsed >= args.minutes * 60 or (args.max_steps is not None
                                                and step >= args.max_steps)
        if elapsed >= next_eval or done:
            evals = evaluate(averaged, heldout, args.eval_n, budget)
            point = {"minutes": round(elapsed / 60, 1), "steps": step,
                     "audio_hours": round(audio_seconds / 3600, 2),
                     "loss": round(loss_ema or float("nan"), 4), "eval": evals}
            entry["curve"].append(point)
            entry.update(minutes=point["minutes"], steps=step, audio_hours=point["audio_hours"])
            if mean_cer(evals) < best["cer"]:
                best = {"cer": mean_cer(evals), "state": copy.deepcopy(averaged.state_dict()),
                        "eval": evals}
            tqdm.write(f"[eval] {point['minutes']:.1f} min, step {step}, "
                       f"{point['audio_hours']:.2f} h audio, loss {point['loss']:.3f}: "
                       + ", ".join(f"{k} CER {100 * v['cer']:.1f}% WER {100 * v['wer']:.1f}%"
                                   for k, v in evals.items()), file=sys.stdout)
            sys.stdout.flush()
            next_eval = clock() + args.eval_every * 60
        if done:
            break
        if clock() >= next_export:
            export_best(f"in progress ({elapsed / 60:.0f} of {args.minutes:.0f} min)")
            tqdm.write(f"[export] best (mean CER {100 * best['cer']:.1f}%) -> "
                       f"{args.run / 'export'}", file=sys.stdout)
            next_export = clock() + args.export_every * 60

        cap = None
        if step < args.curriculum_steps:
            cap = 2.5 * SAMPLE_RATE + (longest - 2.5 * SAMPLE_RATE) * step / args.curriculum_steps
        idx = batches.next(cap)
        t0 = time.monotonic()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            logits = training_logits(model, [train.clip(int(i)) for i in idx])
        loss = ctc_loss(logits, [train.texts[int(i)] for i in idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        lr = lr_at(step, elapsed / (args.minutes * 60), args)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        if averaged is not model:
            update_average(averaged, model, min(args.ema, (1 + step) / (10 + step)))
        step += 1
        seconds = float(train.length[idx].sum()) / SAMPLE_RATE
        audio_seconds += seconds
        value = float(loss.detach())
        loss_ema = value if loss_ema is None else 0.95 * loss_ema + 0.05 * value
        bar.update()
        bar.set_postfix(loss=f"{loss_ema:.3f}", lr=f"{lr:.1e}",
                        xrt=f"{seconds / (time.monotonic() - t0):.1f}", refresh=False)
    bar.close()

    # Final: the best weights, scored on the whole held-out sets, in fp32 and after fp16.
    model.load_state_dict(best["state"])
    hyps32: list[str] = []
    hyps16: list[str] = []
    full = evaluate(model, heldout, args.final_eval_n, budget, hyps32)
    best["eval"] = full
    fp16 = copy.deepcopy(model)
    fp16.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    full16 = evaluate(fp16, heldout, args.final_eval_n, budget, hyps16)
    history["fp16_check"] = {"fp32_cer": mean_cer(full), "fp16_cer": mean_cer(full16),
                             "n": len(hyps32),
                             "changed": sum(a != b for a, b in zip(hyps32, hyps16))}
    export_best("finished")
    print("[final] " + ", ".join(f"{k} CER {100 * v['cer']:.1f}% WER {100 * v['wer']:.1f}%"
                                 for k, v in full.items())
          + f"; fp16 mean CER {100 * mean_cer(full16):.2f}% vs fp32 {100 * mean_cer(full):.2f}%",
          flush=True)


if __name__ == "__main__":
    main()
