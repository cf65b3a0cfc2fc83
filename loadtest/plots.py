"""PNG plots of a report: latency percentiles against offered load, and latency over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_all(rep: dict, out: Path) -> dict[str, Path]:
    paths = {
        "latency_vs_load": out / "latency_vs_load.png",
        "latency_over_time": out / "latency_over_time.png",
    }
    latency_vs_load(rep, paths["latency_vs_load"])
    latency_over_time(rep, paths["latency_over_time"])
    return paths


def latency_vs_load(rep: dict, path: Path) -> None:
    """p50/p90/p99 of total latency (and queue p50) per offered rate; one point without a ramp."""
    steps = rep.get("steps") or [rep["overall"]]
    x = [s["offered_rate"] if s["offered_rate"] is not None else s["throughput_rps"] for s in steps]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, style in (("p50", "o-"), ("p90", "s-"), ("p99", "^-")):
        ax.plot(x, [_s(s["latency"]["total"][key]) for s in steps], style, label=f"total {key}")
    ax.plot(x, [_s(s["latency"]["queue"]["p50"]) for s in steps], "x--", label="queue p50")
    ax2 = ax.twinx()
    ax2.plot(x, [s["throughput_rps"] for s in steps], "k:", label="achieved rps")
    ax2.set_ylabel("achieved requests/s")
    if rep.get("knee_rps") is not None:
        ax.axvline(rep["knee_rps"], color="grey", lw=0.8, ls="--", label="knee")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("latency (s)")
    ax.set_title("Latency against offered load")
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()
    handles2 = ax2.get_legend_handles_labels()
    ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency_over_time(rep: dict, path: Path) -> None:
    """Each request at its send time: total latency (ok), queue time, and failures on the axis."""
    rows = rep["requests"]
    ok = [r for r in rows if r["error"] is None and r["latency"] is not None]
    bad = [r for r in rows if r["error"] is not None]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.scatter([r["t"] for r in ok], [r["latency"] for r in ok], s=8, label="total (client)")
    queued = [r for r in ok if r["queue"] is not None]
    ax.scatter(
        [r["t"] for r in queued],
        [r["queue"] for r in queued],
        s=6,
        marker="x",
        label="queue (x-queue-time)",
    )
    if bad:
        ax.scatter(
            [r["t"] for r in bad],
            [0.0] * len(bad),
            s=14,
            marker="v",
            color="red",
            label=f"errors ({len(bad)})",
        )
    ax.set_xlabel("send time (s from start)")
    ax.set_ylabel("latency (s)")
    ax.set_title("Latency over time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _s(v: float | None) -> float:
    return float("nan") if v is None else v
