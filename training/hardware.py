"""What the training machine offers: the faster matmul dtype, a description, and a clock that
leaves out the time the process spent stopped."""

from __future__ import annotations

import platform
import subprocess
import sys
import threading
import time

import torch
from tqdm import tqdm


def choose_dtype(requested: str) -> torch.dtype:
    """bf16 autocast only where this CPU runs bf16 matmuls clearly faster than fp32.

    The CPU flag is not enough to go by: AMX and AVX512-BF16 (Zen 4/5) make bf16 2-4x faster,
    while plain AVX2/AVX512 machines run it hundreds of times slower. A 2048x256x1024 matmul,
    the size of this model's FFN on a 30 s batch, is timed in both dtypes.
    """
    if requested != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[requested]

    def seconds(dtype: torch.dtype) -> float:
        a, w = torch.randn(2048, 256, dtype=dtype), torch.randn(1024, 256, dtype=dtype)
        a @ w.T
        t0 = time.perf_counter()
        for _ in range(10):
            a @ w.T
        return time.perf_counter() - t0

    fp32, bf16 = (
        min(seconds(torch.float32) for _ in range(3)),
        min(seconds(torch.bfloat16) for _ in range(3)),
    )
    print(f"matmul fp32 {fp32 * 100:.2f} ms, bf16 {bf16 * 100:.2f} ms", flush=True)
    return torch.bfloat16 if bf16 * 1.25 < fp32 else torch.float32


def machine(dtype: torch.dtype = torch.float32) -> str:
    cpu = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in out.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {torch.get_num_threads()} threads, "
        f"{torch.backends.cpu.get_cpu_capability()}, "
        f"{'bf16 autocast' if dtype == torch.bfloat16 else 'fp32'}"
    )


class ActiveClock:
    """Seconds since creation, less the time the process was stopped (SIGSTOP/SIGCONT).

    Benchmarks on this shared machine stop other processes to measure on a quiet CPU; the
    budget and the LR schedule should not run on while this one is frozen. A daemon thread
    ticks every second; a tick that comes `PAUSE_S` late means the process was stopped.
    """

    PAUSE_S = 30.0

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()
        self.paused = 0.0
        threading.Thread(target=self._tick, daemon=True).start()

    def _tick(self) -> None:
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            if now - self.last > self.PAUSE_S:
                self.paused += now - self.last - 1.0
                tqdm.write(
                    f"[clock] process was stopped for {now - self.last:.0f} s; "
                    "not counted in the budget",
                    file=sys.stdout,
                )
            self.last = now

    def __call__(self) -> float:
        now = time.monotonic()
        # A stop still under way (the ticker has not caught up yet) is not counted either.
        behind = now - self.last
        return now - self.start - self.paused - (behind if behind > self.PAUSE_S else 0.0)
