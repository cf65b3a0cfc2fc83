"""Streaming transcription state: client PCM -> model windows -> CTC frames -> partials, finals.

Wav2Vec2 sees a whole clip, so a stream is chunked inference with context: each step runs the
model on [left context | chunk | lookahead] and keeps the CTC frames of the chunk only. Windows
start on frame boundaries (multiples of samples_per_frame), so frame j of a window starting at
stream frame a is stream frame a + j, and the kept frames line up with the whole clip's frames.

Committed frames never change. They collect in the open segment until a pause, a run of
`pause` frames whose greedy token is the CTC blank or the word delimiter, closes it (the cut
lies inside the run, so no character and no collapsed repeat is split), or until the segment
reaches `max_segment` frames (cut after its last word delimiter). A closed segment is decoded
alone (greedy, or with `decode_final`, a beam search over the segment's logits) and sent as a
`final`; with the greedy decoder the finals joined by single spaces are the offline transcript
(whitespace runs aside) wherever the windowed frames equal the whole clip's.

Nothing here knows about FastAPI: `infer` is any coroutine from window samples to logits, and
`LiveStream` takes client bytes; the served model (runtime.py) builds both.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service import decode
from service.audio import PcmDecoder
from service.lifecycle import Lifecycle
from service.metrics import ACTIVE_STREAMS, STREAM_LATENCY
from service.schemas import Final, Partial
from service.wav2vec2.tokenizer import CTCTokenizer, Decoded

if TYPE_CHECKING:
    from service.wav2vec2.loading import LoadedModel

# (window samples, the stream sample they start at) -> (frames, vocab) logits
Infer = Callable[[np.ndarray, int], Awaitable[np.ndarray]]
DecodeFinal = Callable[[np.ndarray], Awaitable[Decoded]]  # a segment's (frames, vocab) logits
Message = Partial | Final


@dataclass(frozen=True)
class _Closed:
    """A closed segment waiting to be decoded: frames [start, end) of the stream."""

    start: int
    end: int
    ids: np.ndarray
    logits: np.ndarray | None  # kept only when finals are not greedy
    arrived: float | None  # when its last audio arrived (for the latency metric)


@dataclass(frozen=True)
class Windowing:
    """Window geometry in model frames; step and min_samples in samples."""

    step: int  # samples per output frame
    min_samples: int  # samples that give one frame (the receptive field)
    chunk: int
    left: int
    lookahead: int
    pause: int
    max_segment: int
    parallel: int = 4
    num_frames: Callable[[int], int] | None = None  # the model's length arithmetic

    def frames_in(self, samples: int) -> int:
        if self.num_frames is not None:
            return self.num_frames(samples) if samples >= self.min_samples else 0
        return 0 if samples < self.min_samples else (samples - self.min_samples) // self.step + 1

    def samples_for(self, frames: int) -> int:
        """Fewest samples from a frame boundary that give `frames` frames."""
        n = (frames - 1) * self.step + self.min_samples
        while self.frames_in(n) < frames:  # adapters round differently; rarely loops
            n += self.step
        return n


def windowing_for(
    loaded: LoadedModel,
    *,
    chunk: float,
    left: float,
    lookahead: float,
    pause: float,
    max_segment: float,
    parallel: int = 4,
) -> Windowing:
    """A model's window geometry from lengths in seconds, rounded to whole frames."""
    frames = lambda seconds: max(0, round(seconds / loaded.frame_seconds))  # noqa: E731
    return Windowing(
        step=loaded.config.samples_per_frame,
        min_samples=loaded.min_samples,
        chunk=max(1, frames(chunk)),
        left=frames(left),
        lookahead=frames(lookahead),
        pause=max(2, frames(pause)),
        max_segment=max(1, frames(max_segment)),
        parallel=parallel,
        num_frames=loaded.config.num_frames,
    )


class Stream:
    """One stream's audio since the left context, its open segment, and what to send next."""

    def __init__(
        self,
        windowing: Windowing,
        tokenizer: CTCTokenizer,
        frame_seconds: float,
        infer: Infer,
        *,
        interim: bool = True,
        clock: Callable[[], float] = time.monotonic,
        decode_final: DecodeFinal | None = None,
    ) -> None:
        self.w = windowing
        self.tokenizer = tokenizer
        self.frame_seconds = frame_seconds
        self.infer = infer
        self.decode_final = decode_final
        self.interim = interim
        self.clock = clock
        vocab = max(tokenizer.id_to_token) + 1
        self._silent = np.zeros(vocab + 1, bool)  # by id; the last slot for unknown ids
        for i, tok in tokenizer.id_to_token.items():
            self._silent[i] = tok in (tokenizer.pad_token, tokenizer.word_delimiter_token)
        ids = tokenizer.id_to_token.items()
        self._delimiters = [i for i, t in ids if t == tokenizer.word_delimiter_token]
        self._pads = [i for i, t in ids if t == tokenizer.pad_token]
        self.received = 0  # samples at the model's rate
        self.done = 0  # frames committed
        self.peak_pending = 0  # most uncommitted samples held (the back-pressure bound)
        self._base = 0  # stream sample of self._audio[0], on a frame boundary
        self._audio = np.zeros(0, np.float32)
        self._parts: list[np.ndarray] = []
        self.seg_start = 0  # first frame of the open segment
        self._ids = np.zeros(0, np.int64)  # committed ids of the open segment
        self._logits: np.ndarray | None = None  # and their logits, for decode_final
        self._tail = np.zeros(0, np.int64)  # tentative ids from the last lookahead
        self._unsent: list[_Closed] = []  # closed segments whose finals are not yet returned
        self._partial = ""
        self._covered = 0  # samples the last partial covered
        self._ends: list[int] = []  # arrival log: stream sample ends of received frames ...
        self._times: list[float] = []  # ... and when they arrived

    @property
    def pending_samples(self) -> int:
        """Samples received and not yet committed as frames."""
        return self.received - self.done * self.w.step

    def feed(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        self._parts.append(samples)
        self.received += len(samples)
        self._ends.append(self.received)
        self._times.append(self.clock())
        self.peak_pending = max(self.peak_pending, self.pending_samples)

    async def advance(self) -> list[Message]:
        """Run every chunk whose lookahead has arrived; the finals and partial to send."""
        await self._run_chunks()
        out: list[Message] = await self._finals()
        if self.interim:
            out += self._partial_message()
        return out

    async def _run_chunks(self) -> None:
        """Commit every chunk whose lookahead has arrived (closed segments join _unsent)."""
        w = self.w
        while self.received >= w.samples_for(self.done + w.chunk + w.lookahead):
            firsts = [self.done]
            while len(firsts) < w.parallel and self.received >= w.samples_for(
                firsts[-1] + 2 * w.chunk + w.lookahead
            ):
                firsts.append(firsts[-1] + w.chunk)
            ends = [f + w.chunk for f in firsts]
            needs = [self._window(f, w.samples_for(e + w.lookahead)) for f, e in zip(firsts, ends)]
            for (a, logits), f, e in zip(await asyncio.gather(*needs), firsts, ends):
                self._unsent += self._commit(logits, a, f, e)
            self._trim()

    async def finish(self) -> list[Message]:
        """No more audio: commit every frame left, close the open segment."""
        await self._run_chunks()
        total = self.w.frames_in(self.received)
        if total > self.done:
            a, logits = await self._window(self.done, self.received)
            self._unsent += self._commit(logits, a, self.done, total)
        self._tail = self._tail[:0]
        self._unsent += self._close(len(self._ids))
        return await self._finals()

    def cut_short(self) -> list[Message]:
        """Out of time (a drain past its timeout): finals, decoded greedily and at once, for
        every frame the model has computed, the last window's lookahead included. Audio not
        yet through the model gets none; `covered_seconds` says where the finals stop.

        Safe after `advance` or `finish` was cancelled at any await: a closed segment leaves
        `_unsent` only when its final is returned, and frames are committed after the forward.
        """
        self._ids = np.concatenate([self._ids, self._tail])
        self._tail = self._tail[:0]
        self._logits = None
        closed, self._unsent = self._unsent + self._close(len(self._ids)), []
        return [f for seg in closed if (f := self._final(seg, self._greedy(seg)))]

    @property
    def covered_seconds(self) -> float:
        """Seconds of the stream that the finals sent so far, or being sent, cover."""
        return decode.seconds(self.seg_start + len(self._ids), self.frame_seconds)

    async def _window(self, first: int, end: int) -> tuple[int, np.ndarray]:
        """Logits of samples [a * step, end), a = first - left context; returns (a, logits)."""
        if self._parts:
            self._audio = np.concatenate([self._audio, *self._parts])
            self._parts = []
        a = max(0, first - self.w.left, self._base // self.w.step)
        lo = a * self.w.step - self._base
        return a, await self.infer(self._audio[lo : end - self._base], a * self.w.step)

    def _commit(self, logits: np.ndarray, a: int, first: int, end: int) -> list[_Closed]:
        ids = logits.argmax(axis=-1)
        self._ids = np.concatenate([self._ids, ids[first - a : end - a]])
        if self.decode_final is not None:
            kept = logits[first - a : end - a]
            self._logits = kept if self._logits is None else np.concatenate([self._logits, kept])
        self._tail = ids[end - a :]
        self.done = end
        return self._segments()

    def _trim(self) -> None:
        """Forget audio older than the next window's left context and old arrival entries."""
        keep = max(0, self.done - self.w.left) * self.w.step
        if keep > self._base:
            self._audio = self._audio[keep - self._base :].copy()
            self._base = keep
        old = bisect.bisect_right(self._ends, min(self.seg_start * self.w.step, self._covered))
        del self._ends[:old], self._times[:old]

    def _segments(self) -> list[_Closed]:
        """Close segments at pauses and at the maximum length."""
        out: list[_Closed] = []
        while True:
            cut = self._pause_cut()
            if cut is None and len(self._ids) >= self.w.max_segment:
                cut = self._forced_cut()
            if cut is None:
                return out
            out += self._close(cut)

    def _pause_cut(self) -> int | None:
        silent = self._silent[np.minimum(self._ids, len(self._silent) - 1)]
        edges = np.flatnonzero(np.diff(np.concatenate([[0], silent.astype(np.int8), [0]])))
        for start, end in zip(edges[::2], edges[1::2]):
            if end - start < self.w.pause:
                continue
            if start == 0:  # leading silence: drop it, keeping a little before speech
                cut = int(end) - self.w.pause // 2
                return cut if cut > 0 else None
            return int(start) + self.w.pause // 2
        return None

    def _forced_cut(self) -> int:
        """After the last word delimiter of the first max_segment frames, else the last blank."""
        head = self._ids[: self.w.max_segment]
        for ids in (self._delimiters, self._pads):
            hits = np.flatnonzero(np.isin(head, ids))
            if len(hits):
                return int(hits[-1]) + 1
        return len(head)

    def _close(self, cut: int) -> list[_Closed]:
        """Frames [seg_start, seg_start + cut) leave the open segment, to be decoded alone."""
        ids, self._ids = self._ids[:cut], self._ids[cut:]
        logits = None
        if self._logits is not None:
            logits, self._logits = self._logits[:cut], self._logits[cut:]
        start, self.seg_start = self.seg_start, self.seg_start + cut
        arrived = self._arrived(self.seg_start * self.w.step - 1)
        return [_Closed(start, self.seg_start, ids, logits, arrived)]

    async def _finals(self) -> list[Message]:
        """Closed segments -> finals (none for a silent one), in order. The segments stay in
        `_unsent` until all are decoded: cancelled mid-way, cut_short still has them."""
        decoded = []
        for seg in self._unsent:
            if seg.logits is not None and self.decode_final is not None and len(seg.ids):
                decoded.append(await self.decode_final(seg.logits))
            else:
                decoded.append(self._greedy(seg))
        closed, self._unsent = self._unsent, []
        return [f for seg, d in zip(closed, decoded) if (f := self._final(seg, d))]

    def _greedy(self, seg: _Closed) -> Decoded:
        return self.tokenizer.decode(seg.ids.tolist())

    def _final(self, seg: _Closed, decoded: Decoded) -> Final | None:
        """A segment's final; None when it says nothing."""
        if not len(seg.ids) or not decoded.text:
            return None
        if seg.arrived is not None:
            STREAM_LATENCY.labels("final").observe(self.clock() - seg.arrived)
        fs = self.frame_seconds
        return Final(
            text=decoded.text,
            words=decode.words(decoded, fs, first_frame=seg.start),
            start=decode.seconds(seg.start, fs),
            end=decode.seconds(seg.end, fs),
        )

    def _partial_message(self) -> list[Message]:
        text = self.tokenizer.decode(np.concatenate([self._ids, self._tail]).tolist()).text
        if text == self._partial:
            return []
        self._partial = text
        covered = min(self.received, (self.done + len(self._tail)) * self.w.step)
        arrived = self._arrived(self._covered)
        if arrived is not None:
            STREAM_LATENCY.labels("partial").observe(self.clock() - arrived)
        self._covered = covered
        return [Partial(text=text, start=decode.seconds(self.seg_start, self.frame_seconds))]

    def _arrived(self, sample: int) -> float | None:
        """When the given sample arrived (the oldest audio a message covers), if logged."""
        i = bisect.bisect_right(self._ends, max(0, sample))
        return self._times[i] if i < len(self._times) else None


class LiveStream:
    """One client's stream: its raw PCM decoded as it arrives, fed to a Stream, and every
    second of input counted through `on_audio` as soon as it is decoded."""

    def __init__(self, stream: Stream, pcm: PcmDecoder, on_audio: Callable[[float], None]) -> None:
        self.stream = stream
        self.pcm = pcm
        self.on_audio = on_audio

    @property
    def seconds(self) -> float:
        """Seconds of audio received, before resampling."""
        return self.pcm.seconds

    @property
    def peak_pending(self) -> int:
        return self.stream.peak_pending

    async def feed(self, data: bytes) -> list[Message]:
        """One binary frame -> the finals and partial it makes possible."""
        before = self.pcm.seconds
        self.stream.feed(self.pcm.decode(data))
        self.on_audio(self.pcm.seconds - before)
        return await self.stream.advance()

    async def finish(self) -> list[Message]:
        """No more audio: the finals of everything received."""
        self.stream.feed(self.pcm.flush())
        return await self.stream.finish()

    def cut_short(self) -> list[Message]:
        """Out of time: the finals of what the model has computed (Stream.cut_short)."""
        return self.stream.cut_short()

    @property
    def covered_seconds(self) -> float:
        """Seconds, at the model's rate, that the finals sent so far cover."""
        return self.stream.covered_seconds


@dataclass
class StreamStats:
    """Open streams, counted once (app.state.streams): the limit, the gauge and the drain."""

    active: int = 0
    peak_pending_samples: int = 0  # the most unprocessed audio any stream held

    @contextlib.contextmanager
    def open(self, lifecycle: Lifecycle) -> Iterator[None]:
        """One stream from admission to close; the drain waits for it like for a request."""
        self.active += 1
        ACTIVE_STREAMS.set(self.active)
        lifecycle.enter()
        try:
            yield
        finally:
            self.active -= 1
            ACTIVE_STREAMS.set(self.active)
            lifecycle.leave()
