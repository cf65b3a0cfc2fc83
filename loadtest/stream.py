"""WebSocket load on /v1/stream: concurrent streams, each sending a clip at a chosen pace.

Per stream it records: time to the first partial (from the first audio frame), the lag of
each final (its arrival minus the moment the audio at the final's `end` had been sent), and
the time from `stop` to the server's `end`. A stream is ok when it ends with `end`.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from loadtest.audio import RATE, Clip
from loadtest.client import Progress, Result


def ws_url(base: str, path: str = "/v1/stream") -> str:
    """http(s)://host:port[/...] -> ws(s)://host:port/v1/stream."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, path, "", ""))


async def one_stream(
    url: str,
    clip: Clip,
    scheduled: float,
    t0: float,
    *,
    pace: float = 1.0,
    frame_seconds: float = 0.1,
    timeout: float = 60.0,
    model: str | None = None,
    api_key: str | None = None,
) -> Result:
    """Streams one clip as pcm_s16le frames; pace 1.0 = real time, 0 = as fast as possible."""
    import websockets

    result = Result(scheduled, clip.name, clip.seconds, kind="stream")
    if clip.pcm is None:
        result.error = "client_no_pcm"
        return result
    pcm = (np.clip(clip.pcm, -1, 1) * 32767).astype("<i2")
    step = max(1, int(frame_seconds * RATE))
    sent_at: list[tuple[float, float]] = []  # (audio seconds sent so far, wall time)
    finals: list[float] = []
    first_partial: float | None = None
    headers = {"authorization": f"Bearer {api_key}"} if api_key else None
    started = time.perf_counter()
    try:
        async with websockets.connect(
            url, additional_headers=headers, open_timeout=timeout, max_size=None
        ) as ws:
            start = {
                "type": "start",
                "sample_rate": RATE,
                "encoding": "pcm_s16le",
                "interim_results": True,
            }
            if model:
                start["model"] = model
            await ws.send(json.dumps(start))

            async def sender() -> float:
                began = time.perf_counter()
                for i in range(0, len(pcm), step):
                    if pace > 0:  # real-time pacing against the stream's own clock
                        delay = began + i / RATE / pace - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    await ws.send(pcm[i : i + step].tobytes())
                    sent_at.append((min(i + step, len(pcm)) / RATE, time.perf_counter()))
                await ws.send(json.dumps({"type": "stop"}))
                return time.perf_counter()

            send_task = asyncio.create_task(sender())

            async def receive() -> None:
                nonlocal first_partial
                async for raw in ws:
                    if isinstance(raw, bytes):
                        continue
                    msg = json.loads(raw)
                    now = time.perf_counter()
                    kind = msg.get("type")
                    if kind == "partial" and first_partial is None and sent_at:
                        first_partial = now - sent_at[0][1]
                    elif kind == "final":
                        finals.append(now - _sent_time(sent_at, float(msg.get("end", 0.0))))
                    elif kind == "error":
                        result.error = str(msg.get("code", "stream_error"))
                    elif kind == "end":
                        stopped = await send_task
                        result.extra["stop_to_end"] = now - stopped
                        return

            try:
                await asyncio.wait_for(receive(), timeout + (clip.seconds / pace if pace else 0))
            finally:
                if not send_task.done():
                    send_task.cancel()
                elif not send_task.cancelled():
                    send_task.exception()  # retrieved: a failed send is reported by receive
            if "stop_to_end" not in result.extra and result.error is None:
                result.error = f"closed_{ws.close_code}"
    except asyncio.TimeoutError:
        result.error = "client_timeout"
    except Exception as exc:  # refused, handshake rejected (404/403), reset
        result.error = _ws_error(exc)
    result.latency = time.perf_counter() - started
    result.extra.update(first_partial=first_partial, final_lags=finals)
    result.status = 101 if result.error is None else 0
    return result


def _sent_time(sent_at: list[tuple[float, float]], audio_seconds: float) -> float:
    """Wall time by which audio up to `audio_seconds` had been sent."""
    for seconds, wall in sent_at:
        if seconds >= audio_seconds - 1e-6:
            return wall
    return sent_at[-1][1] if sent_at else time.perf_counter()


def _ws_error(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status:
        return f"ws_http_{status}"
    return f"client_{type(exc).__name__}"


async def streams(
    base_url: str,
    clips: list[Clip],
    concurrency: int,
    duration: float,
    *,
    max_streams: int = 1000,
    pace: float = 1.0,
    timeout: float = 60.0,
    progress: Progress | None = None,
    model: str | None = None,
    api_key: str | None = None,
) -> list[Result]:
    """Closed loop of `concurrency` streams at a time until `duration` or `max_streams`."""
    url = ws_url(base_url)
    t0 = time.perf_counter()
    results: list[Result] = []
    counter = iter(range(max_streams))

    async def worker() -> None:
        for i in counter:
            scheduled = time.perf_counter() - t0
            if scheduled >= duration:
                return
            r = await one_stream(
                url,
                clips[i % len(clips)],
                scheduled,
                t0,
                pace=pace,
                timeout=timeout,
                model=model,
                api_key=api_key,
            )
            results.append(r)
            if progress:
                progress(r)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results
