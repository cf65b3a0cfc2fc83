"""The load generator against a real server on 127.0.0.1 (a tiny checkpoint), plus its parts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loadtest import LoadConfig, audio, client, report, run, stream, write
from loadtest.cli import main as cli_main
from tests.conftest import free_port, require_tool, wait_ready

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory):
    """`python -m service serve` on a free loopback port, ready (GET /readyz == 200)."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "W2V_LOG_LEVEL": "warning"}
    cmd = [sys.executable, "-m", "service", "serve", "--model", str(checkpoints("ctc-group"))]
    cmd += ["--port", str(port), "--max-wait-ms", "10"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, log, 180)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _check_ordered(p: dict) -> None:
    assert p["count"] > 0
    assert 0 <= p["p50"] <= p["p90"] <= p["p99"] <= p["max"]


def _check_accounted(o: dict, sent: int | None = None) -> None:
    assert o["ok"] + sum(o["errors"].values()) == o["sent"]
    assert o["accounted"] is True
    if sent is not None:
        assert o["sent"] == sent


@pytest.mark.slow
def test_cli_open_loop_writes_json_markdown_and_plots(server, tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--url", server, "--rate", "4", "--duration", "3", "--arrival", "constant"]
    argv += ["--generate", "noise", "--lengths", "uniform:1:3", "--clips", "4"]
    argv += ["--out", str(out), "--no-progress"]
    assert cli_main(argv) == 0
    for name in ("report.json", "report.md", "latency_vs_load.png", "latency_over_time.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "latency_vs_load.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep = json.loads((out / "report.json").read_text())
    o = rep["overall"]
    _check_accounted(o, sent=12)  # constant arrivals: 4/s for 3 s, at t = 0, 0.25, ... 2.75
    assert o["ok"] == 12, o["errors"]
    assert o["throughput_rps"] > 0 and o["audio_seconds_per_second"] > 0
    for stage in ("total", "server_total", "queue", "inference"):
        _check_ordered(o["latency"][stage])
    # The server's own total is inside the client's latency; queue + inference inside that.
    for r in rep["requests"]:
        assert r["queue"] >= 0 and r["inference"] > 0
        assert r["server_total"] <= r["latency"] + 1e-3
        assert r["queue"] + r["inference"] <= r["server_total"] + 1e-3
    md = (out / "report.md").read_text()
    assert "| total |" in md and "sent 12, ok 12" in md
    assert "sent 12" in capsys.readouterr().out


@pytest.mark.slow
def test_ramp_and_closed_loop(server, tmp_path):
    clips = audio.generate("noise", "fixed:1", 3)
    cfg = LoadConfig(
        url=server,
        mode="ramp",
        ramp_start=2,
        ramp_stop=4,
        ramp_factor=2,
        step_duration=2,
        arrival="constant",
        progress=False,
    )
    rep = run(cfg, clips)
    assert [s["offered_rate"] for s in rep["steps"]] == [2, 4]
    assert [s["sent"] for s in rep["steps"]] == [4, 8]
    for s in rep["steps"]:
        _check_accounted(s)
    _check_accounted(rep["overall"], sent=12)
    assert "knee_rps" in rep
    paths = write(rep, tmp_path / "ramp")
    assert all(p.exists() for p in paths.values())
    assert "| offered rps |" in paths["markdown"].read_text()

    closed = run(
        LoadConfig(url=server, mode="closed", concurrency=2, duration=2, progress=False), clips
    )
    _check_accounted(closed["overall"])
    assert closed["overall"]["ok"] >= 2
    _check_ordered(closed["overall"]["latency"]["total"])


@pytest.mark.slow
def test_refusals_and_dead_servers_are_counted_as_errors(server):
    bad = [audio.Clip("junk", b"not audio at all", "audio/wav", 1.0)]
    rep = run(LoadConfig(url=server, rate=5, duration=1, arrival="constant", progress=False), bad)
    _check_accounted(rep["overall"], sent=5)
    assert rep["overall"]["ok"] == 0
    assert sum(rep["overall"]["errors"].values()) == 5
    assert all(code for code in rep["overall"]["errors"])  # the service's error codes
    dead = f"http://127.0.0.1:{free_port()}"
    clip = audio.generate("noise", "fixed:1", 1)
    rep = run(
        LoadConfig(url=dead, rate=5, duration=1, arrival="constant", timeout=5, progress=False),
        clip,
    )
    _check_accounted(rep["overall"], sent=5)
    assert list(rep["overall"]["errors"]) == ["client_ConnectError"]


def _has_stream_route(url: str) -> bool:
    import websockets

    async def probe() -> bool:
        try:
            async with websockets.connect(stream.ws_url(url), open_timeout=10):
                return True
        except websockets.InvalidStatus:
            return False

    return asyncio.run(probe())


@pytest.mark.slow
def test_websocket_streams(server, tmp_path):
    if not _has_stream_route(server):
        pytest.skip("the server has no WebSocket /v1/stream route yet (handshake refused)")
    clips = audio.generate("noise", "fixed:2.5", 2)
    rep = run(
        LoadConfig(
            url=server,
            mode="stream",
            concurrency=2,
            duration=1,
            pace=4.0,
            timeout=60,
            progress=False,
        ),
        clips,
    )
    o = rep["overall"]
    _check_accounted(o)
    assert o["sent"] >= 2 and o["ok"] == o["sent"], o["errors"]
    assert o["stream"]["final_lag"]["count"] >= o["ok"]
    _check_ordered(o["stream"]["stop_to_end"])
    paths = write(rep, tmp_path / "stream")
    assert "stream final_lag" in paths["markdown"].read_text()


def test_arrivals_lengths_and_percentiles():
    assert client.arrivals(4, 3, False, 100, 0) == [i * 0.25 for i in range(12)]
    poisson = client.arrivals(50, 20, True, 10_000, 1)
    assert 850 < len(poisson) < 1150 and poisson == sorted(poisson)
    assert len(client.arrivals(50, 20, True, 10, 1)) == 10  # bounded in count
    libri = audio.lengths("libri", 2000, 0)
    assert min(libri) >= 2 and max(libri) <= 35 and 9 < float(np.median(libri)) < 18
    assert audio.lengths("list:2,5", 3) == [2.0, 5.0, 2.0]
    assert client.ramp_rates(1, 8, None, 2) == [1, 2, 4, 8]
    assert client.ramp_rates(2, 7, 2, None) == [2, 4, 6]
    p = report.percentiles([float(i) for i in range(1, 101)])
    assert (p["p50"], p["p90"], p["p99"], p["max"]) == (50, 90, 99, 100)
    assert report.percentiles([])["p50"] is None


def test_generated_speech_has_the_asked_length():
    require_tool("espeak-ng")
    (clip,) = audio.generate("speech", "fixed:3.5", 1)
    samples, rate = audio.read_wav(clip.data)
    assert rate == 16_000 and len(samples) == 56_000
    assert float(np.abs(samples).max()) > 0.05  # speech, not silence


def test_folder_of_files(tmp_path):
    for i, s in enumerate([1.0, 2.5]):
        (tmp_path / f"{i}.wav").write_bytes(audio.wav_bytes(audio.noise(s, i)))
    clips = audio.from_folder(tmp_path)
    assert [round(c.seconds, 3) for c in clips] == [1.0, 2.5]
    assert all(c.pcm is not None and len(c.pcm) == int(c.seconds * 16_000) for c in clips)
    with pytest.raises(ValueError):
        audio.from_folder(tmp_path / "empty-does-not-exist")
