"""Write a corpus of hostile audio uploads (issue 20) into a folder, with a manifest.

    python tools/hostile_audio.py OUT_DIR [--seconds 0.5]

Every container and codec this FFmpeg can write, 1-64 channels, every sample format libsndfile
writes, truncated and corrupted files, zero-length streams, absurd rates, lying headers,
decompression bombs and things that are not audio at all. manifest.json maps each file name to
what a correct server answers: "ok" (a 200 whose duration is `duration` seconds), "error" (a
documented 4xx), "too_long" (413) or "any" (either a 200 or a documented 4xx: e.g. a
truncated file decodes as far as its data goes, or not at all).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16_000

# (name, container format, codec, extra args, input rate, channels): what FFmpeg writes here.
FFMPEG_CASES: list[tuple[str, str, str, tuple[str, ...], int, int]] = [
    ("wav_u8", "wav", "pcm_u8", (), 16000, 1),
    ("wav_s16", "wav", "pcm_s16le", (), 16000, 1),
    ("wav_s24", "wav", "pcm_s24le", (), 44100, 2),
    ("wav_s32", "wav", "pcm_s32le", (), 48000, 1),
    ("wav_f32", "wav", "pcm_f32le", (), 22050, 1),
    ("wav_f64", "wav", "pcm_f64le", (), 8000, 1),
    ("wav_alaw", "wav", "pcm_alaw", (), 8000, 1),
    ("wav_mulaw", "wav", "pcm_mulaw", (), 8000, 1),
    ("wav_adpcm_ms", "wav", "adpcm_ms", (), 16000, 1),
    ("wav_adpcm_ima", "wav", "adpcm_ima_wav", (), 16000, 2),
    ("wav_gsm_ms", "wav", "libgsm_ms", (), 8000, 1),
    ("wav_g722", "wav", "g722", (), 16000, 1),
    ("wav_g726", "wav", "g726", (), 8000, 1),
    ("w64_s16", "w64", "pcm_s16le", (), 16000, 1),
    ("caf_alac", "caf", "alac", (), 44100, 2),
    ("caf_s24be", "caf", "pcm_s24be", (), 48000, 1),
    ("aiff_s16be", "aiff", "pcm_s16be", (), 16000, 1),
    ("aiff_s24be", "aiff", "pcm_s24be", (), 96000, 2),
    ("au_mulaw", "au", "pcm_mulaw", (), 8000, 1),
    ("voc_u8", "voc", "pcm_u8", (), 11025, 1),
    ("sox_s32", "sox", "pcm_s32le", (), 16000, 1),
    ("ircam_s16", "ircam", "pcm_s16le", (), 16000, 1),
    ("flac_s16", "flac", "flac", (), 16000, 1),
    ("flac_8ch", "flac", "flac", (), 48000, 8),
    ("ogg_vorbis", "ogg", "libvorbis", (), 44100, 2),
    ("ogg_opus", "ogg", "libopus", (), 48000, 1),
    ("ogg_flac", "ogg", "flac", (), 16000, 1),
    ("ogg_speex", "ogg", "libspeex", (), 16000, 1),
    ("opus_raw", "opus", "libopus", (), 48000, 2),
    ("webm_opus", "webm", "libopus", (), 48000, 1),
    ("webm_opus_71", "webm", "libopus", (), 48000, 8),
    ("webm_vorbis", "webm", "libvorbis", (), 48000, 2),
    ("mka_pcm", "matroska", "pcm_s16le", (), 16000, 1),
    ("mka_flac", "matroska", "flac", (), 48000, 6),
    ("mka_aac", "matroska", "aac", (), 44100, 2),
    ("mka_ac3", "matroska", "ac3", (), 48000, 6),
    ("mka_mp3", "matroska", "libmp3lame", (), 44100, 2),
    ("mka_wavpack", "matroska", "wavpack", (), 16000, 1),
    ("mka_tta", "matroska", "tta", (), 16000, 1),
    ("mka_alac", "matroska", "alac", (), 16000, 1),
    ("mka_truehd", "matroska", "truehd", ("-strict", "-2"), 48000, 2),
    ("mp3", "mp3", "libmp3lame", (), 44100, 2),
    ("mp3_shine", "mp3", "libshine", (), 44100, 1),
    ("mp2", "mp2", "mp2", (), 48000, 2),
    ("mp2_twolame", "mp2", "libtwolame", (), 48000, 2),
    ("ac3", "ac3", "ac3", (), 48000, 2),
    ("ac3_fixed", "ac3", "ac3_fixed", (), 48000, 6),
    ("eac3", "eac3", "eac3", (), 48000, 2),
    ("dts", "dts", "dca", ("-strict", "-2"), 48000, 2),
    ("adts_aac", "adts", "aac", (), 44100, 1),
    ("m4a_aac", "ipod", "aac", (), 44100, 2),
    ("m4a_aac_71", "ipod", "aac", (), 48000, 8),
    ("mp4_alac", "mp4", "alac", (), 44100, 2),
    ("mov_s24", "mov", "pcm_s24le", (), 48000, 2),
    ("3gp_aac", "3gp", "aac", (), 16000, 1),
    ("asf_wmav2", "asf", "wmav2", (), 44100, 2),
    ("asf_wmav1", "asf", "wmav1", (), 22050, 1),
    ("avi_pcm", "avi", "pcm_s16le", (), 16000, 2),
    ("avi_mp3", "avi", "libmp3lame", (), 44100, 1),
    ("nut_flac", "nut", "flac", (), 16000, 1),
    ("mpegts_mp2", "mpegts", "mp2", (), 48000, 2),
    ("mpegts_aac", "mpegts", "aac", (), 48000, 2),
    ("tta", "tta", "tta", (), 16000, 1),
    ("wv", "wv", "wavpack", (), 44100, 2),
    ("gsm", "gsm", "libgsm", (), 8000, 1),
    ("g722_raw", "g722", "g722", (), 16000, 1),
    ("codec2", "codec2", "libcodec2", ("-mode", "3200"), 8000, 1),
    ("sbc", "sbc", "sbc", (), 48000, 2),
    ("aptx", "aptx", "aptx", (), 48000, 2),
    ("dfpwm", "dfpwm", "dfpwm", (), 48000, 1),
    ("adx", "adx", "adpcm_adx", (), 44100, 2),
    ("rm_real144", "rm", "real_144", (), 8000, 1),
    ("mmf_yamaha", "mmf", "adpcm_yamaha", (), 8000, 1),
    ("oga_vorbis", "oga", "libvorbis", (), 16000, 1),
    ("mlp", "mlp", "mlp", ("-strict", "-2"), 48000, 2),
    ("mka_opus_16ch", "matroska", "libopus", ("-mapping_family", "255"), 48000, 16),
    ("mka_pcm_32ch", "matroska", "pcm_s16le", (), 16000, 32),
    ("mka_pcm_64ch", "matroska", "pcm_f32le", (), 16000, 64),
    ("nellymoser_flv", "flv", "nellymoser", (), 22050, 1),
    ("swf_adpcm", "flv", "adpcm_swf", (), 22050, 1),
]

# Muxers that write a bare bitstream, no header: FFmpeg cannot probe them from bytes alone.
RAW_BITSTREAMS = {"aptx", "dfpwm", "g722", "gsm", "mlp", "sbc", "codec2"}

# libsndfile (major format, subtypes, channel counts): written with soundfile from Python.
SNDFILE_CASES = [
    (
        "WAV",
        [
            "PCM_U8",
            "PCM_16",
            "PCM_24",
            "PCM_32",
            "FLOAT",
            "DOUBLE",
            "ULAW",
            "ALAW",
            "IMA_ADPCM",
            "MS_ADPCM",
            "GSM610",
        ],
        [1],
    ),
    ("WAV", ["PCM_16"], [2, 3, 5, 8, 16, 33, 64]),
    ("WAVEX", ["PCM_16", "FLOAT"], [1, 6, 12]),
    ("RF64", ["PCM_16"], [1]),
    ("FLAC", ["PCM_S8", "PCM_16", "PCM_24"], [1, 8]),
    ("OGG", ["VORBIS", "OPUS"], [1, 2]),
    ("AIFF", ["PCM_16", "FLOAT"], [1]),
    ("AU", ["PCM_16", "ULAW"], [1]),
    ("CAF", ["PCM_16", "ALAC_16"], [1]),
    ("W64", ["PCM_24"], [4]),
    ("NIST", ["PCM_16"], [1]),
    ("VOC", ["PCM_U8"], [1]),
    ("MAT5", ["PCM_16"], [1]),
    ("SVX", ["PCM_16"], [1]),
]


def tone(seconds: float, rate: int, channels: int, seed: int = 0) -> np.ndarray:
    """A quiet sine plus noise, different per channel: (T, channels) float64."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    chans = [0.3 * np.sin(2 * np.pi * (220 + 40 * c) * t) for c in range(channels)]
    x = np.stack(chans, axis=1) + 0.01 * rng.standard_normal((len(t), channels))
    return x


def riff(
    payload: bytes,
    rate: int,
    channels: int = 1,
    bits: int = 16,
    tag: int = 1,
    size: int | None = None,
) -> bytes:
    """A hand-made WAV header (to lie about anything) followed by payload."""
    width = max(1, bits // 8 * channels)
    fmt = struct.pack(
        "<HHIIHH",
        tag,
        channels,
        rate & 0xFFFFFFFF,
        (rate * width) & 0xFFFFFFFF,
        width & 0xFFFF,
        bits,
    )
    size = len(payload) if size is None else size
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data"
    body += struct.pack("<I", size & 0xFFFFFFFF) + payload
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body


class Corpus:
    def __init__(self, out: Path, seconds: float) -> None:
        self.out = out
        self.seconds = seconds
        self.manifest: dict[str, dict[str, object]] = {}

    def add(self, name: str, data: bytes, expect: str, duration: float | None = None) -> None:
        (self.out / name).write_bytes(data)
        self.manifest[name] = {"expect": expect, "duration": duration}

    def ffmpeg(self, case: tuple[str, str, str, tuple[str, ...], int, int]) -> None:
        """One container/codec; skipped when this FFmpeg's encoder refuses the parameters."""
        name, fmt, codec, extra, rate, channels = case
        src = f"sine=f=440:r={rate},aformat=channel_layouts=mono"
        path = self.out / f"ff_{name}"
        # To a file, not a pipe: muxers that seek back to write sizes (W64, AVI, RM) would
        # otherwise leave a lying header, which is a different case.
        cmd = [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            src,
            "-t",
            str(self.seconds),
            "-ac",
            str(channels),
            "-c:a",
            codec,
            *extra,
            "-f",
            fmt,
            str(path),
        ]
        done = subprocess.run(cmd, capture_output=True, timeout=60)
        if done.returncode or not path.exists() or not path.stat().st_size:
            path.unlink(missing_ok=True)
            return
        # A bare codec bitstream has no container to recognise it by: either answer is right.
        # Lossy codecs pad a frame or two: a correct 200 has about the right duration.
        expect = "any" if fmt in RAW_BITSTREAMS else "ok"
        self.add(path.name, path.read_bytes(), expect, self.seconds)

    def sndfile(self) -> None:
        for major, subtypes, channel_counts in SNDFILE_CASES:
            for subtype in subtypes:
                for channels in channel_counts:
                    if subtype == "GSM610" or major == "VOC":
                        rate = 8000
                    elif subtype == "OPUS":
                        rate = 48000
                    else:
                        rate = 22050
                    buf = io.BytesIO()
                    try:
                        sf.write(
                            buf,
                            tone(self.seconds, rate, channels),
                            rate,
                            format=major,
                            subtype=subtype,
                        )
                    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError):
                        continue
                    name = f"sf_{major}_{subtype}_{channels}ch".lower()
                    self.add(name, buf.getvalue(), "ok", self.seconds)

    def damaged(self) -> None:
        """Truncations and corruptions of a few well-formed files."""
        rng = random.Random(20)
        bases = [n for n in self.manifest if n.startswith(("ff_", "sf_"))]
        bases = [
            n
            for n in bases
            if any(
                k in n
                for k in (
                    "wav_s16",
                    "flac_s16",
                    "ogg_vorbis",
                    "webm_opus_71",
                    "mp3",
                    "m4a_aac",
                    "caf_alac",
                    "mka_flac",
                    "wv",
                    "ac3",
                    "asf_wmav2",
                    "sf_ogg_opus_1ch",
                )
            )
        ]
        for base in bases:
            data = (self.out / base).read_bytes()
            for frac in (0.5, 0.1):
                self.add(f"cut{int(frac * 100)}_{base}", data[: int(len(data) * frac)], "any")
            self.add(f"head64_{base}", data[:64], "any")
            self.add(f"byte1_{base}", data[:1], "error")
            corrupt = bytearray(data)
            for _ in range(12):
                corrupt[rng.randrange(min(len(data), 96))] = rng.randrange(256)
            self.add(f"hdrflip_{base}", bytes(corrupt), "any")
            middle = bytearray(data)
            for _ in range(max(1, len(data) // 50)):
                middle[rng.randrange(len(data))] = rng.randrange(256)
            self.add(f"bodyflip_{base}", bytes(middle), "any")

    def handmade(self) -> None:
        pcm = (tone(self.seconds, RATE, 1)[:, 0] * 32767).astype("<i2").tobytes()
        self.add("wav_rate0", riff(pcm, 0), "error")
        self.add("wav_rate1", riff(pcm, 1), "error")
        self.add("wav_rate_4g", riff(pcm, 0xFFFFFFFF), "error")
        self.add("wav_rate_384001", riff(pcm, 384_001), "error")
        self.add("wav_rate_7", riff(pcm, 7), "error")
        self.add("wav_rate_1000", riff(pcm, 1000), "any")  # legal, 8 s at 1 kHz
        self.add("wav_channels0", riff(pcm, RATE, channels=0), "error")
        self.add("wav_channels_65535", riff(pcm, RATE, channels=65535), "any")
        self.add("wav_bits0", riff(pcm, RATE, bits=0), "error")
        self.add("wav_bits_13", riff(pcm, RATE, bits=13), "any")
        self.add("wav_tag_unknown", riff(pcm, RATE, tag=0x1234), "error")
        self.add("wav_size_overstated", riff(pcm, RATE, size=len(pcm) * 1000), "ok", self.seconds)
        self.add(
            "wav_size_understated", riff(pcm, RATE, size=len(pcm) // 2), "ok", self.seconds / 2
        )
        self.add("wav_size_ffffffff", riff(pcm, RATE, size=0xFFFFFFFF), "ok", self.seconds)
        self.add("wav_size_odd", riff(pcm + b"\x01", RATE), "ok", self.seconds)
        self.add("wav_claims_10h", riff(pcm, RATE, size=RATE * 2 * 36000), "ok", self.seconds)
        self.add("wav_empty_data", riff(b"", RATE), "error")
        self.add("wav_one_sample", riff(b"\x00\x01", RATE), "error")
        self.add(
            "wav_nan", riff(np.full(8000, np.nan, "<f4").tobytes(), RATE, bits=32, tag=3), "error"
        )
        self.add(
            "wav_inf", riff(np.full(8000, np.inf, "<f4").tobytes(), RATE, bits=32, tag=3), "error"
        )
        self.add(
            "wav_huge_floats",
            riff(np.full(8000, 3e38, "<f4").tobytes(), RATE, bits=32, tag=3),
            "any",
        )
        self.add("riff_no_chunks", b"RIFF\x04\x00\x00\x00WAVE", "error")
        self.add("riff_fmt_loop", b"RIFF\xff\xff\xff\xffWAVEfmt \xff\xff\xff\xff", "error")
        self.add("empty", b"", "error")
        self.add("zeros_4k", b"\x00" * 4096, "error")
        self.add("random_64k", random.Random(1).randbytes(65536), "error")
        self.add("text", b"this is not audio\n" * 100, "error")
        self.add("json", b'{"file": "audio.wav"}', "error")
        self.add("png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "error")
        self.add("ebml_magic_only", b"\x1aE\xdf\xa3" + b"\x00" * 300, "error")
        self.add("ogg_magic_only", b"OggS" + b"\x00" * 300, "error")
        self.add("flac_magic_only", b"fLaC" + b"\x00" * 300, "error")
        self.add("id3_only", b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 100, "error")
        self.add("ftyp_only", b"\x00\x00\x00\x18ftypM4A \x00\x00\x00\x00M4A mp42", "error")

    def zero_length(self) -> None:
        for name, fmt, codec in (
            ("wav", "wav", "pcm_s16le"),
            ("flac", "flac", "flac"),
            ("webm", "webm", "libopus"),
            ("ogg", "ogg", "libvorbis"),
            ("m4a", "ipod", "aac"),
            ("mka", "matroska", "pcm_s16le"),
            ("mp3", "mp3", "libmp3lame"),
        ):
            cmd = [
                "ffmpeg",
                "-y",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "anullsrc=r=48000:cl=mono",
                "-t",
                "0",
                "-c:a",
                codec,
                "-f",
                fmt,
                "pipe:1",
            ]
            done = subprocess.run(cmd, capture_output=True, timeout=60)
            if done.returncode == 0:
                self.add(f"zero_{name}", done.stdout, "error")
        video = [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x64:rate=5",
            "-t",
            "1",
            "-c:v",
            "mpeg4",
            "-f",
            "mp4",
            "-movflags",
            "frag_keyframe+empty_moov",
            "pipe:1",
        ]
        done = subprocess.run(video, capture_output=True, timeout=60)
        if done.returncode == 0:
            self.add("video_only_mp4", done.stdout, "error")

    def bombs(self, limit_hint: float = 3600.0) -> None:
        """Long silence compressed to a few KB: must stop at the duration limit."""
        for name, fmt, rate, extra in (
            ("bomb_flac_mka_2h", "matroska", 48000, ("-frame_size", "65535")),
            ("bomb_flac_2h", "flac", 16000, ("-frame_size", "65535")),
        ):
            cmd = [
                "ffmpeg",
                "-y",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                f"anullsrc=r={rate}:cl=mono",
                "-t",
                "7200",
                "-c:a",
                "flac",
                *extra,
                "-f",
                fmt,
                "pipe:1",
            ]
            done = subprocess.run(cmd, capture_output=True, timeout=300)
            if done.returncode == 0:
                self.add(name, done.stdout, "too_long")


def build(out: Path, seconds: float = 0.5) -> dict[str, dict[str, object]]:
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg is needed")
    out.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(out, seconds)
    with ThreadPoolExecutor(2) as pool:  # ffmpeg processes: two at a time
        list(pool.map(corpus.ffmpeg, FFMPEG_CASES))
    corpus.sndfile()
    corpus.damaged()
    corpus.handmade()
    corpus.zero_length()
    corpus.bombs()
    (out / "manifest.json").write_text(json.dumps(corpus.manifest, indent=1, sort_keys=True))
    return corpus.manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
    manifest = build(args.out, args.seconds)
    print(f"{len(manifest)} files in {args.out}")


if __name__ == "__main__":
    main()
