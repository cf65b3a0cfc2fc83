"""The voice-activity demo model: a Wav2Vec2ForAudioFrameClassification with labels "speech"
and "noise" (multi-label: a frame can hold both, or neither: silence).

    python -m training.vad --minutes 15 --threads 1           # -> training/runs/vad/export
    python -m training.vad --examples                         # examples/speech_and_noise.wav

Mixtures of 4-8 s are built on the fly from a pool of espeak-ng utterances: 1-3 utterances at
random places (at least 0.4 s apart) over near-silence, and 0-2 noise events (white, pink or
brown noise, mains hum, or a tune of synthetic notes: "music or noise") that may overlap the
speech. Every boundary is known to the sample, so each 20 ms frame is labelled by its centre.
Fine-tunes the conv front end and first layers of the committed CTC demo model with a per-label
sigmoid (binary cross-entropy): /v1/frames reports runs of frames whose sigmoid is > 0.5.
Held out: mixtures of utterances by the voice variants the CTC corpus never trained on, with
their own noise draws. Copy the export over service/models/demo-vad to ship it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from service import decode
from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.features import normalize
from service.wav2vec2.heads import Head, Wav2Vec2ForAudioFrameClassification
from training import export, finetune
from training.data import HELDOUT_VARIANTS, SAMPLE_RATE, VOICES, _rng, espeak, seen_variants
from training.examples import EXAMPLES_DIR
from training.forward import training_hidden
from training.sentences import RESERVED, natural_sentence, random_sequence
from training.train import RUNS_DIR

MODEL_DIR = export.MODEL_DIR.parent / "demo-vad"
DATA_DIR = Path(__file__).parent / "data" / "vad"
LABELS = ("speech", "noise")
NOISE_KINDS = ("white", "pink", "brown", "hum", "tune")
MIX_SECONDS = (4.0, 8.0)
MIN_GAP_S = 0.4  # between two utterances: shorter reads as one run of speech
HELDOUT_MIXTURES = 200


@dataclass(frozen=True)
class Region:
    start: int  # samples
    end: int


@dataclass
class Mixture:
    audio: np.ndarray  # float32 at SAMPLE_RATE
    speech: list[Region]
    noise: list[Region]


def utterance_plan(name: str, n: int) -> list[tuple[str, str, str, int, int]]:
    """(text, voice, variant, wpm, pitch) per pool utterance; only "train" uses seen variants."""
    rng = _rng("vad", name, n)
    variants = seen_variants() if name == "train" else HELDOUT_VARIANTS
    out = []
    for _ in range(n):
        text = natural_sentence(rng) if rng.random() < 0.5 else random_sequence(rng)
        out.append(
            (
                " ".join(text.split()[:8]),
                VOICES[int(rng.integers(len(VOICES)))],
                variants[int(rng.integers(len(variants)))],
                int(rng.integers(120, 221)),
                int(rng.integers(20, 81)),
            )
        )
    return out


def load_pool(name: str, n: int) -> list[np.ndarray]:
    """Trimmed espeak-ng utterances at peak 1 (float32), synthesized once into training/data/vad."""
    path = DATA_DIR / f"{name}-{n}.npz"
    if not path.exists():
        audio = [espeak(*u) for u in utterance_plan(name, n)]
        audio = [(x / max(float(np.abs(x).max()), 1e-6) * 32767).astype(np.int16) for x in audio]
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        np.savez(path, audio=np.concatenate(audio), lengths=np.array([len(a) for a in audio]))
    with np.load(path) as stored:
        audio, lengths = stored["audio"], stored["lengths"]
    bounds = np.cumsum([0, *lengths])
    return [audio[a:b].astype(np.float32) / 32767 for a, b in zip(bounds[:-1], bounds[1:])]


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of one kind of noise at unit RMS."""
    if kind in ("white", "pink", "brown"):
        spectrum = np.fft.rfft(rng.normal(size=n))
        f = np.maximum(np.fft.rfftfreq(n), 1 / n)
        x = np.fft.irfft(spectrum / f ** {"white": 0.0, "pink": 0.5, "brown": 1.0}[kind], n)
    elif kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        base = float(rng.choice([50.0, 60.0]))
        x = sum(
            rng.uniform(0.2, 1) * np.sin(2 * np.pi * base * h * t + rng.uniform(0, 6.3))
            for h in (1, 2, 3, 5)
        )
    else:  # a tune: notes of 0.1-0.5 s, each a few harmonics under an attack-decay envelope
        x = np.zeros(n)
        pos = 0
        while pos < n:
            length = min(int(rng.uniform(0.1, 0.5) * SAMPLE_RATE), n - pos)
            t = np.arange(length) / SAMPLE_RATE
            freq = 220 * 2 ** (int(rng.integers(-12, 19)) / 12)
            harmonics = range(1, int(rng.integers(2, 6)))
            note = sum(np.sin(2 * np.pi * freq * h * t) / h for h in harmonics)
            x[pos : pos + length] = note * np.exp(-t * rng.uniform(1, 8)) * np.minimum(1, t / 0.01)
            pos += length
    x = np.asarray(x, np.float64)
    return (x / max(float(np.sqrt(np.mean(x**2))), 1e-9)).astype(np.float32)


def _place(rng: np.random.Generator, total: int, lengths: list[int], gap: int) -> list[int] | None:
    """Starts for segments of `lengths` in order, at least `gap` apart, inside total; or None."""
    slack = total - sum(lengths) - gap * (len(lengths) - 1)
    if slack < 0:
        return None
    cuts = np.sort(rng.uniform(0, slack, len(lengths)))
    starts, pos = [], 0
    for cut, length in zip(cuts, lengths):
        starts.append(int(cut) + pos)
        pos += length + gap
    return starts


def mix(rng: np.random.Generator, pool: list[np.ndarray]) -> Mixture:
    """One mixture: utterances and noise events at random, over near-silence."""
    total = int(rng.uniform(*MIX_SECONDS) * SAMPLE_RATE)
    audio = rng.normal(0, 10 ** rng.uniform(-4.5, -3), total).astype(np.float32)  # -90..-60 dB
    speech: list[Region] = []
    for count in range(int(rng.integers(1, 4)), 0, -1):  # fewer when they do not fit
        picks = [pool[int(i)] for i in rng.integers(0, len(pool), count)]
        starts = _place(rng, total, [len(x) for x in picks], int(MIN_GAP_S * SAMPLE_RATE))
        if starts is not None:
            for x, s in zip(picks, starts):
                audio[s : s + len(x)] += x * rng.uniform(0.2, 1.0)
                speech.append(Region(s, s + len(x)))
            break
    noises: list[Region] = []
    for _ in range(int(rng.choice(3, p=[0.25, 0.5, 0.25]))):
        length = int(rng.uniform(0.3, 0.8) * total)
        start = int(rng.integers(0, total - length + 1))
        level = 10 ** rng.uniform(-1.8, -0.7)  # RMS 0.016-0.2, speech RMS is ~0.03-0.2
        fade = np.minimum(1, np.minimum(np.arange(length), np.arange(length)[::-1]) / 80)
        audio[start : start + length] += (
            level * fade * noise(str(rng.choice(NOISE_KINDS)), length, rng)
        )
        noises.append(Region(start, start + length))
    peak = float(np.abs(audio).max())
    return Mixture(audio / peak * 0.9 if peak > 1 else audio, speech, _union(noises))


def _union(regions: list[Region]) -> list[Region]:
    out: list[Region] = []
    for r in sorted(regions, key=lambda r: r.start):
        if out and r.start <= out[-1].end:
            out[-1] = Region(out[-1].start, max(out[-1].end, r.end))
        else:
            out.append(r)
    return out


def frame_labels(m: Mixture, config: Wav2Vec2Config) -> Tensor:
    """(frames, labels) 0/1: a frame is labelled by the sample at its receptive field's centre."""
    frames = config.num_frames(len(m.audio))
    step, field = config.samples_per_frame, 400  # the conv front end's receptive field
    centres = np.arange(frames) * step + field // 2
    out = np.zeros((frames, len(LABELS)), np.float32)
    for k, regions in enumerate((m.speech, m.noise)):
        for r in regions:
            out[(centres >= r.start) & (centres < r.end), k] = 1
    return torch.from_numpy(out)


def vad_config(init: Path, layers: int) -> Wav2Vec2Config:
    return finetune.head_config(
        init,
        layers,
        architectures=["Wav2Vec2ForAudioFrameClassification"],
        id2label=dict(enumerate(LABELS)),
        label2id={k: i for i, k in enumerate(LABELS)},
        use_weighted_layer_sum=False,
    )


def batches(
    pool: list[np.ndarray], config: Wav2Vec2Config, size: int, rng: np.random.Generator
) -> Iterator[tuple[list[Tensor], Tensor]]:
    """Endless batches of fresh mixtures: (normalised clips, frame labels packed (N, 2))."""
    while True:
        mixtures = [mix(rng, pool) for _ in range(size)]
        yield (
            [torch.from_numpy(normalize(m.audio)) for m in mixtures],
            torch.cat([frame_labels(m, config) for m in mixtures]),
        )


def loss(model: Head, batch: tuple[list[Tensor], Tensor]) -> Tensor:
    assert isinstance(model, Wav2Vec2ForAudioFrameClassification)
    h = training_hidden(model, batch[0])
    return F.binary_cross_entropy_with_logits(model.classifier(h.data).float(), batch[1])


@torch.no_grad()
def frame_logits(
    model: Wav2Vec2ForAudioFrameClassification, clips: list[np.ndarray]
) -> list[np.ndarray]:
    """Per-clip (frames, labels) logits through the serving forward."""
    model.eval()
    out = []
    for i in range(0, len(clips), 16):
        out += [
            x.numpy()
            for x in model([torch.from_numpy(normalize(c)) for c in clips[i : i + 16]]).split()
        ]
    return out


def boundary_errors(truth: list[Region], found: list[tuple[float, float]]) -> list[float]:
    """Seconds from each true onset (offset) to the nearest found onset (offset)."""
    if not found:
        return []
    onsets = np.array([s for s, _ in found])
    offsets = np.array([e for _, e in found])
    out = []
    for r in truth:
        out.append(float(np.abs(onsets - r.start / SAMPLE_RATE).min()))
        out.append(float(np.abs(offsets - r.end / SAMPLE_RATE).min()))
    return out


def evaluate(model: Wav2Vec2ForAudioFrameClassification, mixtures: list[Mixture]) -> dict[str, Any]:
    """Frame accuracy per label, and speech boundaries as /v1/frames reports them."""
    config, was_training = model.config, model.training
    step_s = config.samples_per_frame / SAMPLE_RATE
    right = np.zeros(len(LABELS))
    both = frames = 0
    errors: list[float] = []
    found_segments = true_segments = missed = 0
    for m, logits in zip(mixtures, frame_logits(model, [m.audio for m in mixtures])):
        truth = frame_labels(m, config).numpy() > 0.5
        guess = logits > 0
        right += (truth == guess).sum(axis=0)
        both += int((truth == guess).all(axis=1).sum())
        frames += len(truth)
        found = [
            (s.start, s.end)
            for s in decode.segments(logits, config.id2label, step_s)
            if s.label == "speech"
        ]
        errors += boundary_errors(m.speech, found)
        missed += len(m.speech) if not found else 0
        found_segments += len(found)
        true_segments += len(m.speech)
    model.train(was_training)
    return {
        "frame_accuracy": {k: float(right[i] / frames) for i, k in enumerate(LABELS)},
        "frame_accuracy_both": both / frames,
        "mixtures": len(mixtures),
        "frames": frames,
        "boundary_error_s": float(np.mean(errors)),
        "boundary_error_median_s": float(np.median(errors)),
        "speech_segments": {"true": true_segments, "found": found_segments},
        "mixtures_without_speech_found": missed,
    }


def heldout_mixtures(n: int = HELDOUT_MIXTURES) -> list[Mixture]:
    pool = load_pool("heldout", 300)
    rng = _rng("vad", "heldout-mixtures")
    return [mix(rng, pool) for _ in range(n)]


# examples/speech_and_noise.wav, in order: (seconds of near-silence, or of pink noise alone)
# or (sentence, voice, variant) spoken by held-out variants; the last one over white noise.
EXAMPLE = (
    0.5,
    ("the weather is nice today", "en-us", "Andrea"),
    0.5,
    "noise 1.0",
    0.3,
    ("hello world", "en", "travis"),
    0.3,
)


def example_mixture() -> Mixture:
    """The example file's audio with its known speech and noise regions."""
    rng = np.random.default_rng(0)
    parts: list[np.ndarray] = []
    speech: list[Region] = []
    noises: list[Region] = []
    pos = 0
    for item in EXAMPLE:
        if isinstance(item, tuple):
            assert item[0] in RESERVED, item
            x = espeak(*item, 150, 50)
            x = 0.6 * x / np.abs(x).max()
            speech.append(Region(pos, pos + len(x)))
            if item is EXAMPLE[-2]:  # the last sentence over white noise (about 20 dB SNR)
                x = x + 0.1 * np.sqrt(np.mean(x**2)) * noise("white", len(x), rng)
                noises.append(Region(pos, pos + len(x)))
        elif isinstance(item, str):
            x = 0.05 * noise("pink", int(float(item.split()[1]) * SAMPLE_RATE), rng)
            noises.append(Region(pos, pos + len(x)))
        else:
            x = np.zeros(int(item * SAMPLE_RATE), np.float32)
        parts.append(x.astype(np.float32))
        pos += len(x)
    audio = np.concatenate(parts)
    audio += rng.normal(0, 1e-4, len(audio)).astype(np.float32)  # no digital silence
    return Mixture(audio, speech, noises)


def write_examples() -> None:
    import soundfile as sf

    m = example_mixture()
    sf.write(EXAMPLES_DIR / "speech_and_noise.wav", m.audio, SAMPLE_RATE, subtype="PCM_16")
    print(
        f"examples/speech_and_noise.wav: {len(m.audio) / SAMPLE_RATE:.2f} s; speech "
        f"{[(r.start / SAMPLE_RATE, r.end / SAMPLE_RATE) for r in m.speech]}, noise "
        f"{[(r.start / SAMPLE_RATE, r.end / SAMPLE_RATE) for r in m.noise]}"
    )


def model_card(record: dict[str, Any]) -> str:
    e = record["eval"]
    acc = e["frame_accuracy"]
    return "\n".join(
        [
            "# demo-vad: voice activity (speech / noise) for synthetic speech",
            "",
            "The service's embedded default for `/v1/frames`: a Wav2Vec2ForAudioFrameClassification "
            f"({record['parameters'] / 1e6:.2f} M parameters, fp16 weights) that labels every 20 ms "
            "frame `speech` and/or `noise` (a sigmoid per label; neither is silence). Its conv "
            f"front end and first {record['layers']} transformer layers start from the CTC demo "
            "model (`service/models/demo-ctc`). It has only heard espeak-ng voices and generated "
            "noise: a demonstration of the endpoint, not a production VAD.",
            "",
            "## Held-out figures",
            "",
            f"{e['mixtures']} mixtures ({e['frames']:,} frames) of utterances by the voice variants "
            f"never trained on ({', '.join(HELDOUT_VARIANTS)}), with their own noise draws:",
            "",
            "| frame accuracy: speech | noise | both labels right | mean speech boundary error "
            "| median | speech segments found / true |",
            "|---|---|---|---|---|---|",
            f"| {100 * acc['speech']:.1f}% | {100 * acc['noise']:.1f}% "
            f"| {100 * e['frame_accuracy_both']:.1f}% | {1000 * e['boundary_error_s']:.0f} ms "
            f"| {1000 * e['boundary_error_median_s']:.0f} ms "
            f"| {e['speech_segments']['found']} / {e['speech_segments']['true']} |",
            "",
            "Boundary error: for each true utterance onset (offset), the distance to the nearest "
            "onset (offset) of a `speech` segment as `/v1/frames` returns it (sigmoid > 0.5, no "
            "smoothing). More segments found than true means some utterances come back split at a "
            "pause between words.",
            "",
            "## Recipe",
            "",
            f"- Data: mixtures of {MIX_SECONDS[0]:g}-{MIX_SECONDS[1]:g} s built on the fly from "
            f"{record['pool']:,} espeak-ng utterances ({len(VOICES)} English voices x "
            f"{len(seen_variants())} variants, 120-220 wpm, pitch 20-80, up to 8 words): 1-3 "
            f"utterances at peak 0.2-1.0, at least {MIN_GAP_S:g} s apart, over noise at -90 to "
            "-60 dB; 0-2 noise events (white, pink, brown, 50/60 Hz hum with harmonics, a tune of "
            "synthetic notes) covering 30-80% of the mixture each at RMS 0.016-0.2, overlapping the "
            "speech or not. A frame's labels are those of the sample at its centre.",
            f"- Loss: binary cross-entropy per label; batches of {record['batch']} mixtures.",
            f"- Init: {record['init']}; AdamW, peak LR {record['lr']:g}, warmup then cosine; "
            "weight average (EMA) exported.",
            f"- {record['minutes']:.1f} min, {record['steps']} steps on {record['machine']}; "
            f"command: `{record['command']}` ({record['started']}).",
            *([f"- {record['note']}"] if record.get("note") else []),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--init", type=Path, default=export.MODEL_DIR, help="CTC model to start from")
    p.add_argument("--run", type=Path, default=RUNS_DIR / "vad")
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--pool", type=int, default=1_500, help="training utterances")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    p.add_argument("--examples", action="store_true", help="only write the example file")
    args = p.parse_args(argv)
    if args.examples:
        return write_examples()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)

    pool = load_pool("train", args.pool)
    heldout = heldout_mixtures()
    config = vad_config(args.init, args.layers)
    model = Wav2Vec2ForAudioFrameClassification(config)
    finetune.load_encoder(model, args.init)

    def progress(m: Head) -> str:
        assert isinstance(m, Wav2Vec2ForAudioFrameClassification)
        r = evaluate(m, heldout[:50])
        return (
            f"speech {100 * r['frame_accuracy']['speech']:.1f}%, noise "
            f"{100 * r['frame_accuracy']['noise']:.1f}%, boundary "
            f"{1000 * r['boundary_error_s']:.0f} ms"
        )

    command = "python -m training.vad " + " ".join(sys.argv[1:] if argv is None else argv)
    record: dict[str, Any] = {"started": finetune.started(), "command": command}
    averaged, run = finetune.fit(
        model,
        batches(pool, config, args.batch, np.random.default_rng(0)),
        loss,
        minutes=args.minutes,
        lr=args.lr,
        max_steps=args.max_steps,
        dtype_name=args.dtype,
        evaluate=progress,
        eval_every=100,
    )
    assert isinstance(averaged, Wav2Vec2ForAudioFrameClassification)
    record.update(
        run,
        init=finetune.describe_init(args.init, args.layers),
        layers=args.layers,
        parameters=sum(q.numel() for q in averaged.parameters()),
        pool=len(pool),
        batch=args.batch,
        lr=args.lr,
        eval=evaluate(averaged, heldout),
    )
    export.save_directory(
        averaged,
        config,
        args.run / "export",
        README=model_card(record),
        **{"training.json": record},
    )
    e = record["eval"]
    print(
        f"[final] frame accuracy speech {100 * e['frame_accuracy']['speech']:.1f}%, noise "
        f"{100 * e['frame_accuracy']['noise']:.1f}%; boundary error "
        f"{1000 * e['boundary_error_s']:.0f} ms",
        flush=True,
    )


if __name__ == "__main__":
    main()
