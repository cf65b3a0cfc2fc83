"""Clips to send: audio files from a folder, or generated speech (espeak-ng) or noise.

Lengths come from a spec: `libri` (LibriSpeech-like spread, 2-35 s), `uniform:LO:HI`,
`fixed:S` or `list:S1,S2,...`. Every clip is kept as WAV bytes (or the file's own bytes)
plus its duration, so the load loop never touches audio decoding.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 16_000
AUDIO_SUFFIXES = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".m4a": "audio/mp4",
}
TEXT = (
    "the quick brown fox jumps over a lazy dog while seven wizards quietly hum "
    "about mixing jam in boxes near the river and every morning people walk "
    "to the station to catch a train before the sun rises over the hills"
)


@dataclass(frozen=True)
class Clip:
    name: str
    data: bytes  # the encoded file, sent as the request body
    content_type: str
    seconds: float
    pcm: np.ndarray | None = None  # 16 kHz mono float32, for WebSocket streams


def lengths(spec: str, n: int, seed: int = 0) -> list[float]:
    """n clip lengths in seconds from a spec (see the module docstring)."""
    rng = random.Random(seed)
    kind, _, rest = spec.partition(":")
    if kind == "fixed":
        return [float(rest)] * n
    if kind == "list":
        values = [float(v) for v in rest.split(",")]
        return [values[i % len(values)] for i in range(n)]
    if kind == "uniform":
        lo, hi = (float(v) for v in rest.split(":"))
        return [rng.uniform(lo, hi) for _ in range(n)]
    if kind == "libri":
        # LibriSpeech train-clean utterances: median ~14 s, long tail to the 35 s cut.
        return [min(35.0, max(2.0, rng.lognormvariate(2.55, 0.55))) for _ in range(n)]
    raise ValueError(f"unknown length spec {spec!r}: libri, uniform:LO:HI, fixed:S, list:S,..")


def wav_bytes(samples: np.ndarray, rate: int = RATE) -> bytes:
    """float32 mono -> 16-bit PCM WAV file bytes."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV bytes -> (mono float32, rate)."""
    with wave.open(io.BytesIO(data)) as w:
        rate, channels = w.getframerate(), w.getnchannels()
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    return x.reshape(-1, channels).mean(axis=1), rate


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise under a slow syllable-rate envelope: not silence, deterministic."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    envelope = 0.1 + 0.9 * np.abs(np.sin(np.linspace(0, seconds * 3, n) + seed))
    return (rng.standard_normal(n) * 0.1 * envelope).astype(np.float32)


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    """espeak-ng reading random words, trimmed or padded with silence to `seconds`."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is not installed; use --generate noise or --audio DIR")
    rng = random.Random(seed)
    words = TEXT.split()
    text = " ".join(rng.choice(words) for _ in range(int(seconds * 3) + 3))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run(
            [espeak, "-s", "165", "-w", str(out), text],
            check=True,
            capture_output=True,
            timeout=120,
        )
        x, rate = read_wav(out.read_bytes())
    x = _resample(x, rate, RATE)
    n = int(seconds * RATE)
    return np.pad(x[:n], (0, max(0, n - len(x)))).astype(np.float32)


def _resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear interpolation: good enough for load (the server does the careful resampling)."""
    if rate == target:
        return x
    t = np.arange(int(len(x) * target / rate)) * (rate / target)
    return np.interp(t, np.arange(len(x)), x).astype(np.float32)


def generate(kind: str, spec: str, n: int, seed: int = 0) -> list[Clip]:
    """n clips of `kind` (speech or noise) with lengths drawn from `spec`."""
    make = {"speech": speech, "noise": noise}[kind]
    clips = []
    for i, s in enumerate(lengths(spec, n, seed)):
        x = make(s, seed + i)
        clips.append(Clip(f"{kind}-{i:03d}-{s:.1f}s", wav_bytes(x), "audio/wav", s, x))
    return clips


def from_folder(folder: Path, limit: int = 1000) -> list[Clip]:
    """Up to `limit` audio files under folder, sorted by name, sent as they are."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ValueError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {folder}")
    clips = []
    for f in files[:limit]:
        data = f.read_bytes()
        pcm, seconds = _decode(f, data)
        clips.append(Clip(f.name, data, AUDIO_SUFFIXES[f.suffix.lower()], seconds, pcm))
    return clips


def _decode(f: Path, data: bytes) -> tuple[np.ndarray | None, float]:
    """16 kHz mono samples and duration, via soundfile when present, else the wave module."""
    try:
        import soundfile

        x, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        x = x.mean(axis=1)
    except Exception:  # no soundfile, or a format it cannot read (mp3 on old libsndfile)
        try:
            x, rate = read_wav(data)
        except (wave.Error, EOFError):
            return None, _probe_seconds(f)
    return _resample(x, rate, RATE), len(x) / rate


def _probe_seconds(f: Path) -> float:
    """Duration via soxi or ffprobe when Python cannot decode the file (0.0 if neither can)."""
    for cmd in (
        ["soxi", "-D", str(f)],
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(f)],
    ):
        if shutil.which(cmd[0]):
            done = subprocess.run(cmd, capture_output=True, text=True)
            try:
                return float(done.stdout.strip())
            except ValueError:
                continue
    return 0.0
