"""service/audio.py: a table of good and bad uploads, all generated here."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from service import audio
from service.audio import PcmDecoder, decode_audio, decode_pcm, encode_wav
from service.errors import (
    AudioError,
    BadFieldError,
    ServiceError,
    TooLargeError,
    UnsupportedMediaError,
)

SR = 16_000
MIN_SAMPLES = 400


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    """A (T, C) float32 chord, a different pitch per channel."""
    t = np.arange(int(seconds * rate)) / rate
    cols = [0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def write(x: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def ffmpeg(tmp_path: Path, wav: bytes, name: str, *args: str) -> bytes:
    """Encode a WAV with the ffmpeg CLI; missing ffmpeg fails under CI=true, else skips."""
    if shutil.which("ffmpeg") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("ffmpeg is required when CI=true")
        pytest.skip("ffmpeg is not installed")
    out = tmp_path / name
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "wav", "-i", "pipe:0"]
    subprocess.run([*cmd, *args, str(out)], input=wav, check=True)
    return out.read_bytes()


def wav_header(
    rate: int, channels: int = 1, bits: int = 16, data_size: int = 0, tag: int = 1
) -> bytes:
    """A hand-made 44-byte RIFF/WAVE header."""
    align = channels * bits // 8
    return (
        b"RIFF"
        + struct.pack("<I", (36 + data_size) & 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, tag, channels, rate, rate * align, align, bits)
        + b"data"
        + struct.pack("<I", data_size)
    )


def decode(data: bytes, max_seconds: float = 60.0) -> audio.Audio:
    return decode_audio(data, SR, max_seconds=max_seconds, min_samples=MIN_SAMPLES)


def expect(exc: type[ServiceError], code: str, data: bytes, **kw: float) -> ServiceError:
    with pytest.raises(exc) as info:
        decode(data, **kw)
    assert info.value.code == code, info.value.message
    return info.value


STEREO_44K = tone(1.5, 44_100, channels=2)
# name -> (encoder, input rate, tolerance in seconds for codec priming/padding)
FORMATS = {
    "wav": (lambda p: write(STEREO_44K, 44_100, "WAV", "PCM_16"), 44_100, 0.0),
    "wav_float": (lambda p: write(STEREO_44K, 44_100, "WAV", "FLOAT"), 44_100, 0.0),
    "flac": (lambda p: write(STEREO_44K, 44_100, "FLAC"), 44_100, 0.0),
    "ogg_vorbis": (lambda p: write(STEREO_44K, 44_100, "OGG", "VORBIS"), 44_100, 0.0),
    "mp3": (lambda p: ffmpeg(p, encode_wav(STEREO_44K, 44_100), "a.mp3"), 44_100, 0.06),
    "ogg_opus": (
        lambda p: ffmpeg(p, encode_wav(STEREO_44K, 44_100), "a.opus", "-c:a", "libopus"),
        48_000,
        0.03,
    ),
    "webm_opus": (
        lambda p: ffmpeg(p, encode_wav(STEREO_44K, 44_100), "a.webm", "-c:a", "libopus"),
        48_000,
        0.03,
    ),
    "m4a_aac": (
        lambda p: ffmpeg(p, encode_wav(STEREO_44K, 44_100), "a.m4a", "-c:a", "aac"),
        44_100,
        0.06,
    ),
}


@pytest.mark.parametrize("name", FORMATS)
def test_formats_decode_to_16k_mono(name: str, tmp_path: Path) -> None:
    make, rate, tolerance = FORMATS[name]
    a = decode(make(tmp_path))
    assert a.samples.dtype == np.float32 and a.samples.ndim == 1
    assert a.channels == 2 and a.sample_rate == rate
    assert a.duration == pytest.approx(1.5, abs=tolerance)
    assert len(a.samples) == pytest.approx(a.duration * SR, abs=2)
    # Lossy codecs change the waveform but not its loudness: mono of two 0.3 sines.
    rms = float(np.sqrt(np.mean(a.samples.astype(np.float64) ** 2)))
    assert rms == pytest.approx(0.15, rel=0.1)


def test_wav_matches_mean_then_soxr() -> None:
    x = tone(1.0, 44_100, channels=2)
    a = decode(write(x, 44_100, "WAV", "FLOAT"))
    want = soxr.resample(x.mean(axis=1), 44_100, SR, quality=audio.RESAMPLE_QUALITY)
    assert len(a.samples) == len(want) == SR
    # Streamed in blocks vs all at once: the same filter, so only float rounding differs.
    np.testing.assert_allclose(a.samples, want, atol=1e-4)


def test_64_channels_averaged() -> None:
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (8_000, 64)).astype(np.float32)
    a = decode(write(x, SR, "WAV", "FLOAT"))
    assert a.channels == 64
    np.testing.assert_allclose(a.samples, x.mean(axis=1), atol=1e-6)


def test_8k_is_upsampled() -> None:
    a = decode(write(tone(2.0, 8_000), 8_000, "WAV", "PCM_16"))
    assert (a.sample_rate, a.duration, len(a.samples)) == (8_000, 2.0, 2 * SR)


def test_truncated_wav_decodes_what_is_there() -> None:
    data = write(tone(1.0, SR), SR, "WAV", "PCM_16")
    a = decode(data[: 44 + 2 * 5_000 + 1])  # half a sample at the end
    assert len(a.samples) == 5_000


@pytest.mark.parametrize("reader", ["libsndfile", "riff"])
def test_header_claiming_4gb(reader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x = tone(1.0, SR)
    data = wav_header(SR, data_size=0xFFFFFFF0) + (x[:, 0] * 32767).astype("<i2").tobytes()
    if reader == "riff":  # the fallback for headers libsndfile refuses
        monkeypatch.setattr(audio, "_read_soundfile", audio._read_riff_wav)
    a = decode(data)
    assert a.duration == 1.0
    np.testing.assert_allclose(a.samples, x[:, 0], atol=1e-4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_wav(bad: float) -> None:
    x = tone(0.5, SR)
    x[100, 0] = bad
    expect(AudioError, "non_finite_audio", write(x, SR, "WAV", "FLOAT"))


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_audio"),
        (wav_header(SR), "empty_audio"),
        (np.random.default_rng(0).bytes(10_000), "unsupported_media_type"),
        (b"hello, this is not audio\n" * 40, "unsupported_media_type"),
        (b"fLaC" + bytes(40), "undecodable_audio"),
    ],
    ids=["empty", "header_only", "random", "text", "broken_flac"],
)
def test_unusable_bytes(data: bytes, code: str) -> None:
    exc = expect(AudioError, code, data)
    assert exc.status == (415 if code == "unsupported_media_type" else 400)
    assert isinstance(exc, UnsupportedMediaError) == (exc.status == 415)


@pytest.mark.parametrize("rate", [0, 1, 999, 1_000_000])
def test_bad_rate_in_header(rate: int) -> None:
    pcm = bytes(2 * 16_000)
    exc = expect(AudioError, "invalid_sample_rate", wav_header(rate, data_size=len(pcm)) + pcm)
    assert exc.status == 400


def test_too_long_is_refused_from_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(self: object, block: np.ndarray) -> None:
        raise AssertionError("decoded samples of a file the header says is too long")

    data = write(tone(10.0, SR), SR, "WAV", "PCM_16")
    monkeypatch.setattr(audio._Collector, "add", never)
    exc = expect(TooLargeError, "audio_too_long", data, max_seconds=5.0)
    assert exc.status == 413 and "5 s" in exc.message


def test_too_long_without_a_length_in_the_header(tmp_path: Path) -> None:
    webm = ffmpeg(tmp_path, encode_wav(tone(3.0, SR), SR), "a.webm", "-c:a", "libopus")
    expect(TooLargeError, "audio_too_long", webm, max_seconds=2.0)
    assert decode(webm, max_seconds=4.0).duration == pytest.approx(3.0, abs=0.03)


def test_too_short_names_the_minimum() -> None:
    exc = expect(AudioError, "audio_too_short", write(tone(0.01, SR), SR, "WAV"))
    assert "0.025 s" in exc.message
    assert len(decode(write(tone(0.025, SR), SR, "WAV")).samples) == MIN_SAMPLES


def test_pcm_s16le_and_f32le_agree() -> None:
    x = tone(1.0, 48_000)[:, 0]
    s16 = decode_pcm((x * 32768).astype("<i2").tobytes(), 48_000, "pcm_s16le", target_rate=SR)
    f32 = decode_pcm(x.astype("<f4").tobytes(), 48_000, "pcm_f32le", target_rate=SR)
    assert len(s16.samples) == len(f32.samples) == SR and s16.duration == 1.0
    np.testing.assert_allclose(s16.samples, f32.samples, atol=1e-4)


@pytest.mark.parametrize("encoding", ["pcm_u8", "pcm_s16le", "pcm_s24le", "pcm_s32le"])
def test_pcm_integer_scales(encoding: str) -> None:
    want = np.array([0.0, 0.5, -0.5, -1.0], np.float32)
    raw = {
        "pcm_u8": (want * 128 + 128).astype("u1").tobytes(),
        "pcm_s16le": (want * 2**15).astype("<i2").tobytes(),
        "pcm_s24le": b"".join(int(v * 2**23).to_bytes(3, "little", signed=True) for v in want),
        "pcm_s32le": (want.astype(np.float64) * 2**31).astype("<i4").tobytes(),
    }[encoding]
    got = decode_pcm(raw, SR, encoding, target_rate=SR).samples
    np.testing.assert_array_equal(got, want)


def test_pcm_stereo_is_averaged() -> None:
    frames = np.array([[0.5, -0.5], [1.0, 0.0]], "<f4")
    a = decode_pcm(frames.tobytes(), SR, "pcm_f32le", channels=2, target_rate=SR)
    assert a.channels == 2
    np.testing.assert_array_equal(a.samples, [0.0, 0.5])


@pytest.mark.parametrize(
    ("data", "encoding", "channels", "exc", "code"),
    [
        (b"\x00\x01\x02", "pcm_s16le", 1, AudioError, "invalid_pcm_length"),
        (bytes(6), "pcm_f32le", 1, AudioError, "invalid_pcm_length"),
        (bytes(6), "pcm_s16le", 2, AudioError, "invalid_pcm_length"),
        (b"", "pcm_s16le", 1, AudioError, "empty_audio"),
        (np.array([0, np.nan], "<f4").tobytes(), "pcm_f32le", 1, AudioError, "non_finite_audio"),
        (bytes(4), "pcm_mulaw", 1, BadFieldError, "invalid_encoding"),
    ],
)
def test_bad_pcm(
    data: bytes, encoding: str, channels: int, exc: type[ServiceError], code: str
) -> None:
    with pytest.raises(exc) as info:
        decode_pcm(data, SR, encoding, channels, target_rate=SR)
    assert info.value.code == code


def test_pcm_limits() -> None:
    with pytest.raises(AudioError) as info:
        decode_pcm(bytes(100), 0, target_rate=SR)
    assert info.value.code == "invalid_sample_rate"
    with pytest.raises(TooLargeError):
        decode_pcm(bytes(2 * SR * 3), SR, target_rate=SR, max_seconds=2.0)


def test_encode_wav_round_trip() -> None:
    x = tone(0.5, 22_050)[:, 0]
    a = decode_audio(encode_wav(x, 22_050), 22_050, max_seconds=1.0, min_samples=1)
    np.testing.assert_allclose(a.samples, x, atol=1 / 32768)


def test_pcm_decoder_holds_back_split_samples_and_resamples_as_a_stream():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(48_000) * 3000).astype("<i2")
    data = x.tobytes()
    decoder = PcmDecoder("pcm_s16le", 16_000, 16_000)
    cuts = [0, 1, 2, 7, 1001, 5000, len(data)]
    out = np.concatenate([decoder.decode(data[a:b]) for a, b in zip(cuts, cuts[1:])])
    np.testing.assert_array_equal(out, x.astype(np.float32) / 32768)

    y = rng.standard_normal(48_000).astype("<f4")
    decoder = PcmDecoder("pcm_f32le", 48_000, 16_000)
    raw = y.tobytes()
    parts = [decoder.decode(raw[i : i + 4099]) for i in range(0, len(raw), 4099)]
    out = np.concatenate([*parts, decoder.flush()])
    np.testing.assert_allclose(out, soxr.resample(y, 48_000, 16_000, quality="HQ"), atol=1e-4)

    bad = np.array([0.0, np.nan], "<f4").tobytes()
    with pytest.raises(AudioError) as err:
        PcmDecoder("pcm_f32le", 16_000, 16_000).decode(bad)
    assert err.value.code == "non_finite_audio"


@pytest.mark.parametrize(("fmt", "rate"), [("WAV", 16_000), ("FLAC", 16_000), ("FLAC", 44_100)])
def test_long_audio_is_decoded_into_one_buffer_not_held_twice(fmt, rate):
    """Issue 20: an hour-long upload peaked at 1.4 GB; blocks and their concatenation held the
    clip twice. With the header's length the samples go straight into one buffer."""
    import tracemalloc

    x = (np.sin(np.arange(rate * 120) * 0.01) * 0.3).astype(np.float32)  # 2 minutes
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype="PCM_16")
    data = buf.getvalue()
    tracemalloc.start()
    try:
        out = decode_audio(data, 16_000, max_seconds=3600, min_samples=400, ffmpeg=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(out.samples) == pytest.approx(120 * 16_000, abs=64)
    assert peak < 1.25 * out.samples.nbytes, (peak, out.samples.nbytes)
