"""Admission by expected wait (issue 20), as TEI bounds concurrency: a request is admitted only
if the server expects to start it within max_queue_time and to finish it before its deadline.

The estimate comes from measured throughput: audio seconds of padded batch cost per second of
compute, an exponentially weighted mean updated as batches finish. The wait ahead of a new
request is the audio already queued or computing divided by that throughput. Counting windows
(the old bounded queue) let accepted requests wait 38 s at p50 under a 4x flood; counting the
time they will wait keeps the promise the 200 makes. Pure: no torch, no asyncio.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from service.errors import OverloadedError, TooLargeError

# Weight of the newest batch in the throughput mean: reacts within ~5 batches to a change
# (another tenant on the machine) without one slow batch swinging it.
SMOOTHING = 0.2


@dataclass
class Throughput:
    """Audio seconds served per compute second, measured; None until the first batch."""

    smoothing: float = SMOOTHING
    rate: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def observe(self, audio_seconds: float, compute_seconds: float) -> None:
        """One finished batch (called from the model's worker thread)."""
        if audio_seconds <= 0 or compute_seconds <= 0:
            return
        sample = audio_seconds / compute_seconds
        with self._lock:
            if self.rate is None:
                self.rate = sample
            else:
                self.rate += self.smoothing * (sample - self.rate)


@dataclass(frozen=True)
class Estimate:
    wait: float  # seconds before a new request's work starts
    work: float  # seconds of compute the request needs


def estimate(backlog_audio: float, request_audio: float, throughput: Throughput) -> Estimate | None:
    """Expected wait and work in seconds; None while nothing has been measured."""
    rate = throughput.rate
    if rate is None:
        return None
    return Estimate(backlog_audio / rate, request_audio / rate)


@dataclass(frozen=True)
class Deadline:
    """How long a request may take: `base` plus its expected compute times `margin`, at most
    `cap`. A fixed timeout (the old 120 s) refused every upload of more than ~9 min here with
    a 413, though the documented limit is an hour; scaling with the work lets long audio
    finish while a short clip keeps a short bound."""

    base: float
    margin: float
    cap: float

    def seconds(self, est: Estimate | None) -> float:
        """The deadline for a request with this estimate; `cap` while nothing is measured."""
        if est is None:
            return self.cap
        return min(self.cap, self.base + self.margin * est.work)


def admit(est: Estimate | None, max_queue_time: float, deadline: float) -> None:
    """Raise unless a request with this estimate can start in time and finish by its deadline.

    Work that could not finish by the deadline even on an idle server is 413 (retrying cannot
    help); a wait that is too long is 429 with Retry-After: when the queue ahead should have
    drained enough for the request to be admitted.
    """
    if est is None:
        return
    if est.work > deadline:
        raise TooLargeError(
            f"this audio needs about {est.work:.0f} s of compute, more than the longest "
            f"request time of {deadline:g} s; send shorter audio",
            code="audio_too_long",
        )
    allowed = min(max_queue_time, deadline - est.work)
    if est.wait > allowed:
        retry = math.ceil(est.wait - allowed)
        raise OverloadedError(
            f"the server is busy: expected wait {est.wait:.1f} s is over {allowed:.1f} s",
            retry_after=max(1, retry),
        )
