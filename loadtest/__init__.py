"""Load generator for the Wav2Vec2 service: open/closed-loop HTTP, ramps, WebSocket streams.

    python -m loadtest --url http://127.0.0.1:8000 --rate 5 --duration 20 --out results/

Library use: `clips = load_clips(...)`, `rep = run(LoadConfig(...), clips)`, `write(rep, dir)`.
"""

from loadtest.audio import Clip
from loadtest.report import markdown, summarise, write
from loadtest.runner import LoadConfig, load_clips, run, run_async, wait_ready

__all__ = [
    "Clip",
    "LoadConfig",
    "load_clips",
    "markdown",
    "run",
    "run_async",
    "summarise",
    "wait_ready",
    "write",
]
