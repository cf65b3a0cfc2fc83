"""GET / in real headless Chromium against a real uvicorn on 127.0.0.1.

Microphone: a fake capture device fed from a WAV streams to /v1/stream; the page must show
exactly the finals the service sent (read from the page's own WebSocket frames). File: a chosen
file's waveform is drawn from the audio the browser decoded, with the spans of the words that
POST /v1/transcribe or POST /v1/align answered over it, and a word plays its span. Screenshots
are kept in artifacts/page.png and the test's tmp dir.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr
from PIL import Image

from service.settings import Settings
from tests.conftest import require_tool
from tests.test_stream_ws import (
    DEMO,
    HAVE_DEMO,
    SENTENCES,
    LiveServer,
    edit_rate,
    model_spec,
    synthesize,
)

# Chromium against a real uvicorn.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
HELLO = ROOT / "examples" / "hello_world.wav"
# Offline, quiet Chromium: no network beyond the page's own server.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


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
                *CHROMIUM_FLAGS,
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
            page.click("#transcribe")
            page.wait_for_selector("#spans button.span", timeout=30_000)
            rest = server.offline(wav16.read_bytes())
            assert page.inner_text("#file-text") == rest["text"]
            assert shown_spans(page) == [(w["word"], w["start"], w["end"]) for w in rest["words"]]
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


def shown_spans(page) -> list[tuple[str, float, float]]:
    """(word, start, end) of each word button over the waveform."""
    return [
        (s["word"], s["start"], s["end"])
        for s in page.eval_on_selector_all("#spans button.span", SPANS_JS)
    ]


SPANS_JS = """buttons => buttons.map(b => {
    const box = b.getBoundingClientRect();
    return {word: b.textContent, start: +b.dataset.start, end: +b.dataset.end,
            left: box.left, width: box.width};
})"""


STATUS_STARTS_WITH_ERROR = "document.getElementById('file-status').textContent.startsWith('error')"


RECORD_PLAYBACK_JS = """() => {
    window.played = [];
    const player = document.getElementById('player');
    for (const type of ['playing', 'timeupdate', 'pause'])
        player.addEventListener(type, () => window.played.push({type, time: player.currentTime}));
}"""


def player(page, what: str):
    return page.evaluate(f"document.getElementById('player').{what}")


def test_page_aligns_a_file_on_its_waveform_and_plays_a_word(tmp_path):
    """hello_world.wav with "hello world", aligned in the page: the spans drawn over the
    waveform are /v1/align's words at their times, and a word plays exactly its span; then
    transcribed, the spans are /v1/transcribe's words."""
    chromium = require_tool("chromium")
    from playwright.sync_api import sync_playwright

    settings = Settings(model=[str(DEMO)], device="cpu")
    with LiveServer(settings) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 800})
            requested: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/")
            page.set_input_files("#file", str(HELLO))
            page.wait_for_selector("#wave[data-duration]")  # decoded and drawn
            page.click("#align")  # no transcript yet: the page asks for one
            assert page.inner_text("#file-status") == "paste the transcript to align first"
            page.fill("#align-text", "hello " * 100)  # more letters than the clip has frames
            page.click("#align")
            page.wait_for_function(STATUS_STARTS_WITH_ERROR, timeout=30_000)
            assert "frames" in page.inner_text("#file-status")  # alignment_impossible's message
            page.fill("#align-text", "hello world")
            page.click("#align")
            page.wait_for_selector("#spans button.span", timeout=30_000)

            api = httpx.post(
                server.url + "/v1/align",
                files={"file": HELLO.read_bytes()},
                data={"text": "hello world"},
                timeout=60,
            ).json()
            assert [w["word"] for w in api["words"]] == ["HELLO", "WORLD"], api
            spans = page.eval_on_selector_all("#spans button.span", SPANS_JS)
            assert shown_spans(page) == [(w["word"], w["start"], w["end"]) for w in api["words"]]
            assert page.inner_text("#file-text") == api["text"]
            # Drawn where the times say, over the waveform's width (to a pixel).
            wave = page.locator("#wave").bounding_box()
            assert wave and wave["width"] > 500
            drawn = float(page.get_attribute("#wave", "data-duration") or 0)
            assert drawn == pytest.approx(api["duration"], abs=1e-3)
            per_second = wave["width"] / api["duration"]
            for s in spans:
                assert s["left"] - wave["x"] == pytest.approx(s["start"] * per_second, abs=1.5)
                assert s["width"] == pytest.approx((s["end"] - s["start"]) * per_second, abs=1.5)

            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            image = Image.open(shot)
            assert image.format == "PNG"
            gray = np.asarray(image.convert("L"), dtype=np.float32)
            assert gray.std() > 10, "blank screenshot"
            # The waveform is drawn: the canvas has both its background and the wave's colour.
            x, y, w, h = (round(wave[k]) for k in ("x", "y", "width", "height"))
            dark = (gray[y : y + h, x : x + w] < 150).mean()
            assert 0.01 < dark < 0.8, dark
            print(f"\nscreenshot: {shot}")

            word = api["words"][0]
            page.evaluate(RECORD_PLAYBACK_JS)
            page.click("#spans button.span >> nth=0")
            page.wait_for_function("window.played.some(e => e.type === 'pause')", timeout=10_000)
            played = page.evaluate("window.played")
            times = [e["time"] for e in played if e["type"] in ("playing", "timeupdate")]
            # It played from the word's start, and the page stopped it at the word's end (checked
            # every animation frame: a frame or two late under load, then put back on the end).
            assert times and all(word["start"] - 0.01 <= t <= word["end"] + 0.1 for t in times)
            assert player(page, "currentTime") == pytest.approx(word["end"], abs=1e-3)
            # Transcribe instead: the spans become /v1/transcribe's words.
            with page.expect_response("**/v1/transcribe"):
                page.click("#transcribe")
            page.wait_for_function("!document.getElementById('transcribe').disabled")
            rest = server.offline(HELLO.read_bytes())
            assert page.inner_text("#file-text") == rest["text"]
            assert shown_spans(page) == [(w["word"], w["start"], w["end"]) for w in rest["words"]]
            assert not errors
            assert all(url.startswith(server.url) or url.startswith("blob:") for url in requested)
        finally:
            browser.close()
