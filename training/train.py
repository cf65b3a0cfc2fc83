"""Train the demo CTC model in rounds on the espeak-ng corpus of training/data.py.

    python -m training.train --from-scratch --minutes 120 --run training/runs/round1   # round 1
    python -m training.train --minutes 120 --run training/runs/round2                  # round N

A round warm-starts from the weights committed in service/models/demo-ctc (no optimizer
state, short warmup) unless --from-scratch. Every --export-every minutes and at the end it
exports the best checkpoint so far (by mean held-out CER) to RUN/export, a complete model
directory with its card (and at the end the last weights to RUN/last); training.ship copies
RUN/export into service/models/demo-ctc, and committing it is what makes the round count.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from service.wav2vec2.attention import use_kernel
from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.features import normalize
from service.wav2vec2.heads import Wav2Vec2ForCTC
from training import export
from training.corpus import Batches, Split
from training.data import DATA_DIR, HELDOUT_SETS, SAMPLE_RATE
from training.forward import ctc_loss, evaluate, mean_cer, training_logits
from training.hardware import ActiveClock, choose_dtype, machine
from training.optim import lr_at, optimizer, update_average
from training.record import data_description, recipe
from training.weights import check_grown, grow, load_weights, model_config

# Re-exported for older callers (tests, scripts): the round's pieces now live in these modules.
__all__ = ["RUNS_DIR", "check_grown", "grow", "load_weights", "main", "model_config"]

RUNS_DIR = Path(__file__).parent / "runs"


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
    p.add_argument(
        "--layers",
        type=int,
        default=None,
        help="grow a warm start to this many transformer layers (new: identity)",
    )
    p.add_argument(
        "--long-fraction",
        type=float,
        default=0.0,
        help="share of steps on joined multi-sentence recordings (long audio), one per batch",
    )
    p.add_argument(
        "--long-seconds",
        type=float,
        nargs=2,
        default=(10.0, 28.0),
        help="length range of a joined recording",
    )
    p.add_argument("--eval-every", type=float, default=5.0, help="minutes")
    p.add_argument("--export-every", type=float, default=10.0, help="minutes")
    p.add_argument("--eval-n", type=int, default=30, help="utterances per held-out set")
    p.add_argument("--final-eval-n", type=int, default=None, help="default: whole sets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="training forward; auto: bf16 autocast where measured faster",
    )
    p.add_argument(
        "--ema",
        type=float,
        default=0.999,
        help="decay of the weight average that is evaluated and exported (0: off)",
    )
    p.add_argument(
        "--check", action="store_true", help="verify the padded front end equals model(waves) first"
    )
    args = p.parse_args(argv)
    scratch = args.from_scratch
    args.lr = args.lr or (2e-3 if scratch else 1e-3)
    args.warmup = args.warmup if args.warmup is not None else (100 if scratch else 30)
    if args.curriculum_steps is None:
        args.curriculum_steps = 400 if scratch else 0
    return args


def initial_model(args: argparse.Namespace) -> tuple[Wav2Vec2ForCTC, dict[str, Any], str]:
    """Round 1's random model, or the committed weights (grown if asked); the rounds so far;
    how the round started, in words."""
    if args.from_scratch:
        return Wav2Vec2ForCTC(model_config(args.first_conv)), {"rounds": []}, "scratch"
    config = Wav2Vec2Config.from_file(args.init / "config.json")
    model = Wav2Vec2ForCTC(config)
    load_weights(model, args.init)
    # Only the rounds carry over: scores and checks belong to the weights they measured.
    history = {"rounds": json.loads((args.init / "training.json").read_text())["rounds"]}
    init = f"round {len(history['rounds'])} weights"
    if args.layers and args.layers > config.num_hidden_layers:
        before, model = model, grow(model, args.layers)
        check_grown(before, model)
        init += f", grown to {args.layers} layers"
    return model, history, init


def check_training_forward(model: Wav2Vec2ForCTC, train: Split) -> None:
    """--check: the fast training forward equals the serving one, model(waves)."""
    clips = [train.clip(i) for i in range(5)]
    with torch.no_grad():
        a = training_logits(model, clips)
        with use_kernel(model, "auto"):
            b = model(clips)
    diff = float((a.data - b.data).abs().max())
    assert a.lengths == b.lengths and diff < 1e-4, (a.lengths, b.lengths, diff)
    print(f"training forward == model(waves): max |diff| {diff:.1e}", flush=True)


def round_record(
    args: argparse.Namespace,
    argv: list[str] | None,
    history: dict[str, Any],
    model: Wav2Vec2ForCTC,
    train: Split,
    init: str,
    dtype: torch.dtype,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """This round's entry, and the history with it appended (what training.json holds)."""
    params = sum(p.numel() for p in model.parameters())
    entry: dict[str, Any] = {
        "round": len(history["rounds"]) + 1,
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(dtype),
        "init": init,
        "command": "python -m training.train " + " ".join(sys.argv[1:] if argv is None else argv),
        "train_utterances": len(train),
        "train_hours": round(train.hours(), 2),
        "eval_n": args.eval_n,
        "minutes": 0.0,
        "steps": 0,
        "audio_hours": 0.0,
        "status": "started",
        "curve": [],
    }
    history = {
        **history,
        "parameters": params,
        "layers": model.config.num_hidden_layers,
        "recipe": recipe(model.config, args, params),
        "data": {"description": data_description(train)},
        "rounds": [*history["rounds"], entry],
    }
    return entry, history


class Round:
    """One round: the training loop with its periodic evaluation and export, then the final
    scoring of the best weights."""

    def __init__(
        self,
        args: argparse.Namespace,
        argv: list[str] | None,
        model: Wav2Vec2ForCTC,
        history: dict[str, Any],
        init: str,
    ) -> None:
        self.args, self.model, self.config = args, model, model.config
        params = sum(p.numel() for p in model.parameters())
        self.dtype = choose_dtype(args.dtype)
        # What is evaluated and exported: the weight average, or the weights themselves.
        self.averaged = copy.deepcopy(model) if args.ema > 0 else model
        shards = sorted(f.stem for f in args.data.glob("train-*.json"))
        self.train, self.shards = Split.load(args.data, shards), len(shards)
        self.heldout = {k: Split.load(args.data, [f"heldout-{k}"]) for k in HELDOUT_SETS}
        self.budget = int(args.batch_seconds * SAMPLE_RATE)
        print(
            f"{params / 1e6:.2f} M parameters, init: {init}; {len(self.train)} training "
            f"utterances ({self.train.hours():.1f} h, {len(shards)} shards); "
            f"{machine(self.dtype)}",
            flush=True,
        )
        if args.check:
            check_training_forward(model, self.train)
        self.entry, self.history = round_record(
            args, argv, history, model, self.train, init, self.dtype
        )
        self.opt = optimizer(model, args)
        self.batches = Batches(self.train.length, self.budget, args.seed + self.entry["round"])
        self.longest = float(self.train.length.max())
        self.long_rng = np.random.default_rng(args.seed + 1000 + self.entry["round"])
        self.best: dict[str, Any] = {
            "cer": float("inf"),
            "state": copy.deepcopy(self.averaged.state_dict()),
            "eval": None,
            "step": 0,
        }
        self.clock = ActiveClock()
        # A warm start is scored before its first step, so a round never exports worse weights.
        self.next_eval = 0.0 if not args.from_scratch else args.eval_every * 60
        self.next_export = args.export_every * 60
        self.audio_seconds, self.loss_ema, self.step = 0.0, None, 0

    def run(self) -> None:
        """Steps until the time budget (or --max-steps) is spent, evaluating and exporting."""
        args = self.args
        self.bar = tqdm(unit="step", mininterval=20, smoothing=0.05, file=sys.stdout)
        while True:
            elapsed = self.clock()
            done = elapsed >= args.minutes * 60 or (
                args.max_steps is not None and self.step >= args.max_steps
            )
            if elapsed >= self.next_eval or done:
                if not done:
                    self.add_new_shards()
                self.evaluate(elapsed)
                self.next_eval = self.clock() + args.eval_every * 60
            if done:
                break
            if self.clock() >= self.next_export:
                self.export_best(f"in progress ({elapsed / 60:.0f} of {args.minutes:.0f} min)")
                tqdm.write(
                    f"[export] best (mean CER {100 * self.best['cer']:.1f}%) -> "
                    f"{args.run / 'export'}",
                    file=sys.stdout,
                )
                self.next_export = self.clock() + args.export_every * 60
            self.train_step(elapsed)
        self.bar.close()

    def add_new_shards(self) -> None:
        """Shards that `training.data` synthesized in the background since the round started
        join it (so a round can start before the corpus is complete)."""
        args = self.args
        shards = sorted(f.stem for f in args.data.glob("train-*.json"))
        if len(shards) <= self.shards:
            return
        self.train, self.shards = Split.load(args.data, shards), len(shards)
        seed = args.seed + self.entry["round"] + len(shards)
        self.batches = Batches(self.train.length, self.budget, seed)
        self.longest = float(self.train.length.max())
        hours = round(self.train.hours(), 2)
        self.entry.update(train_utterances=len(self.train), train_hours=hours)
        self.history["data"] = {"description": data_description(self.train)}
        tqdm.write(f"[data] {len(shards)} shards, {self.train.hours():.1f} h", file=sys.stdout)

    def train_step(self, elapsed: float) -> None:
        args, step, train = self.args, self.step, self.train
        cap = None
        if step < args.curriculum_steps:
            cap = (
                2.5 * SAMPLE_RATE
                + (self.longest - 2.5 * SAMPLE_RATE) * step / args.curriculum_steps
            )
        t0 = time.monotonic()
        if self.long_rng.random() < args.long_fraction:
            # Long audio: the corpus's utterances last 1-8 s, and a model that never heard
            # more than that garbles 30 s windows of several sentences (training.longform).
            samples, text = train.joined(self.long_rng, self.long_rng.uniform(*args.long_seconds))
            waves, texts = [torch.from_numpy(normalize(samples))], [text]
            seconds = len(samples) / SAMPLE_RATE
        else:
            idx = self.batches.next(cap)
            waves = [train.clip(int(i)) for i in idx]
            texts = [train.texts[int(i)] for i in idx]
            seconds = float(train.length[idx].sum()) / SAMPLE_RATE
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16):
            logits = training_logits(self.model, waves)
        loss = ctc_loss(logits, texts)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.clip)
        lr = lr_at(step, elapsed / (args.minutes * 60), args)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        if self.averaged is not self.model:
            update_average(self.averaged, self.model, min(args.ema, (1 + step) / (10 + step)))
        self.step += 1
        self.audio_seconds += seconds
        value = float(loss.detach())
        self.loss_ema = value if self.loss_ema is None else 0.95 * self.loss_ema + 0.05 * value
        self.bar.update()
        self.bar.set_postfix(
            loss=f"{self.loss_ema:.3f}",
            lr=f"{lr:.1e}",
            xrt=f"{seconds / (time.monotonic() - t0):.1f}",
            refresh=False,
        )

    def evaluate(self, elapsed: float) -> None:
        """A point of the learning curve; the best weights so far kept by mean CER."""
        evals = evaluate(self.averaged, self.heldout, self.args.eval_n, self.budget)
        point = {
            "minutes": round(elapsed / 60, 1),
            "steps": self.step,
            "audio_hours": round(self.audio_seconds / 3600, 2),
            "loss": None if self.loss_ema is None else round(self.loss_ema, 4),  # JSON null
            "eval": evals,
        }
        self.entry["curve"].append(point)
        self.entry.update(
            minutes=point["minutes"], steps=self.step, audio_hours=point["audio_hours"]
        )
        if mean_cer(evals) < self.best["cer"]:
            self.best = {
                "cer": mean_cer(evals),
                "state": copy.deepcopy(self.averaged.state_dict()),
                "eval": evals,
                "step": self.step,
            }
        tqdm.write(
            f"[eval] {point['minutes']:.1f} min, step {self.step}, "
            f"{point['audio_hours']:.2f} h audio, loss {export.loss_text(point['loss'])}: "
            + ", ".join(
                f"{k} CER {100 * v['cer']:.1f}% WER {100 * v['wer']:.1f}%" for k, v in evals.items()
            ),
            file=sys.stdout,
        )
        sys.stdout.flush()

    def export_best(self, status: str) -> None:
        """The best weights so far to RUN/export, and training.json beside it."""
        self.entry["status"] = status
        if self.best["eval"] is not None:
            self.entry["eval"] = self.best["eval"]
        current = copy.deepcopy(self.averaged.state_dict())
        self.averaged.load_state_dict(self.best["state"])
        export.save(self.averaged, self.config, self.args.run / "export", self.history)
        self.averaged.load_state_dict(current)
        (self.args.run / "training.json").write_text(json.dumps(self.history, indent=1))

    def score(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], list[str]]:
        """Greedy scores of `state` on the whole held-out sets (--final-eval-n), and its
        transcripts."""
        self.model.load_state_dict(state)
        hyps: list[str] = []
        return evaluate(self.model, self.heldout, self.args.final_eval_n, self.budget, hyps), hyps

    def finish(self) -> None:
        """The round's weights, chosen on the whole held-out sets: the curve's best checkpoint
        and the last weights are both scored there and the better one is exported, with its
        fp16 check. The curve's 30-utterance subsets are too noisy to choose by alone: round
        13's start led them by 0.1 point of mean CER, yet trailed its last weights by 0.24 on
        the whole sets (5.00% against 4.76%). The last weights also go to RUN/last with their
        own scores, so that a next round can go on from them (`--init RUN/last`, as after the
        unshipped 12-layer round 10, training/checkpoints/round10-grown-12-layers) or average
        them (training.average)."""
        last = copy.deepcopy(self.averaged.state_dict())
        scored = {"last": self.score(last)}
        self.entry.update(status="finished", eval=scored["last"][0])
        export.save(self.averaged, self.config, self.args.run / "last", self.history)
        if self.best["step"] != self.step:
            scored["best"] = self.score(self.best["state"])
        chosen = min(scored, key=lambda k: mean_cer(scored[k][0]))
        full, hyps32 = scored[chosen]
        state, step = (
            (last, self.step) if chosen == "last" else (self.best["state"], self.best["step"])
        )
        self.best = {"cer": mean_cer(full), "state": state, "eval": full, "step": step}
        fp16 = copy.deepcopy(self.model)
        fp16.load_state_dict({k: v.half().float() for k, v in state.items()})
        hyps16: list[str] = []
        full16 = evaluate(fp16, self.heldout, self.args.final_eval_n, self.budget, hyps16)
        self.history["fp16_check"] = {
            "fp32_cer": mean_cer(full),
            "fp16_cer": mean_cer(full16),
            "n": len(hyps32),
            "changed": sum(a != b for a, b in zip(hyps32, hyps16)),
        }
        self.export_best("finished")
        print(
            f"[final] {chosen} weights: "
            + ", ".join(
                f"{k} CER {100 * v['cer']:.1f}% WER {100 * v['wer']:.1f}%" for k, v in full.items()
            )
            + f"; fp16 mean CER {100 * mean_cer(full16):.2f}% vs fp32 "
            f"{100 * mean_cer(full):.2f}%",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal activations early in training slow steps down
    torch.manual_seed(args.seed)
    args.run.mkdir(parents=True, exist_ok=True)
    model, history, init = initial_model(args)
    model.train()
    training_round = Round(args, argv, model, history, init)
    training_round.run()
    training_round.finish()


if __name__ == "__main__":
    main()
