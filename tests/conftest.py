import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.checkpoints import make_checkpoint

IN_CI = os.environ.get("CI", "").lower() == "true"

# The suite checks float32 numerics (against transformers, against expected transcripts), but
# `--dtype auto` picks bfloat16 on a CPU with AVX512-BF16 or AMX (loading.pick_dtype). Servers
# and CLIs the tests start read W2V_DTYPE; in-process loads get the fixture below. The auto
# choice itself is tested in test_dtype_auto.py, which undoes both.
os.environ.setdefault("W2V_DTYPE", "float32")


@pytest.fixture(autouse=True)
def float32_auto(monkeypatch):
    monkeypatch.setattr("service.wav2vec2.loading.cpu_has_native_bf16", lambda: False)


def require_tool(name: str) -> str:
    """The path of a command-line tool; a missing tool skips locally and fails in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """variant name -> path, created on first use and shared by the whole session."""
    root = tmp_path_factory.mktemp("checkpoints")
    cache: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in cache:
            cache[variant] = make_checkpoint(root, variant)
        return cache[variant]

    return get


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Polls base/readyz until 200; fails with the server's log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server not ready in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@contextmanager
def served(
    args: list[str], log: Path, timeout: float = 120
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python -m service serve ARGS` on a free loopback port, ready; killed on exit."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", *args, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, proc, log, timeout)
            yield base, proc
        finally:
            proc.kill()
            proc.wait()
