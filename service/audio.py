"""Client bytes -> mono float32 at the model's rate (WAV/FLAC/OGG/MP3, what FFmpeg reads, raw PCM).

Decoders are tried in order: libsndfile (soundfile), a minimal RIFF/WAV parser for PCM headers
libsndfile refuses, then FFmpeg (PyAV) for WebM, M4A/AAC and the rest. Verdict when all fail:
bytes that no decoder recognises -> 415 "unsupported_media_type"; a format that was recognised
but could not be decoded -> 400 "undecodable_audio"; recognised and cleanly empty -> 400
"empty_audio". Samples are read in blocks, mixed to mono and resampled as a stream, so memory
stays near the size of the 16 kHz output even for hour-long uploads, and an upload longer than
the limit is refused as soon as it is known to be (from the header, else while decoding).
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
import soundfile as sf
import soxr

from service.errors import AudioError, TooLargeError, UnsupportedMediaError
from service.pcm import WAV_ENCODINGS, frame_width, pcm_blocks

MIN_RATE = 1_000
MAX_RATE = 384_000
# soxr's default "HQ" is 20-bit precise, finer than the 16-bit sources clients send; "VHQ"
# (28-bit) took ~1.4x the CPU here (10 min of 44.1 kHz noise -> 16 kHz: 0.61 s vs 0.86 s).
RESAMPLE_QUALITY = "HQ"
BLOCK_FRAMES = 1 << 16
# libsndfile reports unknown lengths (a FLAC written to a pipe) as a huge count: not a duration.
_UNKNOWN_FRAMES = 1 << 62
# Header durations can be estimates (MP3 without a Xing frame), so the cheap up-front refusal
# leaves some slack; the count taken while decoding is exact and always enforced.
_HEADER_SLACK = 1.05
# Samples the resampler may add beyond length x ratio (its rounding), kept free in the room.
RESAMPLER_SLACK = 64
_SF_ERR_UNRECOGNISED_FORMAT = 1


@dataclass(frozen=True)
class Audio:
    """Decoded audio: mono float32 samples at the model's rate plus facts about the input."""

    samples: np.ndarray  # (T,) float32 at the target rate
    duration: float  # seconds of input, before resampling
    sample_rate: int  # the input's rate
    channels: int  # the input's channel count


class _Unreadable(Exception):
    """A decoder could not produce samples; `recognised` says whether it knew the format."""

    def __init__(self, recognised: bool) -> None:
        super().__init__()
        self.recognised = recognised


def check_rate(rate: float) -> int:
    """Return the rate as int, or raise AudioError when it is outside MIN_RATE..MAX_RATE."""
    if not MIN_RATE <= rate <= MAX_RATE or rate != int(rate):
        raise AudioError(
            f"sample rate {rate:g} Hz is outside {MIN_RATE}..{MAX_RATE} Hz",
            code="invalid_sample_rate",
        )
    return int(rate)


def _too_long(max_seconds: float) -> TooLargeError:
    return TooLargeError(
        f"audio is longer than the limit of {max_seconds:g} s", code="audio_too_long"
    )


class _Collector:
    """Mixes (frames, channels) blocks to mono, enforces the limits, resamples as a stream."""

    def __init__(self, rate: float, channels: int, target_rate: int, max_seconds: float) -> None:
        self.rate = check_rate(rate)
        self.channels = channels
        self.target_rate = target_rate
        self.max_seconds = max_seconds
        self.frames = 0
        self._max_frames = max_seconds * self.rate
        self._parts: list[np.ndarray] = []
        # Room reserved from the header's length (check_header), filled as blocks arrive.
        self._out: np.ndarray | None = None
        self._filled = 0
        self._stream = (
            None
            if self.rate == target_rate
            else soxr.ResampleStream(
                self.rate, target_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )
        )

    def check_header(self, frames: float) -> None:
        """Refuse before decoding when the header's length is clearly over the limit; else
        reserve room for the samples it announces, so that a long clip is never held twice
        (blocks plus their concatenation were 2 x 230 MB for an hour at 16 kHz). Untouched
        room costs no memory: a header that claims more than it holds is harmless."""
        if not 0 < frames < _UNKNOWN_FRAMES:
            return
        if frames > self._max_frames * _HEADER_SLACK:
            raise _too_long(self.max_seconds)
        if self.frames == 0:
            size = math.ceil(frames * self.target_rate / self.rate) + RESAMPLER_SLACK
            self._out = np.empty(size, np.float32)

    def add(self, block: np.ndarray) -> None:
        """Take a (frames, channels) block of float samples."""
        if len(block) == 0:
            return
        self.frames += len(block)
        if self.frames > self._max_frames:
            raise _too_long(self.max_seconds)
        if not np.isfinite(block).all():
            raise AudioError("audio contains NaN or infinite samples", code="non_finite_audio")
        # float32 accumulation: a mean over channels needs no float64 copy of the block.
        mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        if self._stream is not None:
            mono = self._stream.resample_chunk(mono, last=False)
        self._keep(mono)

    def _keep(self, mono: np.ndarray) -> None:
        """Copy samples into the reserved room, or beyond it into parts (the block may be a
        reused read buffer: never kept as it is)."""
        end = self._filled + len(mono)
        if self._out is not None and not self._parts and end <= len(self._out):
            self._out[self._filled : end] = mono
            self._filled = end
        else:
            self._parts.append(mono.copy() if self._stream is None else mono)

    def take(self, last: bool = False) -> np.ndarray:
        """The samples collected since the last take; `last` flushes the resampler's tail."""
        if last and self._stream is not None:
            tail = self._stream.resample_chunk(np.zeros(0, np.float32), last=True)
            self._stream = None
            self._keep(tail)
        parts, self._parts = self._parts, []
        if self._out is not None:
            head, self._out, filled = self._out, None, self._filled
            self._filled = 0
            if not parts:  # a header that overstated the length leaves room to give back
                return head[:filled] if filled > 0.9 * len(head) else head[:filled].copy()
            parts.insert(0, head[:filled])
        if not parts:
            return np.zeros(0, np.float32)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def finish(self, min_samples: int) -> Audio:
        """Flush the resampler and apply the emptiness and minimum-length rules."""
        if self.frames == 0:
            raise AudioError("the audio has no samples", code="empty_audio")
        samples = self.take(last=True)
        if len(samples) < min_samples:
            raise AudioError(
                f"audio is shorter than the minimum of {min_samples / self.target_rate:g} s",
                code="audio_too_short",
            )
        return Audio(samples, self.frames / self.rate, self.rate, self.channels)


Reader = Callable[[bytes, int, float], _Collector]


def _read_soundfile(data: bytes, target_rate: int, max_seconds: float) -> _Collector:
    """Decode with libsndfile: WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF, ..."""
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        # Any libsndfile error but "format not recognised" means it knew the format.
        code = getattr(exc, "code", _SF_ERR_UNRECOGNISED_FORMAT)
        raise _Unreadable(recognised=code != _SF_ERR_UNRECOGNISED_FORMAT) from exc
    with f:
        col = _Collector(f.samplerate, f.channels, target_rate, max_seconds)
        col.check_header(f.frames)
        # read(out=...) reads until the data ends, whatever frame count the header claims.
        buf = np.empty((BLOCK_FRAMES, f.channels), np.float32)
        try:
            while len(block := f.read(out=buf)):
                col.add(block)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise _Unreadable(recognised=True) from exc  # FFmpeg may get further
    return col


def _parse_riff(data: bytes) -> tuple[int, int, str, int, int]:
    """Return (rate, channels, encoding, data offset, data bytes) of a PCM/float WAV."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise _Unreadable(recognised=False)
    fmt: tuple[int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk == b"fmt " and size >= 16 and body + 16 <= len(data):
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == 0xFFFE and size >= 26 and body + 26 <= len(data):
                tag = struct.unpack_from("<H", data, body + 24)[0]  # WAVE_FORMAT_EXTENSIBLE
            fmt = (tag, channels, rate, bits)
        elif chunk == b"data" and fmt is not None:
            # Sizes that overrun the upload (a "4 GB" streaming header) mean "up to the end".
            available = len(data) - body
            size = available if size in (0, 0xFFFFFFFF) or size > available else size
            tag, channels, rate, bits = fmt
            if channels == 0 or (tag, bits) not in WAV_ENCODINGS:
                raise _Unreadable(recognised=True)
            return rate, channels, WAV_ENCODINGS[tag, bits], body, size
        pos = body + size + (size & 1)
    raise _Unreadable(recognised=True)


def _read_riff_wav(data: bytes, target_rate: int, max_seconds: float) -> _Collector:
    """Decode a PCM WAV whose header libsndfile refuses (bad sizes, odd rates)."""
    rate, channels, encoding, offset, size = _parse_riff(data)
    col = _Collector(rate, channels, target_rate, max_seconds)
    width = frame_width(encoding, channels)
    col.check_header(size // width)
    # A trailing partial frame is a truncated upload: decoded as far as whole frames go.
    view = memoryview(data)[offset : offset + size - size % width]
    for block in pcm_blocks(view, encoding, channels, BLOCK_FRAMES):
        col.add(block)
    return col


def _read_av(data: bytes, target_rate: int, max_seconds: float) -> _Collector:
    """Decode with FFmpeg: WebM/Opus from browsers, M4A/AAC and whatever else it knows."""
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, EOFError) as exc:
        raise _Unreadable(recognised=False) from exc
    with container:
        if not container.streams.audio:
            raise _Unreadable(recognised=False)  # a video or image: not audio at all
        stream = container.streams.audio[0]
        if stream.codec_context is None:  # e.g. a WAV header with 0 bits per sample
            raise _Unreadable(recognised=True)
        rate = stream.codec_context.sample_rate or stream.sample_rate
        col = _Collector(rate, stream.codec_context.channels, target_rate, max_seconds)
        if stream.duration is not None and stream.time_base is not None:
            col.check_header(float(stream.duration * stream.time_base) * col.rate)
        # Packed float at the stream's rate: a mid-stream rate change does not change the
        # clip's rate. Not planar ("fltp"): PyAV's to_ndarray segfaults on planar output with
        # 8+ channels (issue 20); packed comes out as (1, frames * channels), interleaved.
        resampler = av.AudioResampler(format="flt", rate=col.rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    col.add(_interleaved(out))
            for out in resampler.resample(None):
                col.add(_interleaved(out))
        except (av.error.FFmpegError, ValueError, EOFError) as exc:
            if col.frames == 0:
                raise _Unreadable(recognised=True) from exc
            # else: a truncated or damaged tail; keep what decoded before it.
    return col


def _interleaved(frame: av.AudioFrame) -> np.ndarray:
    """A packed float frame -> (frames, channels) float32 (its own layout: it may change)."""
    return frame.to_ndarray().reshape(-1, len(frame.layout.channels))


def decode_audio(
    data: bytes, target_rate: int, *, max_seconds: float, min_samples: int, ffmpeg: bool = True
) -> Audio:
    """Decode an uploaded file to mono float32 at target_rate (blocking: call it in a thread).
    ffmpeg=False leaves FFmpeg out (the server runs it in a separate process: sandbox.py)."""
    if not data:
        raise AudioError("the upload is empty", code="empty_audio")
    recognised = empty = False
    readers: tuple[Reader, ...] = (_read_soundfile, _read_riff_wav)
    if ffmpeg:
        readers += (_read_av,)
    for read in readers:
        try:
            col = read(data, target_rate, max_seconds)
        except _Unreadable as exc:
            recognised = recognised or exc.recognised
            continue
        if col.frames:
            return col.finish(min_samples)
        empty = True  # a later decoder may still find samples (e.g. a zero-size data chunk)
    if empty:
        raise AudioError("the audio has no samples", code="empty_audio")
    if recognised:
        raise AudioError("the audio could not be decoded", code="undecodable_audio")
    raise UnsupportedMediaError(
        "the upload is not audio in a known format (WAV, FLAC, OGG, MP3, WebM, M4A, ...)"
    )


class PcmDecoder:
    """Headerless little-endian PCM -> mono float32 at target_rate, chunk by chunk: the one raw
    decoder of REST bodies (one chunk) and WebSocket frames (a frame split mid-sample is fine)."""

    def __init__(
        self,
        encoding: str,
        rate: int,
        target_rate: int,
        channels: int = 1,
        max_seconds: float = math.inf,
    ) -> None:
        self.encoding = encoding
        self.channels = channels
        self.width = frame_width(encoding, channels)  # bytes per frame
        self.collector = _Collector(rate, channels, target_rate, max_seconds)
        self._rest = b""  # a frame split across two chunks

    @property
    def seconds(self) -> float:
        """Seconds of input decoded so far, before resampling."""
        return self.collector.frames / self.collector.rate

    def decode(self, data: bytes) -> np.ndarray:
        """One chunk -> the samples it completes (the resampler may hold a few back)."""
        self.add(data)
        return self.collector.take()

    def add(self, data: bytes) -> None:
        """Decode a chunk into the collector."""
        if self._rest:
            data = self._rest + data
        whole = len(data) - len(data) % self.width
        self._rest = bytes(data[whole:])
        for block in pcm_blocks(
            memoryview(data)[:whole], self.encoding, self.channels, BLOCK_FRAMES
        ):
            self.collector.add(block)

    def flush(self) -> np.ndarray:
        """The resampler's tail; a dangling partial frame is a truncated upload and dropped."""
        return self.collector.take(last=True)


def decode_pcm(
    data: bytes,
    sample_rate: int,
    encoding: str = "pcm_s16le",
    channels: int = 1,
    *,
    target_rate: int,
    max_seconds: float = math.inf,
    min_samples: int = 0,
) -> Audio:
    """Decode headerless little-endian PCM (pcm_s16le, pcm_f32le, pcm_s32le, pcm_u8, ...)."""
    pcm = PcmDecoder(encoding, sample_rate, target_rate, channels, max_seconds)
    if len(data) % pcm.width:
        raise AudioError(
            f"{len(data)} bytes is not a whole number of {pcm.width}-byte {encoding} frames",
            code="invalid_pcm_length",
        )
    pcm.collector.check_header(len(data) // pcm.width)
    pcm.add(data)
    return pcm.collector.finish(min_samples)


def encode_wav(samples: np.ndarray, rate: int) -> bytes:
    """Encode (T,) or (T, C) float samples as a 16-bit PCM WAV."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()
