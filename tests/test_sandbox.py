"""Isolated decoding: FFmpeg runs in worker processes; a crash, a hang or a bomb is an answer."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import pytest

from service import sandbox
from service.errors import AudioError, ServiceError, TooLargeError, UnavailableError
from tests.conftest import require_tool

RATE = 16_000
COMMON = dict(target_rate=RATE, max_seconds=120.0, min_samples=400)


def ffmpeg(tmp_path, name: str, *args: str) -> bytes:
    """Run ffmpeg with a lavfi source; returns the file's bytes."""
    out = tmp_path / name
    cmd = [require_tool("ffmpeg"), "-y", "-loglevel", "error", "-f", "lavfi", *args, str(out)]
    subprocess.run(cmd, check=True)
    return out.read_bytes()


def opus_71(tmp_path, seconds: float = 1.0) -> bytes:
    """The issue-20 crash: 8-channel (7.1) Opus in WebM, which libsndfile does not read."""
    return ffmpeg(
        tmp_path,
        "t.webm",
        "-i",
        "sine=f=440:r=48000,aformat=channel_layouts=7.1",
        "-t",
        str(seconds),
        "-c:a",
        "libopus",
    )


@pytest.fixture(scope="module")
def hour(tmp_path_factory) -> bytes:
    """An hour of 48 kHz silence: FLAC in Matroska (FFmpeg only), ~100 KB, written to a pipe
    so the header carries no duration; a decompression bomb and a slow decode at once."""
    path = tmp_path_factory.mktemp("bomb") / "hour.mka"
    cmd = [
        require_tool("ffmpeg"),
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=48000:cl=mono",
        "-t",
        "3600",
        "-c:a",
        "flac",
        "-frame_size",
        "65535",
        "-f",
        "matroska",
        "pipe:1",
    ]
    with path.open("wb") as out:
        subprocess.run(cmd, check=True, stdout=out)
    return path.read_bytes()


@pytest.fixture
def limits():
    yield sandbox.PoolLimits(workers=1, decode_timeout=30, queue_timeout=30)
    sandbox.close_pool()


def decode(data: bytes, limits: sandbox.PoolLimits, **overrides):
    return asyncio.run(sandbox.decode_isolated(data, limits, **{**COMMON, **overrides}))


def test_eight_channel_opus_decodes_in_process_without_crashing(tmp_path):
    """PyAV's planar path segfaulted here; the packed path must not (in a child, so a
    regression fails this test instead of killing pytest)."""
    path = tmp_path / "t.webm"
    path.write_bytes(opus_71(tmp_path))
    code = (
        "import sys; from service.audio import decode_audio;"
        f"a = decode_audio(open({str(path)!r}, 'rb').read(), 16000, max_seconds=9, "
        "min_samples=400); print(a.channels, a.duration, len(a.samples))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["8", "1.0", "16000"]


def test_ffmpeg_formats_decode_in_a_worker_and_the_worker_is_reused(tmp_path, limits):
    data = opus_71(tmp_path)
    first = decode(data, limits)
    assert first.channels == 8 and first.duration == pytest.approx(1.0)
    assert first.samples.shape == (RATE,) and first.samples.std() > 0.005
    pid = sandbox.pool(limits)._idle[0].proc.pid
    m4a = ffmpeg(tmp_path, "t.m4a", "-i", "sine=f=300:r=44100", "-t", "2", "-c:a", "aac")
    assert decode(m4a, limits).duration == pytest.approx(2.0, abs=0.05)
    assert sandbox.pool(limits)._idle[0].proc.pid == pid


def test_libsndfile_formats_stay_in_process(tmp_path, limits):
    flac = ffmpeg(tmp_path, "t.flac", "-i", "sine=f=300:r=16000", "-t", "1")
    assert decode(flac, limits).duration == pytest.approx(1.0)
    assert not sandbox.pool(limits)._idle  # no worker was needed


def test_verdicts_of_the_worker_are_the_decoders(tmp_path, limits):
    with pytest.raises(ServiceError) as err:
        decode(b"\x1aE\xdf\xa3" + b"\x00" * 500, limits)  # an EBML magic and nothing after
    assert err.value.status in (400, 415)
    with pytest.raises(TooLargeError) as err:
        decode(opus_71(tmp_path, 3.0), limits, max_seconds=2.0)
    assert err.value.code == "audio_too_long"


def test_decompression_bomb_stops_at_the_duration_limit_while_decoding(hour, limits):
    """An hour of silence is ~100 KB of FLAC and 230 MB decoded at 16 kHz; with a 30 s
    limit the worker stops once 30 s are decoded, not after the hour."""
    assert len(hour) < 200_000
    started = time.monotonic()
    with pytest.raises(TooLargeError) as err:
        decode(hour, limits, max_seconds=30.0)
    assert err.value.code == "audio_too_long"
    assert time.monotonic() - started < 5


def test_a_worker_that_dies_is_a_400_and_is_replaced(tmp_path, hour, limits):
    decoders = sandbox.pool(limits)
    decoders.start()
    victim = decoders._idle[0].proc

    def kill_soon() -> None:
        time.sleep(0.3)
        victim.kill()

    threading.Thread(target=kill_soon).start()
    with pytest.raises(AudioError) as err:
        decode(hour, limits, max_seconds=3600.0)
    assert err.value.code == "undecodable_audio" and err.value.status == 400
    assert victim.poll() is not None
    assert decode(opus_71(tmp_path), limits).channels == 8  # a new worker serves


def test_a_worker_past_the_decode_timeout_is_killed_and_replaced(tmp_path, hour):
    limits = sandbox.PoolLimits(workers=1, decode_timeout=0.2, queue_timeout=30)
    try:
        decoders = sandbox.pool(limits)
        decoders.start()
        victim = decoders._idle[0].proc
        with pytest.raises(AudioError) as err:
            decode(hour, limits, max_seconds=3600.0)
        assert err.value.code == "undecodable_audio"
        assert victim.poll() is not None
        relaxed = sandbox.PoolLimits(workers=1, decode_timeout=30, queue_timeout=30)
        assert decode(opus_71(tmp_path), relaxed).channels == 8
    finally:
        sandbox.close_pool()


def test_memory_limit_is_a_4xx_not_a_crash(tmp_path, hour):
    limits = sandbox.PoolLimits(
        workers=1, decode_timeout=60, queue_timeout=30, memory_bytes=32 << 20
    )
    try:
        with pytest.raises(ServiceError) as err:
            decode(hour, limits, max_seconds=3600.0)
        assert 400 <= err.value.status < 500
        assert decode(opus_71(tmp_path), limits).channels == 8
    finally:
        sandbox.close_pool()


def test_no_free_worker_within_the_queue_timeout_is_503(tmp_path, hour):
    limits = sandbox.PoolLimits(workers=1, decode_timeout=60, queue_timeout=0.2)
    try:

        async def both():
            kw = {**COMMON, "max_seconds": 3600.0}
            slow = asyncio.create_task(sandbox.decode_isolated(hour, limits, **kw))
            await asyncio.sleep(0.1)
            with pytest.raises(UnavailableError) as err:
                await sandbox.decode_isolated(opus_71(tmp_path), limits, **COMMON)
            assert err.value.status == 503 and err.value.retry_after
            return await slow

        assert asyncio.run(both()).duration == pytest.approx(3600, abs=0.1)
    finally:
        sandbox.close_pool()


def test_an_odd_failure_in_process_is_left_to_a_worker(tmp_path, limits, monkeypatch):
    """libsndfile raising something unexpected is not a 500: a decoder process decides."""
    flac = ffmpeg(tmp_path, "t.flac", "-i", "sine=f=300:r=16000", "-t", "1")

    def broken(*args, **kwargs):
        raise RuntimeError("libsndfile had a bad day")

    monkeypatch.setattr(sandbox, "decode_audio", broken)  # this process only
    assert decode(flac, limits).duration == pytest.approx(1.0)
