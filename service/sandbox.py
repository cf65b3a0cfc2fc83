"""Isolated decoding: what libsndfile cannot read is decoded by FFmpeg in worker processes.

FFmpeg (PyAV) is a large C library fed the client's bytes: a crash in it (issue 20: 8-channel
Opus segfaulted inside `AudioFrame.to_ndarray`) must cost one worker process, never the server.
A small pool of long-lived workers (not one process per upload: spawning one and importing
numpy/av/soxr costs ~0.5 s, see BENCHMARKS.md) each decodes one upload at a time under an
address-space limit, and the parent waits with a deadline. The duration limit is enforced by
the decoder itself while it decodes (audio._Collector), so a decompression bomb stops at the
limit; the memory limit catches whatever the duration check cannot see.

Verdicts: a worker that dies, or runs past the decode timeout, is killed and replaced, and the
upload is answered 400 undecodable_audio; no free worker within the queue timeout is 503.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import pickle
import resource
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

from service.audio import Audio, decode_audio
from service.errors import AudioError, ServiceError, TooLargeError, UnavailableError
from service.settings import Settings

log = logging.getLogger(__name__)

# Errors of the in-process libsndfile pass that FFmpeg may still turn into samples.
_RETRY_WITH_FFMPEG = ("undecodable_audio", "unsupported_media_type", "empty_audio")
# One glibc arena per thread would reserve 64 MB of address space each; the limit below is on
# address space, so keep the worker's arenas few. One BLAS thread: the worker only mixes.
_WORKER_ENV = {"MALLOC_ARENA_MAX": "2", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


@dataclass(frozen=True)
class PoolLimits:
    workers: int = 2
    decode_timeout: float = 60.0  # seconds one upload may take to decode
    queue_timeout: float = 10.0  # seconds an upload may wait for a free worker
    memory_bytes: int = 1 << 30  # address space a worker may add to what it has after start


def decode_limits(settings: Settings) -> PoolLimits:
    return PoolLimits(
        workers=settings.decode_workers,
        decode_timeout=settings.decode_timeout,
        queue_timeout=settings.decode_queue_timeout,
        memory_bytes=settings.decode_memory_mb << 20,
    )


class _Worker:
    """One decoder process and the parent's end of its socket."""

    def __init__(self, memory_bytes: int) -> None:
        parent, child = socket.socketpair()
        env = {**os.environ, **_WORKER_ENV}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.sandbox", str(child.fileno()), str(memory_bytes)],
            pass_fds=(child.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        child.close()
        self.conn = Connection(parent.detach())

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.conn.close()

    def decode(self, data: bytes, timeout: float, **kwargs: object) -> Audio:
        """Send one upload; the decoded Audio, or the ServiceError the decoder raised."""
        self.conn.send(kwargs)
        self.conn.send_bytes(data)
        if not self.conn.poll(timeout):
            raise _Hung(timeout)
        kind, payload = self.conn.recv()
        if kind == "error":
            raise payload
        samples = np.frombuffer(self.conn.recv_bytes(), np.float32)
        return Audio(samples, **payload)


class _Hung(Exception):
    pass


class DecodePool:
    """Bounded pool of decoder processes; blocking API, see decode_isolated for the async one."""

    def __init__(self, limits: PoolLimits) -> None:
        self.limits = limits
        self._idle: deque[_Worker] = deque()
        self._free = threading.Semaphore(limits.workers)
        self._lock = threading.Lock()
        self._closed = False
        # Threads that wait on a worker: one per worker plus those queued for one.
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=limits.workers * 4, thread_name_prefix="decode"
        )

    def start(self) -> None:
        """Start the worker processes now rather than on the first upload."""
        with self._lock:
            while len(self._idle) < self.limits.workers:
                self._idle.append(_Worker(self.limits.memory_bytes))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            while self._idle:
                self._idle.pop().kill()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def decode(self, data: bytes, deadline: float, **kwargs: object) -> Audio:
        """Decode in a worker; `deadline` (monotonic) bounds the wait for a free one."""
        if not self._free.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise UnavailableError(
                "all audio decoders are busy; retry later", retry_after=self.limits.queue_timeout
            )
        try:
            with self._lock:
                if self._closed:
                    raise UnavailableError("the server is shutting down")
                worker = self._idle.pop() if self._idle else _Worker(self.limits.memory_bytes)
            healthy = False
            try:
                audio = worker.decode(data, self.limits.decode_timeout, **kwargs)
                healthy = True
                return audio
            except ServiceError:
                healthy = True  # the decoder answered: a verdict on the audio
                raise
            except _Hung:
                log.warning("audio decoder ran past %.0f s; killed", self.limits.decode_timeout)
                raise AudioError(
                    f"the audio could not be decoded within {self.limits.decode_timeout:g} s",
                    code="undecodable_audio",
                ) from None
            except (EOFError, OSError, pickle.UnpicklingError):
                code = worker.proc.poll()
                log.warning("audio decoder process died (exit %s) on an upload", code)
                raise AudioError(
                    "the audio could not be decoded (the decoder failed on it)",
                    code="undecodable_audio",
                ) from None
            finally:
                with self._lock:
                    if healthy and not self._closed:
                        self._idle.append(worker)
                    else:
                        worker.kill()
        finally:
            self._free.release()


_POOL: DecodePool | None = None
_POOL_LOCK = threading.Lock()


def pool(limits: PoolLimits | None = None) -> DecodePool:
    """The process's decode pool (decoder processes are a process-wide resource, like threads)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or (limits is not None and _POOL.limits != limits):
            if _POOL is not None:
                _POOL.close()
            _POOL = DecodePool(limits or PoolLimits())
        return _POOL


def close_pool() -> None:
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
        _POOL = None


async def decode_isolated(data: bytes, limits: PoolLimits, **kwargs: object) -> Audio:
    """libsndfile in this process (fast, safe), else FFmpeg in a decoder process."""
    try:
        return await asyncio.to_thread(decode_audio, data, ffmpeg=False, **kwargs)  # type: ignore[arg-type]
    except AudioError as exc:
        if exc.code not in _RETRY_WITH_FFMPEG or not data:
            raise
    except (ServiceError, MemoryError):
        raise
    except Exception:  # libsndfile failing oddly on the bytes: the worker gives the verdict
        log.warning("in-process decoding failed; trying a decoder process", exc_info=True)
    decoders = pool(limits)
    deadline = time.monotonic() + limits.queue_timeout
    future = decoders.executor.submit(decoders.decode, data, deadline, **kwargs)
    return await asyncio.wrap_future(future)


def _serve(conn: Connection) -> None:
    """Worker loop: decode uploads until the parent closes the socket."""
    while True:
        try:
            kwargs = conn.recv()
            data = conn.recv_bytes()
        except EOFError:
            return
        try:
            audio = decode_audio(data, **kwargs)
        except ServiceError as exc:
            conn.send(("error", exc))
            continue
        except MemoryError:
            conn.send(
                (
                    "error",
                    TooLargeError(
                        "decoding this audio needs more memory than a decoder may use",
                        code="audio_too_large",
                    ),
                )
            )
            continue
        except Exception as exc:  # a decoder library failing on the bytes: the client's audio
            log.warning("decoder error: %r", exc)
            conn.send(
                ("error", AudioError("the audio could not be decoded", code="undecodable_audio"))
            )
            continue
        info = {
            "duration": audio.duration,
            "sample_rate": audio.sample_rate,
            "channels": audio.channels,
        }
        conn.send(("ok", info))
        conn.send_bytes(np.ascontiguousarray(audio.samples, np.float32).data)
        del audio, data


def _main(fd: int, memory_bytes: int) -> None:
    # Limit what this process may add to the address space it already has (imports done).
    used = _address_space()
    resource.setrlimit(resource.RLIMIT_AS, (used + memory_bytes, used + memory_bytes))
    _serve(Connection(fd))


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


if __name__ == "__main__":
    _main(int(sys.argv[1]), int(sys.argv[2]))
