"""Raw PCM bytes -> float32: the encodings clients may name, and their conversion.

Shared by the upload decoders (headerless PCM bodies, WAV files libsndfile refuses) and the
WebSocket stream's frames, so every path reads a given encoding the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from service.errors import BadFieldError

# encoding -> (numpy dtype, scale, offset): float = (raw + offset) * scale
ENCODINGS: dict[str, tuple[str, float, float]] = {
    "pcm_u8": ("u1", 1 / 128, -128.0),
    "pcm_s16le": ("<i2", 1 / 32768, 0.0),
    "pcm_s24le": ("<i4", 1 / 2**31, 0.0),  # widened to 32 bits by pcm_block
    "pcm_s32le": ("<i4", 1 / 2**31, 0.0),
    "pcm_f32le": ("<f4", 1.0, 0.0),
    "pcm_f64le": ("<f8", 1.0, 0.0),
}
# WAV (format tag, bits per sample) -> encoding; tag 1 is integer PCM, 3 is IEEE float.
WAV_ENCODINGS = {
    (1, 8): "pcm_u8",
    (1, 16): "pcm_s16le",
    (1, 24): "pcm_s24le",
    (1, 32): "pcm_s32le",
    (3, 32): "pcm_f32le",
    (3, 64): "pcm_f64le",
}


def frame_width(encoding: str, channels: int) -> int:
    """Bytes per frame of raw PCM."""
    if encoding not in ENCODINGS:
        raise BadFieldError(
            f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}",
            code="invalid_encoding",
        )
    if channels < 1:
        raise BadFieldError("channels must be at least 1", code="invalid_channels")
    width = 3 if encoding == "pcm_s24le" else np.dtype(ENCODINGS[encoding][0]).itemsize
    return width * channels


def pcm_blocks(
    view: memoryview, encoding: str, channels: int, block_frames: int
) -> Iterator[np.ndarray]:
    """Yield (frames, channels) float32 blocks of whole-frame raw PCM, block_frames at a time."""
    width = frame_width(encoding, channels)
    step = block_frames * width
    for start in range(0, len(view), step):
        yield pcm_block(view[start : start + step], encoding).reshape(-1, channels)


def pcm_block(raw: memoryview, encoding: str) -> np.ndarray:
    """Convert one stretch of raw PCM to float32 in [-1, 1)."""
    dtype, scale, offset = ENCODINGS[encoding]
    if encoding == "pcm_s24le":
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        wide = np.zeros((len(b), 4), np.uint8)
        wide[:, 1:] = b  # little-endian: the 24 bits become the top of an int32
        values: np.ndarray = wide.view("<i4").reshape(-1)
    else:
        values = np.frombuffer(raw, dtype)
    x = values.astype(np.float32)
    if offset:
        x += offset
    if scale != 1.0:
        x *= scale
    return x
