"""GET / in real headless Chromium: a fake microphone fed from a WAV streams to /v1/stream.

The page must show exactly the finals the service sent for that audio (read from the page's own
WebSocket frames), and the file picker must show the words POST /v1/transcribe returned. A
screenshot is kept in artifacts/page.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from service.settings import Settings
from tests.conftest import require_tool
from tests.test_stream_ws import HAVE_DEMO, SENTENCES, LiveServer, edit_rate, model_spec, synthesize

# Chromium against a real uvicorn.
pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def similarity(heard: np.ndarray, said: np.ndarray, piece: int = 8000) -> float:
    """The page sent the file's audio, at 16 kHz: the median over half-second pieces of the
    file of each piece's best normalised cross-correlation with what was sent. Per piece, so a
    capture glitch under CPU load (a dropped or repeated buffer) shifts only its own piece."""
    n = 1 << int(np.ceil(np.log2(len(heard) + piece)))
    spectrum = np.fft.rfft(heard, n)
    energy = np.concatenate([[0.0], np.cumsum(heard.astype(np.float64) ** 2)])
    local = np.sqrt(np.maximum(energy[piece:] - energy[:-piece], 0))  # |heard[t:t+piece]|
    scores = []
    for start in range(0, len(said) - piece + 1, piece):
        p = said[start : start + piece]
        norm = np.linalg.norm(p)
        if norm < 0.05 * np.sqrt(piece) * np.abs(said).max():  # mostly silence: no evidence
            continue
        xc = np.fft.irfft(spectrum * np.conj(np.fft.rfft(p, n)), n)[: len(local)]
        scores.append(float((xc / (norm * local + 1e-9)).max()))
    return float(np.median(scores)) if scores else 0.0


def test_page_streams_a_microphone_and_transcribes_a_file(tmp_path, checkpoints):
    chromium = require_tool("chromium")
    from playwright.sync_api import sync_playwright

    speech = synthesize(tmp_path, SENTENCES[:2])
    speech = np.concatenate([speech, np.zeros(8000, np.float32)])
    wav16 = tmp_path / "speech.wav"
    sf.write(wav16, speech, 16_000, subtype="PCM_16")
    # Chrome's fake capture device plays 16-bit WAVs at their rate; 48 kHz is its native one.
    mic = tmp_path / "mic.wav"
    sf.write(mic, soxr.resample(speech, 16_000, 48_000), 48_000, subtype="PCM_16")
    seconds = len(speech) / 16_000

    settings = Settings(model=[model_spec(checkpoints)], device="cpu")
    with LiveServer(settings) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic}%noloop",
            ],
        )
        try:
            page = browser.new_page()
            received: list[dict] = []
            sent: list[bytes] = []

            def watch(ws) -> None:
                ws.on("framereceived", lambda payload: received.append(json.loads(payload)))
                ws.on("framesent", lambda p: isinstance(p, bytes) and sent.append(p))

            page.on("websocket", watch)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/")
            model = next(iter(server.app.state.models))
            page.wait_for_function(
                f"document.getElementById('model').textContent === {json.dumps(model)}"
            )

            page.click("#mic")
            page.wait_for_function(
                "document.getElementById('status').textContent.startsWith('listening')",
                timeout=20_000,
            )
            page.wait_for_timeout(seconds * 1000 + 1000)
            page.click("#mic")
            page.wait_for_function(
                "document.getElementById('status').textContent === 'done'", timeout=30_000
            )
            ready = received[0]
            assert (ready["type"], ready["sample_rate"], ready["encoding"]) == (
                "ready",
                16_000,
                "pcm_s16le",
            )
            assert similarity(np.frombuffer(b"".join(sent), "<i2") / 32768, speech) > 0.8
            finals = [m["text"] for m in received if m["type"] == "final"]
            shown = page.inner_text("#finals")
            assert finals and shown == " ".join(finals)
            assert page.inner_text("#partial") == ""
            assert not errors

            page.set_input_files("#file", str(wav16))
            page.wait_for_selector("#words tbody tr", timeout=30_000)
            rows = page.locator("#words tbody tr").all_inner_texts()
            rest = server.offline(wav16.read_bytes())
            assert page.inner_text("#file-text") == rest["text"]
            assert [r.split("\t") for r in rows] == [
                [w["word"], f"{w['start']:.2f}", f"{w['end']:.2f}"] for w in rest["words"]
            ]
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot}")
        finally:
            browser.close()

    # The browser captured, resampled and chunked the audio itself: same words, near enough.
    wer = edit_rate(rest["text"].split(), shown.split())
    cer = edit_rate(list(rest["text"]), list(shown))
    print(f"microphone finals vs file transcript: WER {wer:.3f} CER {cer:.3f}")
    print(f"  file: {rest['text']!r}\n  mic:  {shown!r}")
    # Measured with demo-ctc round 1 (CER 78% on held-out speech): CER 0.32. The strict check
    # is above (the page shows exactly the finals the service sent); this one guards the audio
    # path. Tighten as the demo model improves.
    if HAVE_DEMO:
        assert cer <= 0.5
