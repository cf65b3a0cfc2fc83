"""--dtype int8 against our float32 and ONNX Runtime (float32 and dynamic int8) on the same weights.

    python benchmarks/bench_int8.py --config base --threads 1 --out results/int8
    python benchmarks/bench_int8.py --config tiny --smoke          # seconds

All sides run interleaved in one process (alternating order on each repeat), medians reported.
ONNX Runtime is a benchmark-only dependency (`pip install onnxruntime onnx onnxscript`): the
transformers model of the same checkpoint is exported with torch.onnx (dynamic length) and
quantised with onnxruntime.quantization.quantize_dynamic (QInt8 weights, ORT's default op set),
and it runs each clip alone (a padded batch without an attention mask changes a group-norm
model's output). torchao's Int8DynamicActivationInt8WeightConfig is timed too when installed,
the library route service/wav2vec2/quantize.py measured and did not take.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import CONFIGS, RATE, Runner, cases, publish, save_checkpoint  # noqa: E402
from benchmarks.bench_engine import _f, environment, interleaved  # noqa: E402
from service.wav2vec2.loading import cpu_has_native_bf16  # noqa: E402

BASELINE = "ours_float32"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="base")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cases", default="", help="comma-separated subset of the case names")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime sides")
    p.add_argument("--out", type=Path, help="report path; writes both .json and .md")
    args = p.parse_args(argv)
    args.device, args.dtype = "cpu", "int8"
    return args


def ours(path: Path, dtype: str, linear: str = "auto") -> Runner:
    from service.wav2vec2.loading import load_model

    loaded = load_model(str(path), device="cpu", dtype=dtype, linear=linear)
    if dtype == "float32":
        print(f"ours float32 ({linear}): oneDNN GEMMs {loaded.onednn}", file=sys.stderr)
    return loaded.forward


def torchao_runner(path: Path) -> Runner | None:
    """Our float32 model with torchao's dynamic int8 on its linear layers, if installed."""
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        return None
    from service.wav2vec2.loading import load_model

    loaded = load_model(str(path), device="cpu", dtype="float32")
    model = copy.deepcopy(loaded.model)
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    loaded.model = model
    return loaded.forward


def onnx_runners(path: Path, tmp: Path, threads: int) -> dict[str, Runner]:
    """transformers' model of the checkpoint exported to ONNX, as is and dynamically int8."""
    import onnxruntime as ort
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = transformers.Wav2Vec2ForCTC.from_pretrained(path, attn_implementation="eager").eval()
    # Fold the positional conv's weight norm, as our loader does: ORT quantises constant
    # weights only, not one computed in the graph.
    conv = model.wav2vec2.encoder.pos_conv_embed.conv
    torch.nn.utils.parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
    fp32, int8 = tmp / "model.onnx", tmp / "model.int8.onnx"
    example = torch.zeros(1, RATE)
    torch.onnx.export(
        model,
        (example,),
        str(fp32),
        input_names=["input_values"],
        output_names=["logits"],
        dynamic_axes={"input_values": {1: "samples"}, "logits": {1: "frames"}},
        dynamo=False,
    )
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    out: dict[str, Runner] = {}
    for name, f in (("onnxruntime_float32", fp32), ("onnxruntime_int8", int8)):
        session = ort.InferenceSession(str(f), options, providers=["CPUExecutionProvider"])

        def run(clips: list[np.ndarray], session=session) -> list[np.ndarray]:
            results = []
            for c in clips:  # one clip at a time: no padding
                x = extractor(c, sampling_rate=RATE, return_tensors="np").input_values
                results.append(session.run(None, {"input_values": x.astype(np.float32)})[0][0])
            return results

        out[name] = run
    return out


def run(args: argparse.Namespace) -> dict:
    all_cases = cases(args.smoke)
    names = [c for c in args.cases.split(",") if c] or list(all_cases)
    report: dict = {"config": args.config, "environment": environment(args), "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_checkpoint(Path(tmp) / args.config, args.config)
        runners: dict[str, Runner] = {
            BASELINE: ours(checkpoint, "float32"),
            "ours_int8": ours(checkpoint, "int8"),
            "ours_float32_mkl": ours(checkpoint, "float32", linear="mkl"),  # before oneDNN
        }
        if cpu_has_native_bf16():  # the other way to go faster on such a CPU
            runners["ours_bfloat16"] = ours(checkpoint, "bfloat16")
        ao = torchao_runner(checkpoint)
        if ao is not None:
            runners["torchao_int8"] = ao
        if not args.no_onnx:
            runners.update(onnx_runners(checkpoint, Path(tmp), args.threads))
        for name in names:
            clips = all_cases[name]
            print(f"{name}: {len(clips)} clip(s), {args.repeats} repeats", file=sys.stderr)
            times = interleaved(runners, clips, "cpu", args.repeats)
            reference = runners[BASELINE](clips)
            report["cases"][name] = summarise(times, clips, runners, reference)
    return report


def summarise(times: dict, clips: list[np.ndarray], runners: dict, reference: list) -> dict:
    """Median seconds per side, and its speed against ours_float32: the ratio of medians and
    the median of the per-repeat ratios (paired), plus how far its logits are from ours."""
    audio = sum(len(c) for c in clips) / RATE
    out: dict = {"clips": len(clips), "audio_seconds": round(audio, 3), "sides": {}}
    base = times[BASELINE]
    for side, ts in times.items():
        logits = runners[side](clips)
        err = max(float(np.abs(a - b).max()) for a, b in zip(reference, logits))
        same = np.concatenate([a.argmax(-1) == b.argmax(-1) for a, b in zip(reference, logits)])
        out["sides"][side] = {
            "median_s": statistics.median(ts),
            "times_s": ts,
            "vs_float32": statistics.median(base) / statistics.median(ts),
            "paired_vs_float32": statistics.median(b / t for b, t in zip(base, ts)),
            "max_abs_diff": err,
            "argmax_agreement": float(same.mean()),
        }
    return out


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"int8 on CPU: `{report['config']}` config, {env['cpu']} ({env['cpu_capability']}, "
        f"{env['threads']} thread(s)); torch {env['torch']}",
        f"Command: `{env['command']}`",
        "",
        "| case | side | median s | vs our fp32 (medians) | vs our fp32 (paired) "
        "| max abs diff vs our fp32 | argmax agreement |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in report["cases"].items():
        for side, s in c["sides"].items():
            lines.append(
                f"| {name} ({c['audio_seconds']:.1f} s) | {side} | {s['median_s']:.3f} | "
                f"{s['vs_float32']:.2f}x | {s['paired_vs_float32']:.2f}x | "
                f"{_f(s['max_abs_diff'], '.1e')} | {100 * s['argmax_agreement']:.1f}% |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        args.repeats = min(args.repeats, 1)
    torch.set_num_threads(args.threads)
    report = run(args)
    publish(report, markdown(report), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
