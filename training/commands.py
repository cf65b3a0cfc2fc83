"""The spoken-command demo classifier: ten command words (and "_unknown_") on espeak-ng voices.

    python -m training.commands --minutes 15          # -> training/runs/commands/export

Fine-tunes the committed CTC demo model's encoder (service/models/demo-ctc), which already
tells English sounds apart, with a mean-pooled classification head (Wav2Vec2ForSequenceClass-
ification, as transformers names it). Clips are 0.8-2 s: one word somewhere in silence and
noise. Held out: new renderings with the seen voices, and the voice variants the CTC corpus
never trained on. Copy the export over service/models/demo-commands to ship it; `serve` with
no --model then answers /v1/classify too.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from service.wav2vec2.attention import use_kernel
from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.features import normalize
from service.wav2vec2.heads import Wav2Vec2ForSequenceClassification
from service.wav2vec2.loading import read_weights, rename
from training import export
from training.data import HELDOUT_VARIANTS, SAMPLE_RATE, VOICES, _rng, espeak, seen_variants
from training.forward import training_hidden
from training.hardware import choose_dtype, machine
from training.optim import update_average
from training.sentences import common_words
from training.train import RUNS_DIR

COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN = "_unknown_"
LABELS = (*COMMANDS, UNKNOWN)
MODEL_DIR = export.MODEL_DIR.parent / "demo-commands"
DATA_DIR = Path(__file__).parent / "data" / "commands"


@cache
def phonemes(word: str) -> str:
    out = subprocess.run(
        ["espeak-ng", "-q", "-x", "-v", "en-us", word], capture_output=True, text=True, check=True
    ).stdout
    return "".join(out.split())


@cache
def unknown_words() -> tuple[str, ...]:
    """Common words that do not sound like a command: "know" is "no" to the ear."""
    spoken = {phonemes(c) for c in COMMANDS}
    return tuple(
        w
        for w in common_words(2000)
        if w not in COMMANDS and phonemes(w) not in spoken and len(w) > 1
    )


@dataclass(frozen=True)
class Clip:
    word: str
    label: int
    voice: str
    variant: str
    speed: int
    pitch: int
    lead_s: float
    length_s: float
    gain: float
    snr_db: float | None
    seed: int


def plan(name: str, n: int, variants: tuple[str, ...], seed: int = 0) -> list[Clip]:
    """n clips, a pure function of the arguments; a twelfth of them are unknown words."""
    rng = _rng(seed, "commands", name)
    words = unknown_words()
    out = []
    for k in range(n):
        label = k % len(LABELS)
        word = LABELS[label] if label < len(COMMANDS) else words[int(rng.integers(len(words)))]
        out.append(
            Clip(
                word=word,
                label=label,
                voice=VOICES[int(rng.integers(len(VOICES)))],
                variant=variants[int(rng.integers(len(variants)))],
                speed=int(rng.integers(120, 231)),
                pitch=int(rng.integers(20, 81)),
                lead_s=round(float(rng.uniform(0.0, 0.6)), 3),
                length_s=round(float(rng.uniform(0.8, 2.0)), 3),
                gain=round(float(rng.uniform(0.3, 1.0)), 3),
                snr_db=round(float(rng.uniform(15, 45)), 1) if rng.random() < 0.7 else None,
                seed=int(rng.integers(2**31)),
            )
        )
    return out


def render(c: Clip) -> np.ndarray:
    """The word at `lead_s`, the clip `length_s` long (longer if the word needs it), int16."""
    speech = espeak(c.word, c.voice, c.variant, c.speed, c.pitch)
    speech = speech / max(float(np.abs(speech).max()), 1e-6) * c.gain
    lead = int(c.lead_s * SAMPLE_RATE)
    total = max(int(c.length_s * SAMPLE_RATE), lead + len(speech) + SAMPLE_RATE // 20)
    x = np.zeros(total, np.float32)
    x[lead : lead + len(speech)] = speech
    if c.snr_db is not None:
        sigma = (float(np.mean(speech**2)) / 10 ** (c.snr_db / 10)) ** 0.5
        x += np.random.default_rng(c.seed).normal(0, sigma, total).astype(np.float32)
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def load_split(name: str, n: int, variants: tuple[str, ...]) -> tuple[list[Tensor], Tensor]:
    """(normalised clips, labels), synthesized once and cached under training/data/commands."""
    path = DATA_DIR / f"{name}-{n}.npz"
    clips = plan(name, n, variants)
    if not path.exists():
        from multiprocessing import Pool

        with Pool(2) as pool:
            audio = pool.map(render, clips, chunksize=64)
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        lengths = np.array([len(a) for a in audio])
        np.savez(path, audio=np.concatenate(audio), lengths=lengths)
    with np.load(path) as stored:  # an NpzFile reads the whole array on every ["audio"]
        audio, lengths = stored["audio"], stored["lengths"]
    bounds = np.cumsum([0, *lengths])
    waves = [
        torch.from_numpy(normalize(audio[a:b].astype(np.float32) / 32768))
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    return waves, torch.tensor([c.label for c in clips])


def classifier_config(ctc: Wav2Vec2Config) -> Wav2Vec2Config:
    """The CTC model's encoder under a mean-pooled classification head."""
    return Wav2Vec2Config.from_dict(
        {
            **ctc.to_dict(),
            "architectures": ["Wav2Vec2ForSequenceClassification"],
            "id2label": dict(enumerate(LABELS)),
            "label2id": {k: i for i, k in enumerate(LABELS)},
            "classifier_proj_size": 256,
            "use_weighted_layer_sum": False,
        }
    )


def pooled_logits(model: Wav2Vec2ForSequenceClassification, waves: list[Tensor]) -> Tensor:
    """model(waves), on the fast training forward."""
    h = training_hidden(model, waves)
    projected = h.with_data(model.projector(h.data))
    return model.classifier(torch.stack([x.mean(dim=0) for x in projected.split()]))


@torch.no_grad()
def accuracy(
    model: Wav2Vec2ForSequenceClassification, waves: list[Tensor], labels: Tensor
) -> dict[str, Any]:
    """Through the serving forward, 64 clips a call; also the per-label accuracy."""
    model.eval()
    with use_kernel(model, "auto"):
        preds = torch.cat([model(waves[i : i + 64]).argmax(-1) for i in range(0, len(waves), 64)])
    model.train()
    per_label = {
        LABELS[k]: float((preds[labels == k] == k).float().mean()) for k in range(len(LABELS))
    }
    return {
        "accuracy": float((preds == labels).float().mean()),
        "n": len(waves),
        "per_label": per_label,
    }


def model_card(record: dict[str, Any]) -> str:
    rows = [
        f"| {name} | {r['n']} | {100 * r['accuracy']:.1f}% | "
        f"{', '.join(f'{k} {100 * v:.0f}%' for k, v in r['per_label'].items())} |"
        for name, r in record["eval"].items()
    ]
    return "\n".join(
        [
            "# demo-commands: spoken-command classifier on synthetic English speech",
            "",
            "The service's embedded default for `/v1/classify`: a Wav2Vec2ForSequenceClassification "
            f"({record['parameters'] / 1e6:.2f} M parameters, fp16 weights) that labels a short clip "
            f"as one of {', '.join(COMMANDS)}, or `{UNKNOWN}` for any other word. Its encoder is "
            "the CTC demo model's (`service/models/demo-ctc`), fine-tuned with a mean-pooled head on "
            "one-word clips synthesized by espeak-ng. It has never heard a human voice.",
            "",
            "## Held-out accuracy",
            "",
            "| held-out set | clips | accuracy | per label |",
            "|---|---|---|---|",
            *rows,
            "",
            "- seen: new renderings (speeds, pitches, placement, noise) with the training voices;",
            f"- voices: the voice variants never trained on ({', '.join(HELDOUT_VARIANTS)}).",
            "",
            "## Recipe",
            "",
            f"- Data: {record['train_clips']:,} clips of 0.8-2 s, one word each at 0-0.6 s, "
            f"{len(VOICES)} espeak-ng English voices x {len(seen_variants())} variants, 120-230 wpm, "
            "pitch 20-80, peak gain 0.3-1.0, Gaussian noise at 15-45 dB SNR on 70%. The unknown "
            f"words ({len(unknown_words())}) are common words (`wordfreq`) whose espeak-ng "
            "phonemes differ from every command's.",
            f"- Init: {record['init']}; AdamW, peak LR {record['lr']:g}, warmup then cosine, "
            f"batches of {record['batch']} clips, cross-entropy; weight average (EMA) exported.",
            f"- {record['minutes']:.0f} min, {record['steps']} steps on {record['machine']}; "
            f"command: `{record['command']}` ({record['started']}).",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--init", type=Path, default=export.MODEL_DIR, help="CTC model to start from")
    p.add_argument("--run", type=Path, default=RUNS_DIR / "commands")
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--train-clips", type=int, default=12_000)
    p.add_argument("--heldout-clips", type=int, default=1_100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--ema", type=float, default=0.99)
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)

    train_x, train_y = load_split("train", args.train_clips, seen_variants())
    heldout = {
        "seen": load_split("heldout-seen", args.heldout_clips, seen_variants()),
        "voices": load_split("heldout-voices", args.heldout_clips, HELDOUT_VARIANTS),
    }
    config = classifier_config(Wav2Vec2Config.from_file(args.init / "config.json"))
    model = Wav2Vec2ForSequenceClassification(config)
    encoder = {
        k: v.float()
        for k, v in rename(read_weights(args.init), config, pretraining=False).items()
        if k.startswith("wav2vec2.")
    }
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    assert not unexpected and all(k.startswith(("projector", "classifier")) for k in missing)
    model.train()
    averaged = copy.deepcopy(model)
    dtype = choose_dtype(args.dtype)
    decay = [q for n, q in model.named_parameters() if q.ndim >= 2 and "norm" not in n]
    rest = [q for n, q in model.named_parameters() if not (q.ndim >= 2 and "norm" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}], lr=args.lr
    )
    record: dict[str, Any] = {
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(dtype),
        "init": f"encoder of {args.init.name} "
        f"(round {len(json.loads((args.init / 'training.json').read_text())['rounds'])})",
        "command": "python -m training.commands "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "parameters": sum(q.numel() for q in model.parameters()),
        "train_clips": len(train_x),
        "lr": args.lr,
        "batch": args.batch,
    }
    print(
        f"{len(train_x)} training clips, {len(unknown_words())} unknown words; {record['machine']}",
        flush=True,
    )

    rng = np.random.default_rng(0)
    order = rng.permutation(len(train_x))
    start, step, warmup = time.monotonic(), 0, 50
    bar = tqdm(unit="step", mininterval=20, file=sys.stdout)
    while True:
        frac = (time.monotonic() - start) / (args.minutes * 60)
        if frac >= 1 or (args.max_steps is not None and step >= args.max_steps):
            break
        if len(order) < args.batch:
            order = rng.permutation(len(train_x))
        idx, order = order[: args.batch], order[args.batch :]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            logits = pooled_logits(model, [train_x[i] for i in idx])
        loss = F.cross_entropy(logits.float(), train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        lr = args.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * frac))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        update_average(averaged, model, min(args.ema, (1 + step) / (10 + step)))
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{lr:.1e}", refresh=False)
        if step % 200 == 0:
            tqdm.write(
                f"[eval] step {step}: "
                + ", ".join(
                    f"{k} {100 * accuracy(averaged, *v)['accuracy']:.1f}%"
                    for k, v in heldout.items()
                ),
                file=sys.stdout,
            )
    bar.close()
    record.update(
        minutes=(time.monotonic() - start) / 60,
        steps=step,
        eval={k: accuracy(averaged, *v) for k, v in heldout.items()},
    )
    export.save_directory(
        averaged,
        config,
        args.run / "export",
        README=model_card(record),
        **{"training.json": record},
    )
    print(
        "[final] "
        + ", ".join(f"{k} accuracy {100 * v['accuracy']:.1f}%" for k, v in record["eval"].items()),
        flush=True,
    )


if __name__ == "__main__":
    main()
