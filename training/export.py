"""Write the demo model as a Hugging Face directory, with its model card.

    python -m training.export --check service/models/demo-ctc   # transformers agrees with us

The directory holds config.json, model.safetensors (fp16), vocab.json, tokenizer_config.json,
special_tokens_map.json, preprocessor_config.json, training.json (every round's record) and
README.md, the model card rendered from training.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from service.wav2vec2.config import Wav2Vec2Config
from training.text import VOCAB

# The card's CPU dtype lines (training/int8_check.py): dtype -> what it computes.
CPU_DTYPE_CHECKS = {
    "int8": "dynamic int8 weights, service/wav2vec2/quantize.py",
    "bfloat16": "bf16 weights and activations, on a CPU with AVX512-BF16 or AMX",
}
MODEL_DIR = Path(__file__).parents[1] / "service" / "models" / "demo-ctc"
HELDOUT_NAMES = {
    "natural": "new template sentences, seen voices",
    "random": "random common-word sequences, seen voices",
    "voices": "voice variants never trained on",
}


def hf_config(config: Wav2Vec2Config) -> dict[str, Any]:
    """config.json: every field transformers' Wav2Vec2Config has, ours written over them
    (not the other architectures' fields our config class also carries: a Wav2Vec2 has no
    rotary base or bucket count)."""
    import transformers

    known = set(transformers.Wav2Vec2Config().to_dict()) | set(config.extra)
    ours = {k: v for k, v in config.to_dict().items() if k in known}
    full = transformers.Wav2Vec2Config(
        **{k: v for k, v in ours.items() if k not in ("id2label", "label2id")}
    ).to_dict()
    full.update(ours)
    full.pop("transformers_version", None)
    return full


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def save(model: nn.Module, config: Wav2Vec2Config, out_dir: Path, history: dict[str, Any]) -> None:
    """The CTC demo model: weights, configs, vocabulary and tokenizer, record and card."""
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    save_directory(
        model,
        config,
        out_dir,
        README=model_card(history),
        **{
            "training.json": history,
            "vocab.json": {t: i for i, t in enumerate(VOCAB)},
            "special_tokens_map.json": special,
            "tokenizer_config.json": {
                "tokenizer_class": "Wav2Vec2CTCTokenizer",
                **special,
                "word_delimiter_token": "|",
                "replace_word_delimiter_char": " ",
                "do_lower_case": False,
                "clean_up_tokenization_spaces": False,
                "processor_class": "Wav2Vec2Processor",
                "model_max_length": 1_000_000_000,
            },
        },
    )


def save_directory(
    model: nn.Module, config: Wav2Vec2Config, out_dir: Path, README: str, **files: Any
) -> None:
    """A Hugging Face model directory: fp16 model.safetensors, config.json, the feature
    extractor's config, README.md and `files` (name -> JSON). Written next to out_dir, then
    swapped in: a reader never sees half of it."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    _write_json(tmp / "config.json", hf_config(config))
    processor = "Wav2Vec2Processor" if "tokenizer_config.json" in files else None
    _write_json(
        tmp / "preprocessor_config.json",
        {
            "feature_extractor_type": "Wav2Vec2FeatureExtractor",
            **({"processor_class": processor} if processor else {}),
            "feature_size": 1,
            "sampling_rate": 16_000,
            "padding_side": "right",
            "padding_value": 0.0,
            "do_normalize": True,
            "return_attention_mask": True,
        },
    )
    for name, obj in files.items():
        _write_json(tmp / name, obj)
    (tmp / "README.md").write_text(README)
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old)
    else:
        tmp.rename(out_dir)


def update_card(model_dir: Path, history: dict[str, Any]) -> None:
    """Rewrites training.json and README.md of an exported directory, weights untouched."""
    _write_json(model_dir / "training.json", history)
    (model_dir / "README.md").write_text(model_card(history))


def loss_text(value: float | None) -> str:
    """A curve point's training loss; none before the first step (NaN in older records)."""
    return "-" if value is None or value != value else f"{value:.3f}"


def _sweep(key: str, sweep: dict) -> str:
    """A card line for the window shapes (longform_windows) or the cuts (longform_cuts) tried."""
    if key == "longform_windows":
        title, measure = "Windows tried", "window / context each side, WER as long recordings"
        tried = [
            f"{chunk:g} s / {stride:g} s {_pct(wer)}" for chunk, stride, wer in sweep["wer_long"]
        ]
        chosen = (
            f"config.json (`chunk_seconds`, `stride_seconds`) names {sweep['chosen']}; the "
            "service uses those windows for this model."
        )
    else:
        title, measure = "Cuts tried", "WER as long recordings vs one by one"
        tried = [f"{what} {_pct(long)} vs {_pct(alone)}" for what, long, alone in sweep["wer"]]
        chosen = f"The service cuts {sweep['chosen']} (`service/windows.py`)."
    return f"{title} ({sweep['what']}; {measure}): {', '.join(tried)}. {chosen}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _eval_table(evals: dict[str, dict[str, float]]) -> list[str]:
    rows = ["| held-out set | utterances | CER | WER |", "|---|---|---|---|"]
    for name, r in evals.items():
        rows.append(
            f"| {name}: {HELDOUT_NAMES.get(name, '')} | {r.get('n', '–')} "
            f"| {_pct(r['cer'])} | {_pct(r['wer'])} |"
        )
    return rows


def _errors_section(e: dict[str, Any]) -> list[str]:
    """training/errors.py's breakdown of the greedy word errors."""
    lines = [
        "",
        "## Where the greedy word errors are",
        "",
        f"{e['weights'].capitalize()} weights, greedy, every utterance of each held-out set "
        "(`python -m training.errors --write`; its docstring defines the kinds). A non-word is "
        "a spelling the training transcripts never contain; the last columns count the "
        "reference words missed (boundary errors aside) by how often the "
        f"{e['training_transcripts']:,} words of the training transcripts contain them.",
        "",
        "| held-out set | words | word errors | boundary | non-word | real word | deleted "
        "| inserted | missed words heard <200 / 200-999 / 1,000+ times |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in e["results"].items():
        bands = " / ".join(str(r["bands"].get(b, 0)) for b in ("0-199", "200-999", "1,000+"))
        kinds = " | ".join(str(v) for v in r["kinds"].values())
        lines.append(f"| {name} | {r['words']} | {r['errors']} | {kinds} | {bands} |")
    lines += [
        "",
        "Most frequent (reference -> transcript x times, training count of the reference):",
        "",
    ]
    for name, r in e["results"].items():
        top = ", ".join(
            f"{a or '-'} -> {b or '-'} x{n}" + ("" if c is None else f" ({c:,})")
            for a, b, n, c in r["top"]
        )
        lines.append(f"- {name}: {top}")
    return lines


def model_card(h: dict[str, Any]) -> str:
    """README.md from training.json: recipe, rounds, held-out scores, learning curves."""
    rounds = h.get("rounds", [])
    last = rounds[-1] if rounds else {}
    data = h.get("data", {})
    lines = [
        "# demo-ctc: a small Wav2Vec2 CTC model trained on synthetic English speech",
        "",
        "The service's embedded default model: a Wav2Vec2 with "
        f"{h.get('layers', 4)} pre-LN transformer layers ({h.get('parameters', 0) / 1e6:.2f} M "
        "parameters, fp16 weights) and a 32-character CTC "
        "head (A-Z, apostrophe, `|` between words), trained from scratch on speech synthesized by "
        "espeak-ng. It transcribes clear, espeak-like English; it has never heard a human voice "
        "and is no substitute for a real ASR model. Load it with `transformers` "
        "(`Wav2Vec2ForCTC` / `Wav2Vec2Processor`) or with the service.",
        "",
        "Trained by `training/` in this repository (`python -m training.train`), in rounds: each "
        "round warm-starts from the weights committed here, trains on 2 CPU cores, and appends "
        "its record to `training.json`, from which this card is rendered.",
        "",
        "```python",
        "from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor",
        'processor = Wav2Vec2Processor.from_pretrained("service/models/demo-ctc")',
        'model = Wav2Vec2ForCTC.from_pretrained("service/models/demo-ctc")',
        'inputs = processor(samples_16khz, sampling_rate=16_000, return_tensors="pt")',
        "text = processor.batch_decode(model(inputs.input_values).logits.argmax(-1))[0]",
        "```",
        "",
        "## Latest scores (greedy decoding)",
        "",
    ]
    if last.get("eval"):
        lines += [f"After round {last['round']} ({last.get('status', '')}):", ""]
        lines += _eval_table(last["eval"])
    else:
        lines.append("No evaluation yet.")
    if h.get("fp16_check"):
        c = h["fp16_check"]
        lines += [
            "",
            f"fp16 weights vs fp32 on the held-out sets: mean CER {_pct(c['fp32_cer'])} "
            f"(fp32) vs {_pct(c['fp16_cer'])} (fp16), {c['changed']} of {c['n']} "
            "transcripts changed.",
        ]
    for dtype, what in CPU_DTYPE_CHECKS.items():
        if not h.get(f"{dtype}_check"):
            continue
        c = h[f"{dtype}_check"]
        lines += [
            "",
            f"`--dtype {dtype}` ({what}) vs fp32 on the held-out sets: mean CER "
            f"{100 * c['fp32_cer']:.2f}% (fp32) vs {100 * c[f'{dtype}_cer']:.2f}% ({dtype}), "
            f"{c['changed']} of {c['n']} transcripts changed (greedy). "
            f"Command: `python -m training.int8_check --dtype {dtype} --write`.",
        ]
    if h.get("longform"):
        lines += ["", "## Long recordings with pauses", ""]
        for decoder, lf in h["longform"].items():
            chunk, stride = lf.get("windows_s", (30, 5))  # the service's default windows
            path = (
                f"{chunk:g} s windows cut in pauses, {stride:g} s of context each side where "
                "speech runs on"
                if lf.get("cuts") == "pauses"
                else f"{chunk:g} s windows, {stride:g} s of context kept each side"
            )
            lines.append(
                f"- {decoder}: {lf['recordings']} recordings of held-out natural sentences joined "
                f"by {lf['pauses_s'][0]:.1f}-{lf['pauses_s'][1]:.1f} s pauses "
                f"({lf['sentences']} sentences, {lf['seconds']:.0f} s in all, each >= 60 s), "
                f"transcribed whole through the service's long-audio path ({path}): WER "
                f"{_pct(lf['wer_long'])}, against {_pct(lf['wer_alone'])} for the same sentences "
                "sent one by one."
            )
        lines += ["", "Command: `python -m training.longform --write [--decoder beam]`."]
    # Why the service cuts long audio for this model as it does: what was tried, and where.
    for key in ("longform_windows", "longform_cuts"):
        if h.get(key):
            lines += ["", _sweep(key, h[key])]
    if h.get("decoders"):
        dec = h["decoders"]
        lines += [
            "",
            "## Greedy vs beam vs beam + LM (the service's decoders)",
            "",
            dec.get("description", ""),
            "",
            "| held-out set | utterances | greedy CER / WER | beam CER / WER "
            "| beam + LM CER / WER |",
            "|---|---|---|---|---|",
        ]
        for name, r in dec["results"].items():
            lines.append(
                f"| {name} | {r['n']} | "
                + " | ".join(
                    f"{_pct(r[k]['cer'])} / {_pct(r[k]['wer'])}"
                    for k in ("greedy", "beam", "beam+lm")
                )
                + " |"
            )
    if h.get("lexicon"):
        lx = h["lexicon"]
        lines += [
            "",
            "## Greedy vs a word-constrained beam decoder (report only)",
            "",
            lx.get("description", ""),
            "",
            "| held-out set | utterances | OOV words | greedy CER / WER "
            "| lexicon + unigram CER / WER | lexicon + bigram CER / WER |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in lx["results"].items():
            lines.append(
                f"| {name} | {r['n']} | {r['oov_words']} | "
                + " | ".join(
                    f"{_pct(r[k]['cer'])} / {_pct(r[k]['wer'])}"
                    for k in ("greedy", "unigram", "bigram")
                )
                + " |"
            )
        lines += [
            "",
            "This lexicon decoder is a measurement only; the service's decoders are in the table above.",
        ]
    if h.get("errors"):
        lines += _errors_section(h["errors"])
    lines += ["", "## Recipe", "", *h.get("recipe", []), ""]
    if data:
        lines += ["## Data", "", *data.get("description", []), ""]
    lines += [
        "## Rounds",
        "",
        "Minutes are wall clock, evaluation included, on 2 CPU cores. Other jobs shared "
        "those cores in round 1 (heavily), round 3 (test runs, roughly a fifth of its "
        "time) and round 4 (one training thread beside other engineers' test runs, "
        "load 12-16), so their speed figures are low. Round 5 had one core to itself (its "
        "first 7 minutes beside the corpus synthesis, then benchmarks on the other core), and "
        "a fifth of its steps were 10-28 s recordings, slower per audio second than the "
        "1-8 s utterances.",
        "",
        "| round | start | machine | from | minutes | steps | audio hours seen "
        "| audio s per s | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        speed = r.get("audio_hours", 0) * 60 / max(r.get("minutes", 0), 1e-9)
        lines.append(
            f"| {r['round']} | {r.get('started', '')} | {r.get('machine', '')} "
            f"| {r.get('init', '')} | {r.get('minutes', 0):.0f} | {r.get('steps', 0)} "
            f"| {r.get('audio_hours', 0):.1f} | {speed:.1f} | {r.get('status', '')} |"
        )
    for r in rounds:
        if r.get("averaged"):  # training/average.py: no steps, scored on the whole sets
            lines += [
                "",
                f"### Round {r['round']}: {r['init']}",
                "",
                "A uniform mean of those rounds' weights (`python -m training.average`), no "
                "training step; scored on the whole held-out sets (greedy):",
                "",
                *_eval_table(r["eval"]),
            ]
            continue
        lines += [
            "",
            f"### Round {r['round']} learning curve",
            "",
            f"Held-out CER/WER on the first {r.get('eval_n', '?')} utterances of each set "
            f"(greedy); command: `{r.get('command', '')}`",
            "",
            "| minutes | steps | audio hours | loss | CER natural | CER random "
            "| CER voices | WER natural | WER random | WER voices |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in r.get("curve", []):
            e = p["eval"]
            lines.append(
                f"| {p['minutes']:.0f} | {p['steps']} | {p['audio_hours']:.1f} | {loss_text(p['loss'])} | "
                + " | ".join(_pct(e.get(s, {}).get("cer")) for s in HELDOUT_NAMES)
                + " | "
                + " | ".join(_pct(e.get(s, {}).get("wer")) for s in HELDOUT_NAMES)
                + " |"
            )
        final = r.get("eval") or {}
        if final:  # train.py's finish: the exported weights on the whole sets
            n = max(e.get("n", 0) for e in final.values())
            lines += [
                "",
                f"The weights the round chose, on the whole held-out sets ({n} utterances each), "
                "CER / WER: "
                + ", ".join(
                    f"{s} {_pct(e.get('cer'))} / {_pct(e.get('wer'))}" for s, e in final.items()
                )
                + ".",
            ]
    return "\n".join(lines) + "\n"


def check(model_dir: Path, wav: Path | None = None) -> float:
    """transformers loads model_dir and its logits match ours; returns the max |difference|."""
    import numpy as np
    import soundfile as sf
    import transformers

    from service.wav2vec2.features import normalize
    from service.wav2vec2.heads import Wav2Vec2ForCTC
    from training.weights import load_weights

    if wav is None:
        x = np.random.default_rng(0).normal(0, 0.1, 32_000).astype(np.float32)
    else:
        x = sf.read(wav, dtype="float32")[0]
    processor = transformers.Wav2Vec2Processor.from_pretrained(model_dir)
    hf = transformers.Wav2Vec2ForCTC.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    inputs = processor(x, sampling_rate=16_000, return_tensors="pt")
    config = Wav2Vec2Config.from_file(model_dir / "config.json")
    ours = Wav2Vec2ForCTC(config).eval()
    load_weights(ours, model_dir)
    with torch.no_grad():
        theirs = hf(inputs.input_values).logits[0]
        mine = ours([torch.from_numpy(normalize(x))]).data
    diff = float((theirs - mine).abs().max())
    scale = float(theirs.abs().max())
    print(
        f"{model_dir}: logits {tuple(mine.shape)}, max |diff| {diff:.2e} (max |logit| {scale:.1f})"
    )
    return diff / scale


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--check", type=Path, default=MODEL_DIR)
    p.add_argument("--wav", type=Path)
    args = p.parse_args()
    rel = check(args.check, args.wav)
    if rel > 1e-4:
        raise SystemExit(f"logits differ by {rel:.2e} relative")


if __name__ == "__main__":
    main()
