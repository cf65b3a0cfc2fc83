"""Results -> summary: counts, latency percentiles (queue, inference, total), throughput.

Every request sent appears in exactly one bucket: `ok` or `errors[code]`, so
`ok + sum(errors) == sent` always holds, and the JSON says so (`accounted`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from loadtest.client import Result, keeps_up

PERCENTILES = (50, 90, 99)


def percentiles(values: Iterable[float | None]) -> dict[str, float | None]:
    """p50/p90/p99 (nearest rank, so each is a real observation), max, mean; None if empty."""
    xs = sorted(v for v in values if v is not None)
    out: dict[str, float | None] = {}
    for p in PERCENTILES:
        out[f"p{p}"] = xs[max(0, math.ceil(p / 100 * len(xs)) - 1)] if xs else None
    out["max"] = xs[-1] if xs else None
    out["mean"] = statistics.fmean(xs) if xs else None
    out["count"] = len(xs)
    return out


def summarise(results: list[Result], wall: float, offered_rate: float | None = None) -> dict:
    """One block of results (a run, or one ramp step) -> counts, latencies, throughput."""
    ok = [r for r in results if r.ok]
    errors = Counter(r.error for r in results if not r.ok)
    audio = sum(r.audio_seconds for r in ok)
    summary = {
        "sent": len(results),
        "ok": len(ok),
        "errors": dict(errors),
        "accounted": len(ok) + sum(errors.values()) == len(results),
        "wall_seconds": wall,
        "offered_rate": offered_rate,
        "throughput_rps": len(ok) / wall if wall > 0 else 0.0,
        "audio_seconds": audio,
        "audio_seconds_per_second": audio / wall if wall > 0 else 0.0,
        "latency": {
            "total": percentiles(r.latency for r in ok),
            "server_total": percentiles(r.server_total for r in ok),
            "queue": percentiles(r.queue for r in ok),
            "inference": percentiles(r.inference for r in ok),
        },
    }
    streams = [r for r in ok if r.kind == "stream"]
    if streams:
        summary["stream"] = {
            "first_partial": percentiles(r.extra.get("first_partial") for r in streams),
            "final_lag": percentiles(x for r in streams for x in r.extra.get("final_lags", [])),
            "stop_to_end": percentiles(r.extra.get("stop_to_end") for r in streams),
        }
    return summary


def report(results: list[Result], wall: float, config: dict) -> dict:
    """The whole run, plus one summary per offered rate when there were several (a ramp)."""
    rates = sorted({r.offered_rate for r in results if r.offered_rate is not None})
    out = {
        "config": config,
        "overall": summarise(results, wall, rates[0] if len(rates) == 1 else None),
    }
    if len(rates) > 1:
        steps = []
        for rate in rates:
            step = [r for r in results if r.offered_rate == rate]
            span = config.get("step_duration") or wall
            steps.append(summarise(step, _step_wall(step, span), rate))
            steps[-1]["keeps_up"] = keeps_up(step, rate, steps[-1]["wall_seconds"])
        out["steps"] = steps
        kept = [s["offered_rate"] for s in steps if s["keeps_up"]]
        out["knee_rps"] = max(kept) if kept else None
    out["requests"] = [_row(r) for r in results]
    return out


def _step_wall(step: list[Result], span: float) -> float:
    """A step lasts from its first send to its last answer (at least its planned span)."""
    start = min(r.scheduled for r in step)
    end = max(r.scheduled + (r.latency or 0.0) for r in step)
    return max(span, end - start)


def _row(r: Result) -> dict:
    row = {
        "t": round(r.scheduled, 4),
        "clip": r.clip,
        "audio_s": round(r.audio_seconds, 3),
        "status": r.status,
        "error": r.error,
        "latency": r.latency,
        "queue": r.queue,
        "inference": r.inference,
        "server_total": r.server_total,
        "rate": r.offered_rate,
        "kind": r.kind,
    }
    if r.extra:
        row.update(r.extra)
    return row


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def markdown(rep: dict) -> str:
    """Tables: overall counts and throughput, latency by stage, one row per ramp step."""
    o, cfg = rep["overall"], rep["config"]
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(o["errors"].items())) or "none"
    lines = [
        f"# Load test: {cfg.get('mode')} against {cfg.get('url')}{cfg.get('endpoint', '')}",
        "",
        f"sent {o['sent']}, ok {o['ok']}, errors {sum(o['errors'].values())} ({errors}); "
        f"{o['throughput_rps']:.2f} requests/s, {o['audio_seconds_per_second']:.2f} "
        f"audio-seconds/s over {o['wall_seconds']:.1f} s",
        "",
        "| latency (ms) | p50 | p90 | p99 | max | mean |",
        "|---|---|---|---|---|---|",
    ]
    for stage, p in o["latency"].items():
        lines.append(
            f"| {stage} | {_ms(p['p50'])} | {_ms(p['p90'])} | {_ms(p['p99'])} | "
            f"{_ms(p['max'])} | {_ms(p['mean'])} |"
        )
    for stage, p in o.get("stream", {}).items():
        lines.append(
            f"| stream {stage} | {_ms(p['p50'])} | {_ms(p['p90'])} | {_ms(p['p99'])} | "
            f"{_ms(p['max'])} | {_ms(p['mean'])} |"
        )
    if "steps" in rep:
        lines += [
            "",
            f"Knee (highest offered rate the server kept up with): "
            f"{rep['knee_rps'] if rep['knee_rps'] is not None else 'none'} requests/s",
            "",
            "| offered rps | sent | ok | errors | rps | audio-s/s | p50 ms | p90 ms "
            "| p99 ms | queue p50 ms | keeps up |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in rep["steps"]:
            t, q = s["latency"]["total"], s["latency"]["queue"]
            lines.append(
                f"| {s['offered_rate']:g} | {s['sent']} | {s['ok']} | {sum(s['errors'].values())} "
                f"| {s['throughput_rps']:.2f} | {s['audio_seconds_per_second']:.2f} "
                f"| {_ms(t['p50'])} | {_ms(t['p90'])} | {_ms(t['p99'])} | {_ms(q['p50'])} "
                f"| {'yes' if s['keeps_up'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def write(rep: dict, out: Path) -> dict[str, Path]:
    """report.json, report.md and the plots under `out`; returns the paths written."""
    from loadtest.plots import plot_all

    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    paths["json"].write_text(json.dumps(rep, indent=2))
    paths["markdown"].write_text(markdown(rep))
    paths.update(plot_all(rep, out))
    return paths
