"""One load run from a LoadConfig: clips in, report dict out (the library entry point)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from loadtest import audio, client, stream
from loadtest.report import report

MODES = ("open", "closed", "ramp", "stream")


@dataclass
class LoadConfig:
    url: str = "http://127.0.0.1:8000"
    endpoint: str = "/v1/transcribe"
    mode: str = "open"  # open | closed | ramp | stream
    rate: float = 5.0  # open loop: requests/s
    arrival: str = "poisson"  # constant | poisson
    concurrency: int = 4  # closed loop and streams
    duration: float = 20.0  # seconds of sending (per step for a ramp: step_duration)
    max_requests: int = 10_000
    ramp_start: float = 1.0
    ramp_stop: float = 64.0
    ramp_step: float | None = None  # arithmetic steps; else ramp_factor
    ramp_factor: float | None = 2.0
    step_duration: float = 15.0
    stop_after_knee: bool = True  # ramp: stop one step after the first it cannot keep up with
    timeout: float = 120.0  # per request or stream
    pace: float = 1.0  # streams: 1.0 = real time, 0 = as fast as possible
    model: str | None = None
    api_key: str | None = None
    seed: int = 0
    progress: bool = True

    def expected_requests(self) -> int | None:
        if self.mode == "open":  # the same schedule open_loop will draw
            poisson = self.arrival == "poisson"
            return len(
                client.arrivals(self.rate, self.duration, poisson, self.max_requests, self.seed)
            )
        if self.mode == "ramp":
            rates = client.ramp_rates(
                self.ramp_start, self.ramp_stop, self.ramp_step, self.ramp_factor
            )
            return min(self.max_requests, int(sum(rates) * self.step_duration) + len(rates))
        return None


def load_clips(
    folder: Path | None, generate: str, lengths: str, count: int, seed: int = 0
) -> list[audio.Clip]:
    """Clips from a folder when given, else `count` generated ones (speech falls back to noise
    with a warning when espeak-ng is missing)."""
    if folder is not None:
        return audio.from_folder(folder, limit=count)
    try:
        return audio.generate(generate, lengths, count, seed)
    except RuntimeError as exc:
        if generate != "speech":
            raise
        print(f"warning: {exc}; generating noise instead")
        return audio.generate("noise", lengths, count, seed)


async def wait_ready(url: str, seconds: float) -> bool:
    """Polls GET /readyz until 200 or `seconds` pass."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=5.0) as c:
        while True:
            try:
                if (await c.get(url.rstrip("/") + "/readyz")).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.25)


async def server_models(url: str) -> list | None:
    """GET /v1/models, recorded in the report; None when the server does not answer it."""
    try:
        async with httpx.AsyncClient(timeout=5.0) as c:
            r = await c.get(url.rstrip("/") + "/v1/models")
            return r.json().get("data") if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


async def run_async(cfg: LoadConfig, clips: list[audio.Clip]) -> dict:
    """Runs the configured load against cfg.url and returns the report (see report.py)."""
    if cfg.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    bar = _bar(cfg)

    def progress(r: client.Result) -> None:
        if bar is not None:
            bar.update()
            if r.error is not None:
                errors[r.error] = errors.get(r.error, 0) + 1
                bar.set_postfix(errors=sum(errors.values()), refresh=False)

    errors: dict[str, int] = {}
    url = cfg.url.rstrip("/") + cfg.endpoint
    models = await server_models(cfg.url)
    started = time.perf_counter()
    try:
        if cfg.mode == "stream":
            results = await stream.streams(
                cfg.url,
                clips,
                cfg.concurrency,
                cfg.duration,
                max_streams=cfg.max_requests,
                pace=cfg.pace,
                timeout=cfg.timeout,
                progress=progress,
                model=cfg.model,
                api_key=cfg.api_key,
            )
        else:
            async with client.make_client(cfg.timeout, cfg.api_key) as http:
                results = await _http(cfg, http, url, clips, progress)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - started
    config = dataclasses.asdict(cfg)
    config.pop("api_key")
    config.update(
        clips=len(clips),
        clip_seconds=[round(c.seconds, 2) for c in clips[:50]],
        server_models=models,
    )
    if cfg.mode == "stream":
        config["endpoint"] = "/v1/stream"
    return report(results, wall, config)


async def _http(
    cfg: LoadConfig,
    http: httpx.AsyncClient,
    url: str,
    clips: list[audio.Clip],
    progress: client.Progress,
) -> list[client.Result]:
    poisson = cfg.arrival == "poisson"
    if cfg.mode == "open":
        return await client.open_loop(
            http,
            url,
            clips,
            cfg.rate,
            cfg.duration,
            poisson=poisson,
            max_requests=cfg.max_requests,
            seed=cfg.seed,
            progress=progress,
            model=cfg.model,
        )
    if cfg.mode == "closed":
        return await client.closed_loop(
            http,
            url,
            clips,
            cfg.concurrency,
            cfg.duration,
            max_requests=cfg.max_requests,
            progress=progress,
            model=cfg.model,
        )
    rates = client.ramp_rates(cfg.ramp_start, cfg.ramp_stop, cfg.ramp_step, cfg.ramp_factor)
    return await client.ramp(
        http,
        url,
        clips,
        rates,
        cfg.step_duration,
        poisson=poisson,
        max_requests=cfg.max_requests,
        seed=cfg.seed,
        progress=progress,
        model=cfg.model,
        stop_after_knee=cfg.stop_after_knee,
    )


def _bar(cfg: LoadConfig):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    unit = "stream" if cfg.mode == "stream" else "req"
    return tqdm(total=cfg.expected_requests(), unit=unit, desc=f"{cfg.mode} load", leave=True)


def run(cfg: LoadConfig, clips: list[audio.Clip]) -> dict:
    """Synchronous wrapper of run_async."""
    return asyncio.run(run_async(cfg, clips))
