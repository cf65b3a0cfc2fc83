"""The speaker-embedding demo model: a Wav2Vec2ForXVector on espeak-ng voices.

    python -m training.speakers --minutes 15 --threads 1    # -> training/runs/speakers/export
    python -m training.speakers --examples                  # examples/voice_*.wav

A "speaker" is an espeak-ng voice (8 English accents and 8 other languages' voices reading
English) under one voice variant, at its own base pitch; every clip is a new sentence at a new
speed. Fine-tunes the first layers of the committed CTC demo model (service/models/demo-ctc)
under transformers' XVector head with an angular prototypical loss on the embeddings (the cosine
/v1/verify compares), on batches where pairs of speakers share a variant (the hard negatives).
transformers' own AM-softmax over training speakers is not used: in a 15-minute budget each of
~1,400 speakers comes round about twice, too few to learn its class direction (measured: with
it, random batches and LR 5e-4, held-out EER was 46% after 100 steps, near chance; without it,
as below, 28%), so the checkpoint's `objective` holds 2 unused rows, as transformers' default
num_labels gives it.
Held out: every speaker of the voice variants the CTC corpus never trained on (equal error rate
reported); a dev set of speakers unseen in training but with training variants picks the
/v1/verify threshold, written into config.json as `verify_threshold`. Copy the export over
service/models/demo-speakers to ship it.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from service.wav2vec2.features import normalize
from service.wav2vec2.heads import Head, Wav2Vec2ForXVector
from service.wav2vec2.packed import Packed
from training import export, finetune
from training.data import HELDOUT_VARIANTS, SAMPLE_RATE, VOICES, _rng, espeak, seen_variants
from training.examples import EXAMPLES_DIR
from training.forward import training_hidden
from training.sentences import RESERVED, natural_sentence, random_sequence
from training.train import RUNS_DIR

MODEL_DIR = export.MODEL_DIR.parent / "demo-speakers"
DATA_DIR = Path(__file__).parent / "data" / "speakers"
# Other languages' voices reading English: new accents, the same variants' timbres.
LANGUAGE_VOICES = ("de", "fr-fr", "es", "it", "pt", "nl", "pl", "sv")
ALL_VOICES = (*VOICES, *LANGUAGE_VOICES)
DEV_SPEAKERS = 48
HELDOUT_SPEAKERS = 80
CLIPS_PER_EVAL_SPEAKER = 4
MAX_TRAIN_SECONDS = 2.0  # training crops: the encoder's cost grows with length


@dataclass(frozen=True)
class Speaker:
    voice: str
    variant: str

    @property
    def name(self) -> str:
        return f"{self.voice}+{self.variant}" if self.variant else self.voice

    @property
    def pitch(self) -> int:
        """The speaker's own base pitch (espeak-ng -p), 25-75, fixed by its name."""
        return 25 + zlib.crc32(self.name.encode()) % 51


@dataclass(frozen=True)
class Clip:
    speaker: int  # index into its split's speakers
    text: str
    speed: int
    pitch: int
    lead_s: float
    tail_s: float
    gain: float
    snr_db: float | None
    seed: int


@cache
def speakers() -> dict[str, tuple[Speaker, ...]]:
    """train / dev (unseen speakers, training variants) / heldout (held-out variants)."""
    seen = [Speaker(v, var) for v in ALL_VOICES for var in seen_variants()]
    order = _rng("speakers", "dev").permutation(len(seen))
    heldout = [Speaker(v, var) for v in ALL_VOICES for var in HELDOUT_VARIANTS]
    pick = _rng("speakers", "heldout").permutation(len(heldout))[:HELDOUT_SPEAKERS]
    return {
        "train": tuple(seen[i] for i in sorted(order[DEV_SPEAKERS:])),
        "dev": tuple(seen[i] for i in sorted(order[:DEV_SPEAKERS])),
        "heldout": tuple(heldout[i] for i in sorted(pick)),
    }


def plan(name: str, n: int, num_speakers: int) -> list[Clip]:
    """n clips, speakers in turn (n / num_speakers each), a pure function of the arguments."""
    rng = _rng("speakers", name, n)
    out = []
    for k in range(n):
        text = natural_sentence(rng) if rng.random() < 0.5 else random_sequence(rng)
        while len(text.split()) < 3:  # a second or more of speech to tell a voice by
            text += " " + random_sequence(rng)
        out.append(
            Clip(
                speaker=k % num_speakers,
                text=" ".join(text.split()[:10]),
                speed=int(rng.integers(130, 201)),
                pitch=int(rng.integers(-4, 5)),
                lead_s=round(float(rng.uniform(0, 0.3)), 3),
                tail_s=round(float(rng.uniform(0, 0.3)), 3),
                gain=round(float(rng.uniform(0.3, 1.0)), 3),
                snr_db=round(float(rng.uniform(15, 45)), 1) if rng.random() < 0.5 else None,
                seed=int(rng.integers(2**31)),
            )
        )
    return out


def render(c: Clip, speaker: Speaker) -> np.ndarray:
    """The sentence in the speaker's voice at pitch +- 4, silence either side, noise; int16."""
    speech = espeak(c.text, speaker.voice, speaker.variant, c.speed, speaker.pitch + c.pitch)
    speech = speech / max(float(np.abs(speech).max()), 1e-6) * c.gain
    lead, tail = int(c.lead_s * SAMPLE_RATE), int(c.tail_s * SAMPLE_RATE)
    x = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(tail, np.float32)])
    if c.snr_db is not None:
        sigma = (float(np.mean(speech**2)) / 10 ** (c.snr_db / 10)) ** 0.5
        x = x + np.random.default_rng(c.seed).normal(0, sigma, len(x)).astype(np.float32)
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def load_split(name: str, n: int) -> tuple[list[np.ndarray], Tensor]:
    """(int16 clips, speaker index per clip), synthesized once into training/data/speakers."""
    group = speakers()[name]
    clips = plan(name, n, len(group))
    path = DATA_DIR / f"{name}-{n}.npz"
    if not path.exists():
        audio = [render(c, group[c.speaker]) for c in clips]
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        np.savez(path, audio=np.concatenate(audio), lengths=np.array([len(a) for a in audio]))
        print(
            f"{path.name}: {len(audio)} clips, {sum(map(len, audio)) / SAMPLE_RATE / 3600:.2f} h",
            flush=True,
        )
    with np.load(path) as stored:
        audio, lengths = stored["audio"], stored["lengths"]
    bounds = np.cumsum([0, *lengths])
    return (
        [audio[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
        torch.tensor([c.speaker for c in clips]),
    )


def as_input(x: np.ndarray) -> Tensor:
    return torch.from_numpy(normalize(x.astype(np.float32) / 32768))


def xvector_config(init: Path, layers: int) -> Any:
    """The CTC encoder's first layers under a compact x-vector head (transformers' layout)."""
    return finetune.head_config(
        init,
        layers,
        architectures=["Wav2Vec2ForXVector"],
        id2label={0: "LABEL_0", 1: "LABEL_1"},
        label2id={"LABEL_0": 0, "LABEL_1": 1},
        tdnn_dim=[256, 256, 256, 512],
        tdnn_kernel=[5, 3, 3, 1],
        tdnn_dilation=[1, 2, 3, 1],
        xvector_output_dim=128,
        use_weighted_layer_sum=False,
    )


def embeddings_fast(model: Wav2Vec2ForXVector, waves: list[Tensor]) -> Tensor:
    """model(waves) on the fast training forward: the TDNN stack runs once on the padded batch
    (a valid convolution: the first T_i - shrink outputs of row i are clip i's own)."""
    h = training_hidden(model, waves)
    x = Packed(model.projector(h.data), h.lengths).padded()  # (B, T_max, C)
    for layer in model.tdnn:
        x = layer(x)
    shrink = sum(lay.dilation * (lay.kernel_size - 1) for lay in model.tdnn)
    x = x.float()  # statistics in fp32 under bf16 autocast
    stats = [
        torch.cat([x[i, : n - shrink].mean(0), x[i, : n - shrink].std(0)])
        for i, n in enumerate(h.lengths)
    ]
    return model.feature_extractor(torch.stack(stats))  # (B, xvector_output_dim)


class Prototypical(nn.Module):
    """Angular prototypical loss (Chung et al. 2020) on batches of P speakers x 2 clips: each
    speaker's first clip must be nearest, by cosine, to its own second clip."""

    def __init__(self) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(torch.tensor(10.0)), nn.Parameter(torch.tensor(-5.0))

    def forward(self, embeddings: Tensor) -> Tensor:
        e = F.normalize(embeddings.view(-1, 2, embeddings.shape[-1]), dim=-1)  # (P, 2, D)
        cos = e[:, 0] @ e[:, 1].T  # (P, P)
        logits = self.w.clamp(min=1e-3) * cos + self.b
        return F.cross_entropy(logits, torch.arange(len(cos)))


def batches(
    clips: list[np.ndarray],
    labels: Tensor,
    group: tuple[Speaker, ...],
    pairs: int,
    rng: np.random.Generator,
) -> Iterator[list[Tensor]]:
    """`pairs` speakers x 2 of their clips, each cropped at random to MAX_TRAIN_SECONDS; the
    speakers come two by two under one variant (same timbre, another accent and pitch)."""
    by_speaker: dict[int, list[int]] = {}
    for i, s in enumerate(labels.tolist()):
        by_speaker.setdefault(s, []).append(i)
    by_variant: dict[str, list[int]] = {}
    for s, idx in by_speaker.items():
        if len(idx) >= 2:
            by_variant.setdefault(group[s].variant, []).append(s)
    variants = [v for v, ss in by_variant.items() if len(ss) >= 2]
    limit = int(MAX_TRAIN_SECONDS * SAMPLE_RATE)
    while True:
        chosen = [
            s
            for v in rng.choice(variants, pairs // 2, replace=False)
            for s in rng.choice(by_variant[v], 2, replace=False)
        ]
        waves = []
        for s in chosen:
            for i in rng.choice(by_speaker[s], 2, replace=False):
                x = clips[i]
                start = int(rng.integers(0, len(x) - limit + 1)) if len(x) > limit else 0
                waves.append(as_input(x[start : start + limit]))
        yield waves


@torch.no_grad()
def embed(model: Wav2Vec2ForXVector, clips: list[np.ndarray]) -> np.ndarray:
    """Unit-length embeddings through the serving forward, 32 clips a call."""
    model.eval()
    out = torch.cat(
        [model([as_input(x) for x in clips[i : i + 32]]) for i in range(0, len(clips), 32)]
    )
    return F.normalize(out, dim=-1).numpy()


def trial_scores(emb: np.ndarray, labels: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of every pair of clips: (same-speaker scores, different-speaker scores)."""
    cos = emb @ emb.T
    same = labels[:, None].numpy() == labels[None, :].numpy()
    upper = np.triu(np.ones_like(same), k=1)
    return cos[same & upper], cos[~same & upper]


def equal_error(same: np.ndarray, different: np.ndarray) -> tuple[float, float]:
    """(equal error rate, the threshold where false accepts and false rejects meet)."""
    thresholds = np.sort(np.concatenate([same, different]))
    false_reject = np.searchsorted(np.sort(same), thresholds, side="left") / len(same)
    false_accept = 1 - np.searchsorted(np.sort(different), thresholds, side="left") / len(different)
    k = int(np.argmin(np.abs(false_accept - false_reject)))
    return float((false_accept[k] + false_reject[k]) / 2), float(thresholds[k])


def rates_at(same: np.ndarray, different: np.ndarray, threshold: float) -> dict[str, float]:
    """What /v1/verify answers at `threshold` (same_speaker = score >= threshold)."""
    return {
        "false_reject": float(np.mean(same < threshold)),
        "false_accept": float(np.mean(different >= threshold)),
    }


def evaluate(model: Wav2Vec2ForXVector, split: tuple[list[np.ndarray], Tensor]) -> dict[str, Any]:
    was_training = model.training
    same, different = trial_scores(embed(model, split[0]), split[1])
    eer, threshold = equal_error(same, different)
    model.train(was_training)
    return {
        "eer": eer,
        "threshold": threshold,
        "clips": len(split[0]),
        "speakers": int(split[1].unique().numel()),
        "same_trials": len(same),
        "different_trials": len(different),
    }


def model_card(record: dict[str, Any]) -> str:
    held, dev = record["eval"]["heldout"], record["eval"]["dev"]
    at = record["heldout_at_threshold"]
    return "\n".join(
        [
            "# demo-speakers: speaker embeddings for synthetic voices",
            "",
            "The service's embedded default for `/v1/embed` and `/v1/verify`: a Wav2Vec2ForXVector "
            f"({record['parameters'] / 1e6:.2f} M parameters, fp16 weights) whose 128-dimensional "
            "`embeddings` output is close, by cosine, for two clips of the same espeak-ng voice and "
            "far for different ones. Its conv front end and first "
            f"{record['layers']} transformer layers start from the CTC demo model "
            "(`service/models/demo-ctc`). It has never heard a human voice: it tells espeak-ng "
            "voices apart, and is a demonstration of the endpoints, not a biometric.",
            "",
            f"`/v1/verify` threshold: **{record['verify_threshold']:.3f}** (cosine; `config.json` key "
            "`verify_threshold`), the equal-error point on the dev speakers below, never on the "
            "held-out ones.",
            "",
            "## Held-out figures",
            "",
            "| set | speakers | clips | same / different trials | EER | its threshold |",
            "|---|---|---|---|---|---|",
            *(
                f"| {name} | {r['speakers']} | {r['clips']} | {r['same_trials']:,} / "
                f"{r['different_trials']:,} | {100 * r['eer']:.1f}% | {r['threshold']:.3f} |"
                for name, r in (("held-out variants", held), ("dev (threshold)", dev))
            ),
            "",
            f"At the shipped threshold, held-out variants: {100 * at['false_reject']:.1f}% of "
            f"same-speaker pairs rejected, {100 * at['false_accept']:.1f}% of different-speaker "
            "pairs accepted.",
            "",
            f"- held-out variants: speakers under the voice variants never trained on "
            f"({', '.join(HELDOUT_VARIANTS)}), neither here nor in the CTC corpus;",
            "- dev: speakers never trained on, but with training variants (another accent or "
            "language under a known variant).",
            "",
            "A speaker is an espeak-ng voice (8 English accents and the voices of "
            f"{', '.join(LANGUAGE_VOICES)} reading English) under one variant, at its own base "
            "pitch; every trial compares two different sentences at different speeds, gains and "
            "noise. Different speakers that share a variant (the same timbre, another accent) are "
            "the hard trials.",
            *(["", record["limit"]] if record.get("limit") else []),
            "",
            "## Recipe",
            "",
            f"- Data: {record['train_clips']:,} clips of 3-10 words by {record['train_speakers']:,} "
            f"speakers ({len(ALL_VOICES)} voices x {len(seen_variants())} variants, less the dev "
            "speakers), 130-200 wpm, pitch +-4 around the speaker's, peak gain 0.3-1.0, Gaussian "
            f"noise at 15-45 dB SNR on half; crops of at most {MAX_TRAIN_SECONDS:g} s.",
            f"- Head: projector to 256, TDNN {record['tdnn']}, mean+std pooling, 128-d embeddings; "
            "loss: angular prototypical (Chung et al. 2020) on the embeddings, batches of "
            f"{record['pairs']} speakers x 2 clips, the speakers two by two under one variant. "
            "transformers' AM-softmax over training speakers is left out (too few visits per "
            "speaker in this budget to learn from; `classifier` and `objective` are untrained).",
            f"- Init: {record['init']}; AdamW, peak LR {record['lr']:g}, warmup then cosine; "
            "weight average (EMA) exported.",
            f"- {record['minutes']:.1f} min, {record['steps']} steps on {record['machine']}; "
            f"command: `{record['command']}` ({record['started']}).",
            *([f"- {record['note']}"] if record.get("note") else []),
            "",
        ]
    )


# examples/*.wav for /v1/verify: stem -> (sentence, voice, variant), speakers of held-out
# variants at their own pitch, 160 wpm. voice_a1 and voice_a2: one speaker, two sentences;
# voice_b: another speaker saying voice_a1's sentence.
EXAMPLES = {
    "voice_a1": ("please call me back after lunch", "en-us", "Andrea"),
    "voice_a2": ("the weather is nice today", "en-us", "Andrea"),
    "voice_b": ("please call me back after lunch", "en", "travis"),
}


def example(text: str, voice: str, variant: str) -> np.ndarray:
    """The sentence in the speaker's voice at 0.8 peak between 0.2 s of silence (float32)."""
    assert text in RESERVED, text
    speech = espeak(text, voice, variant, 160, Speaker(voice, variant).pitch)
    pad = np.zeros(SAMPLE_RATE // 5, np.float32)
    return np.concatenate([pad, 0.8 * speech / np.abs(speech).max(), pad])


def write_examples() -> None:
    import soundfile as sf

    for stem, spec in EXAMPLES.items():
        x = example(*spec)
        sf.write(EXAMPLES_DIR / f"{stem}.wav", x, SAMPLE_RATE, subtype="PCM_16")
        print(f"examples/{stem}.wav: {len(x) / SAMPLE_RATE:.2f} s, {spec}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--init", type=Path, default=export.MODEL_DIR, help="CTC model to start from")
    p.add_argument("--run", type=Path, default=RUNS_DIR / "speakers")
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--train-clips", type=int, default=6_000)
    p.add_argument("--pairs", type=int, default=12, help="speakers per batch (2 clips each)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    p.add_argument("--examples", action="store_true", help="only write examples/voice_*.wav")
    args = p.parse_args(argv)
    if args.examples:
        return write_examples()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)

    group = speakers()
    n_eval = CLIPS_PER_EVAL_SPEAKER
    train = load_split("train", args.train_clips)
    dev = load_split("dev", n_eval * len(group["dev"]))
    heldout = load_split("heldout", n_eval * len(group["heldout"]))
    config = xvector_config(args.init, args.layers)
    model = Wav2Vec2ForXVector(config)
    nn.init.normal_(model.objective.weight)  # as transformers starts it (unused here)
    finetune.load_encoder(model, args.init)
    proto = Prototypical()

    def loss(m: Head, waves: list[Tensor]) -> Tensor:
        assert isinstance(m, Wav2Vec2ForXVector)
        return proto(embeddings_fast(m, waves).float())

    def progress(m: Head) -> str:
        assert isinstance(m, Wav2Vec2ForXVector)
        r = evaluate(m, (heldout[0][:160], heldout[1][:160]))  # 2 clips of each speaker
        return f"held-out EER {100 * r['eer']:.1f}%"

    command = "python -m training.speakers " + " ".join(sys.argv[1:] if argv is None else argv)
    record: dict[str, Any] = {"started": finetune.started(), "command": command}
    averaged, run = finetune.fit(
        model,
        batches(*train, group["train"], args.pairs, np.random.default_rng(0)),
        loss,
        minutes=args.minutes,
        lr=args.lr,
        max_steps=args.max_steps,
        extra_params=list(proto.parameters()),
        dtype_name=args.dtype,
        evaluate=progress,
        eval_every=100,
    )
    assert isinstance(averaged, Wav2Vec2ForXVector)
    evals = {"heldout": evaluate(averaged, heldout), "dev": evaluate(averaged, dev)}
    threshold = round(evals["dev"]["threshold"], 4)
    held_same, held_diff = trial_scores(embed(averaged, heldout[0]), heldout[1])
    record.update(
        run,
        init=finetune.describe_init(args.init, args.layers),
        layers=args.layers,
        parameters=sum(q.numel() for q in averaged.parameters()),
        train_clips=len(train[0]),
        train_speakers=len(group["train"]),
        pairs=args.pairs,
        lr=args.lr,
        tdnn=list(config.tdnn_dim),
        eval=evals,
        verify_threshold=threshold,
        heldout_at_threshold=rates_at(held_same, held_diff, threshold),
    )
    config.extra["verify_threshold"] = threshold  # read by /v1/verify; transformers keeps it
    export.save_directory(
        averaged,
        config,
        args.run / "export",
        README=model_card(record),
        **{"training.json": record},
    )
    print(
        f"[final] held-out EER {100 * evals['heldout']['eer']:.2f}%, dev EER "
        f"{100 * evals['dev']['eer']:.2f}%, threshold {threshold}",
        flush=True,
    )


if __name__ == "__main__":
    main()
