"""`python -m service serve` in a subprocess on a free loopback port, ready when entered."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """with Server(model, ["--max-batch-size", "1"]) as url: ... (stopped with SIGTERM)."""

    def __init__(self, model: Path, args: list[str], log: Path, ready_timeout: float = 300):
        self.port = free_port()
        self.cmd = [sys.executable, "-m", "service", "serve", "--model", str(model)]
        self.cmd += ["--port", str(self.port), "--log-level", "warning", *args]
        self.log = log
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> str:
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                self.cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy()
            )
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"server not ready in {self.ready_timeout:g} s")
            time.sleep(0.3)

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
