"""Feature extractor settings (preprocessor_config.json) and per-clip normalisation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.errors import ModelError

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class FeatureExtractor:
    sampling_rate: int = SAMPLE_RATE
    do_normalize: bool = True
    return_attention_mask: bool = False
    padding_value: float = 0.0

    @classmethod
    def from_dir(cls, path: Path) -> FeatureExtractor:
        """preprocessor_config.json, or the feature_extractor part of transformers 5's
        processor_config.json; defaults when neither exists."""
        for name in ("preprocessor_config.json", "processor_config.json"):
            f = path / name
            if not f.exists():
                continue
            try:
                raw = json.loads(f.read_text())
            except ValueError as exc:
                raise ModelError(f"cannot parse {f}: {exc}") from exc
            raw = raw.get("feature_extractor", raw)
            if raw.get("feature_size", 1) != 1:
                raise ModelError(f"{f}: feature_size={raw['feature_size']}: only raw audio (1)")
            return cls(
                sampling_rate=int(raw.get("sampling_rate", SAMPLE_RATE)),
                do_normalize=bool(raw.get("do_normalize", True)),
                return_attention_mask=bool(raw.get("return_attention_mask", False)),
                padding_value=float(raw.get("padding_value", 0.0)),
            )
        return cls()

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """One clip, float32 (T,) -> model input (T,); statistics over this clip only."""
        x = np.asarray(samples, dtype=np.float32)
        return normalize(x) if self.do_normalize else x


def normalize(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance, with the same epsilon and float32 arithmetic as transformers."""
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)
