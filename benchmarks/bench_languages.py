"""What mixing languages in one packed batch costs (issue 19), against a batch of one language.

A random MMS-shaped checkpoint (pre-LN, attention adapters of width 16 as mms-1b-all, one
adapter file per language with its own vocabulary size) serves the same clips three ways, in
one forward pass each: every clip in one language, two languages alternating, and every clip in
its own language. The cases run interleaved, repeat after repeat, and the report gives each
one's median and the median of the paired ratios to the one-language batch.

    python benchmarks/bench_languages.py [--smoke] [--threads 1] [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from benchmarks._common import CONFIGS, RATE, VOCAB, clip

ADAPTER_DIM = 16  # mms-1b-all's adapter_attn_dim


def save_mms(path: Path, config: str, languages: int) -> list[str]:
    """A random Wav2Vec2ForCTC with attention adapters and `languages` adapter files."""
    import transformers

    torch.manual_seed(0)
    shape = {**CONFIGS[config], "feat_extract_norm": "layer", "do_stable_layer_norm": True}
    cfg = transformers.Wav2Vec2Config(
        **shape,
        adapter_attn_dim=ADAPTER_DIM,
        vocab_size=len(VOCAB),
        architectures=["Wav2Vec2ForCTC"],
    )
    model = transformers.Wav2Vec2ForCTC(cfg).eval()
    model.save_pretrained(path)
    codes = [f"l{i:02d}" for i in range(languages)]
    vocabs = {}
    for i, code in enumerate(codes):
        vocabs[code] = {**VOCAB, **{f"x{j}": len(VOCAB) + j for j in range(i)}}  # sizes differ
        weights = {}
        for key, p in model._get_adapters().items():
            rows = len(vocabs[code])
            shape = {"lm_head.weight": (rows, p.shape[-1]), "lm_head.bias": (rows,)}
            weights[key] = torch.randn(shape.get(key, tuple(p.shape))) * 0.05
        save_file(weights, path / f"adapter.{code}.safetensors")
    (path / "vocab.json").write_text(json.dumps(vocabs))
    preprocessor = {"feature_size": 1, "sampling_rate": RATE, "do_normalize": True}
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return codes


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny model, seconds")
    parser.add_argument("--config", default="base", choices=sorted(CONFIGS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = "tiny" if args.smoke else args.config
    repeats = 2 if args.smoke else args.repeats

    from service.wav2vec2.loading import load_model

    with tempfile.TemporaryDirectory() as tmp:
        codes = save_mms(Path(tmp), config, languages=args.clips)
        started = time.perf_counter()
        loaded = load_model(tmp, device="cpu", dtype="float32")
        load_seconds = time.perf_counter() - started
        assert loaded.languages is not None
        per_language = loaded.languages.resident[codes[-1]] / 1e6
        # With a budget of one language, each first use loads its file (from the page cache).
        lazy = load_model(tmp, device="cpu", dtype="float32", language_memory_mb=per_language)
        assert lazy.languages is not None
        first_use = []
        for code in codes[1:]:
            started = time.perf_counter()
            lazy.languages.make_resident([code])
            first_use.append(time.perf_counter() - started)
    clips = [clip(args.seconds + 0.1 * i, i) for i in range(args.clips)]
    cases = {
        "one language": [codes[0]] * len(clips),
        "two alternating": [codes[i % 2] for i in range(len(clips))],
        f"{len(clips)} languages": codes[: len(clips)],
    }
    loaded.forward(clips[:2], codes[:2])  # warm-up
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, langs in cases.items():  # interleaved: paired under the same load
            started = time.perf_counter()
            loaded.forward(clips, langs)
            times[name].append(time.perf_counter() - started)
    base = times["one language"]
    print(
        f"{cpu_model()}, torch {torch.__version__}, "
        f"{args.threads} thread(s), {config} + adapters ({ADAPTER_DIM}), "
        f"{len(clips)} clips x ~{args.seconds:g} s, {repeats} repeats"
    )
    print(
        f"load {load_seconds:.2f} s; resident per language {per_language:.2f} MB (fp32); "
        f"first use with a budget: median {1000 * statistics.median(first_use):.1f} ms a language"
    )
    print(f"{'batch':<18}{'median s':>10}{'paired ratio':>14}")
    for name, ts in times.items():
        ratio = statistics.median(t / b for t, b in zip(ts, base))
        print(f"{name:<18}{statistics.median(ts):>10.3f}{ratio:>14.3f}")


if __name__ == "__main__":
    main()
