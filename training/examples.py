"""Write examples/*.wav: short espeak-ng English sentences at 16 kHz, never trained on.

python -m training.examples
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from training.data import SAMPLE_RATE, espeak
from training.sentences import RESERVED

EXAMPLES_DIR = Path(__file__).parents[1] / "examples"
# file stem -> (text, voice, variant, words per minute, pitch)
EXAMPLES = {
    "hello_world": ("hello world", "en-us", "", 150, 50),
    "quick_brown_fox": ("the quick brown fox jumps over the lazy dog", "en", "m3", 160, 45),
    "call_me_back": ("please call me back after lunch", "en-us", "f2", 165, 60),
    "weather": ("the weather is nice today", "en-gb-x-rp", "m1", 155, 40),
}


# Spoken commands for the demo classifier: file stem -> (word, voice, variant, wpm, pitch).
COMMAND_EXAMPLES = {
    "command_stop": ("stop", "en-us", "m1", 150, 50),
}


def clip(text: str, voice: str, variant: str, speed: int, pitch: int) -> np.ndarray:
    """The speech at 0.8 peak between 0.25 s of silence, as the examples and tests use it."""
    pad = np.zeros(SAMPLE_RATE // 4, np.float32)
    speech = espeak(text, voice, variant, speed, pitch)
    return np.concatenate([pad, 0.8 * speech / np.abs(speech).max(), pad])


def write(stem: str, text: str, voice: str, variant: str, speed: int, pitch: int) -> float:
    """examples/STEM.wav from clip(); returns its seconds."""
    x = clip(text, voice, variant, speed, pitch)
    sf.write(EXAMPLES_DIR / f"{stem}.wav", x, SAMPLE_RATE, subtype="PCM_16")
    return len(x) / SAMPLE_RATE


def main() -> None:
    EXAMPLES_DIR.mkdir(exist_ok=True)
    for stem, (text, *voice) in EXAMPLES.items():
        assert text in RESERVED, text
        print(f"examples/{stem}.wav: {write(stem, text, *voice):.2f} s, {text!r}")
    for stem, (word, *voice) in COMMAND_EXAMPLES.items():
        print(f"examples/{stem}.wav: {write(stem, word, *voice):.2f} s, command {word!r}")


if __name__ == "__main__":
    main()
