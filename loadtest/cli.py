"""python -m loadtest: drive a running service and write report.json, report.md and PNGs."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from loadtest.report import markdown, write
from loadtest.runner import MODES, LoadConfig, load_clips, run_async, wait_ready

EXAMPLES = """examples:
  python -m loadtest --rate 5 --duration 20 --out results/             open loop, Poisson
  python -m loadtest --mode closed --concurrency 8 --duration 30
  python -m loadtest --mode ramp --ramp-start 0.5 --ramp-stop 16 --step-duration 15
  python -m loadtest --mode stream --concurrency 4 --lengths fixed:10
  python -m loadtest --audio ~/LibriSpeech/test-clean --url http://gpu-box:8000
"""


def build_parser() -> argparse.ArgumentParser:
    d = LoadConfig()
    p = argparse.ArgumentParser(
        prog="python -m loadtest",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", default=d.url, help="service base URL (default: loopback)")
    p.add_argument("--endpoint", default=d.endpoint, help="POST path for HTTP modes")
    p.add_argument("--mode", choices=MODES, default=d.mode)
    p.add_argument("--rate", type=float, default=d.rate, help="open loop: requests/s")
    p.add_argument("--arrival", choices=["constant", "poisson"], default=d.arrival)
    p.add_argument(
        "--concurrency",
        type=int,
        default=d.concurrency,
        help="closed loop: requests in flight; stream: concurrent streams",
    )
    p.add_argument("--duration", type=float, default=d.duration, help="seconds of sending")
    p.add_argument("--max-requests", type=int, default=d.max_requests, help="hard cap")
    p.add_argument("--ramp-start", type=float, default=d.ramp_start)
    p.add_argument("--ramp-stop", type=float, default=d.ramp_stop)
    p.add_argument("--ramp-step", type=float, help="add this per step (default: multiply)")
    p.add_argument("--ramp-factor", type=float, default=d.ramp_factor)
    p.add_argument("--step-duration", type=float, default=d.step_duration)
    p.add_argument("--no-stop-at-knee", action="store_true", help="ramp: run every step")
    p.add_argument("--timeout", type=float, default=d.timeout, help="per request, seconds")
    p.add_argument(
        "--pace",
        type=float,
        default=d.pace,
        help="stream: 1 = real time, 2 = twice as fast, 0 = no pacing",
    )
    p.add_argument("--model", help="model name to ask for (default: the server's choice)")
    p.add_argument("--api-key", help="sent as Authorization: Bearer KEY")
    src = p.add_argument_group("audio")
    src.add_argument("--audio", type=Path, help="folder of audio files to send (recursive)")
    src.add_argument(
        "--generate",
        choices=["speech", "noise"],
        default="speech",
        help="without --audio: espeak-ng speech or noise",
    )
    src.add_argument(
        "--lengths",
        default="libri",
        help="libri (2-35 s spread), uniform:LO:HI, fixed:S or list:S1,S2",
    )
    src.add_argument("--clips", type=int, default=20, help="clips to generate or read")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--wait-ready",
        type=float,
        default=0.0,
        help="poll /readyz up to this many seconds before starting",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("loadtest-results"),
        help="folder for report.json, report.md and the plots",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = LoadConfig(
        url=args.url,
        endpoint=args.endpoint,
        mode=args.mode,
        rate=args.rate,
        arrival=args.arrival,
        concurrency=args.concurrency,
        duration=args.duration,
        max_requests=args.max_requests,
        ramp_start=args.ramp_start,
        ramp_stop=args.ramp_stop,
        ramp_step=args.ramp_step,
        ramp_factor=None if args.ramp_step else args.ramp_factor,
        step_duration=args.step_duration,
        stop_after_knee=not args.no_stop_at_knee,
        timeout=args.timeout,
        pace=args.pace,
        model=args.model,
        api_key=args.api_key,
        seed=args.seed,
        progress=not args.no_progress,
    )
    if args.wait_ready and not asyncio.run(wait_ready(cfg.url, args.wait_ready)):
        print(
            f"error: {cfg.url}/readyz did not answer 200 in {args.wait_ready:g} s", file=sys.stderr
        )
        return 2
    try:
        clips = load_clips(args.audio, args.generate, args.lengths, args.clips, args.seed)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rep = asyncio.run(run_async(cfg, clips))
    paths = write(rep, args.out)
    print(markdown(rep))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    o = rep["overall"]
    return 0 if o["sent"] and o["ok"] else 1
