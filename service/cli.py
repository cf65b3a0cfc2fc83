"""Command line: `serve` starts the HTTP service, `predict` prints one Prediction per file."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.cli_inputs import Input, predict_inputs, read_file
from service.errors import ServiceError
from service.settings import Settings, default_model_specs

if TYPE_CHECKING:  # imported when used: `serve` and `--help` need no torch
    from service.audio import Audio
    from service.runtime import ServedModel
    from service.schemas import Options, Prediction

# The Settings fields that apply to `predict` (serve takes them all).
PREDICT_SETTINGS = [
    "model",
    "device",
    "dtype",
    "attention",
    "linear",
    "languages",
    "language_memory_mb",
    "lid_model",
    "chunk_seconds",
    "stride_seconds",
    "max_audio_seconds",
    "max_batch_size",
    "beam_workers",
    "max_beam_width",
    "max_hotwords",
    "max_hotword_chars",
]


def _settings_flags(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """One flag per Settings field; the default stays unset so the env (W2V_*) can apply."""
    for name in names:
        field = Settings.model_fields[name]
        flag = "--" + name.replace("_", "-")
        if name == "model":
            parser.add_argument(
                flag,
                action="append",
                metavar="[NAME=]PATH_OR_HUB_ID",
                help="checkpoint directory or hub id (repeatable)",
            )
        else:
            parser.add_argument(
                flag, default=None, help=field.description or f"(W2V_{name.upper()})"
            )


def _settings(args: argparse.Namespace, names: list[str]) -> Settings:
    given = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return Settings(**given)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the HTTP/WebSocket service")
    _settings_flags(serve, [n for n in Settings.model_fields])
    predict = sub.add_parser("predict", help="run a model on audio files, one JSON line each")
    _settings_flags(predict, PREDICT_SETTINGS)
    predict.add_argument(
        "--task",
        default="auto",
        choices=["auto", "transcribe", "classify", "embed", "frames", "align"],
    )
    predict.add_argument("--top-k", type=int, default=5)
    _align_flags(predict)
    decoding = predict.add_argument_group("transcript decoding (docs/api.md, 'Decoding')")
    decoding.add_argument(
        "--decoder", choices=["greedy", "beam"], help="default: beam where the model has an LM"
    )
    decoding.add_argument("--beam-width", help="beams kept per frame (default 100)")
    decoding.add_argument("--alpha", help="LM weight (default: the model's attrs.json)")
    decoding.add_argument("--beta", help="word insertion bonus (default: attrs.json)")
    decoding.add_argument(
        "--hotwords", nargs="+", default=[], metavar="W", help="words (or phrases) to lift"
    )
    decoding.add_argument("--hotword-weight", help="log-score bonus per hotword (default 10)")
    predict.add_argument("--output", type=Path, help="write JSON lines here instead of stdout")
    predict.add_argument("--no-progress", action="store_true")
    predict.add_argument("files", nargs="*", metavar="FILE")
    return parser


def _align_flags(predict: argparse.ArgumentParser) -> None:
    """--task align: where each file's transcript comes from, and the answer's spans."""
    texts = predict.add_mutually_exclusive_group()
    texts.add_argument("--text", help="align: the transcript of every FILE")
    texts.add_argument(
        "--text-file",
        action="append",
        type=Path,
        metavar="F",
        help="align: a UTF-8 transcript file, repeated once per FILE in the same order",
    )
    texts.add_argument(
        "--pairs",
        type=Path,
        metavar="PAIRS.jsonl",
        help='align: lines of {"audio": path, "text": transcript} instead of FILEs; '
        "relative paths are relative to the JSONL file",
    )
    predict.add_argument("--granularity", default="word", choices=["word", "char", "both"])
    predict.add_argument(
        "--language",
        help="transcribe/align on a model with language adapters: a code it serves, or auto "
        "(needs --lid-model); default the model's target_lang",
    )
    predict.add_argument(
        "--star", action="store_true", help="align: word boundaries absorb speech the text lacks"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            return serve(_settings(args, list(Settings.model_fields)))
        return predict(_settings(args, PREDICT_SETTINGS), args)
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except ValueError as exc:  # settings validation
        print(f"error: {exc}", file=sys.stderr)
        return 2


def serve(settings: Settings) -> int:
    from service import allocator, server
    from service.app import create_app

    allocator.configure()  # before the model and request threads start (allocator.py)

    # The draining runner, not uvicorn.run: SIGTERM must turn /readyz 503 and finish the
    # accepted requests with the socket still open, then exit 0.
    server.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        drain_timeout=settings.drain_timeout,
    )
    return 0


def predict(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from service.build import build_model

    # No --model: the embedded demo model for the task (the classifier for --task classify).
    specs = settings.model_specs() if settings.model else default_model_specs(args.task)
    if len(specs) != 1:
        raise ServiceError("predict takes one --model")
    name, source = specs[0]
    inputs = predict_inputs(args)
    options = _options(settings, args)
    aligning = args.task == "align"
    # The checkpoint's own task: aligning needs a CTC head, which check_aligns names if absent.
    model = build_model(
        settings, name, source, task="auto" if aligning else args.task, warmup=False
    )
    if aligning:
        model.check_aligns()
    model.language(options.language)  # an unknown language fails now, not once per file
    out = args.output.open("w") if args.output else sys.stdout
    failures = 0
    bar = tqdm(
        total=len(inputs),
        unit="file",
        disable=args.no_progress or len(inputs) < 2,
        file=sys.stderr,
    )
    try:
        for record in _predict_files(model, settings, args, inputs, options):
            failures += "error" in record
            out.write(json.dumps(record) + "\n")
            out.flush()
            bar.update()
    finally:
        bar.close()
        if args.output:
            out.close()
    return 1 if failures else 0


def _options(settings: Settings, args: argparse.Namespace) -> Options:
    """The flags' Options, checked like a request's (a bad value exits 2 before loading)."""
    from service.options import parse_options

    names = ("decoder", "beam_width", "alpha", "beta", "hotword_weight", "language")
    fields = {name: getattr(args, name) for name in names}
    options = parse_options(fields, settings, args.hotwords, top_k=args.top_k)
    return options.model_copy(update={"granularity": args.granularity, "star": args.star})


def _predict_files(
    model: ServedModel,
    settings: Settings,
    args: argparse.Namespace,
    inputs: list[Input],
    options: Options,
) -> Iterator[dict[str, Any]]:
    """Inputs in order; decoding and inference in groups so memory stays bounded."""
    aligning = args.task == "align"
    group = max(1, settings.max_batch_size)
    for i in range(0, len(inputs), group):
        part = inputs[i : i + group]
        results: dict[int, Prediction | ServiceError] = {}
        decoded: dict[int, Audio] = {}
        texts: dict[int, str] = {}
        for k, item in enumerate(part):
            try:
                if aligning:
                    texts[k] = item.transcript()
                decoded[k] = _decode_file(item.audio, model, settings)
            except ServiceError as exc:
                results[k] = exc
        clips = list(decoded.values())
        predictions: list[Prediction | ServiceError]
        try:
            if aligning:
                predictions = model.align_now(clips, [texts[k] for k in decoded], options)
            else:
                predictions = list(model.predict_now(clips, options))
        except Exception as exc:  # a model fault fails this group's files, not the whole run
            failed = ServiceError(f"inference failed: {exc}", code="inference_failed")
            predictions = [failed] * len(decoded)
        results.update(zip(decoded, predictions))
        for k, item in enumerate(part):
            result = results[k]
            if isinstance(result, ServiceError):
                yield {"file": item.name, **result.body()}
            else:
                yield {"file": item.name, **result.model_dump(exclude_none=True)}


def _decode_file(path: Path, model: ServedModel, settings: Settings) -> Audio:
    from service.audio import decode_audio

    data = read_file(path)
    return decode_audio(
        data,
        model.sampling_rate,
        max_seconds=settings.max_audio_seconds,
        min_samples=model.min_samples,
    )
