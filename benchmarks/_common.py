"""Shared pieces of the engine benchmark: configs, a saved checkpoint, clips, and both runners.

Imports only torch, numpy, safetensors, transformers and `service.wav2vec2` (no FastAPI, no
pydantic, no soundfile), so it runs on a bare GPU box with `pip install torch transformers`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from service.wav2vec2.family import FAMILIES

RATE = 16_000
VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4}
VOCAB.update({c: i + 5 for i, c in enumerate("ETAONIHSRDLUMWCFGYPBVK'XJQZ")})

# The architectures --arch takes: transformers' class prefixes of the family (family.py).
ARCHS = sorted(f.name for f in FAMILIES.values())

# Overrides of the --arch's transformers config class (Wav2Vec2Config, HubertConfig, ...).
# base = the defaults (facebook/wav2vec2-base-960h shape: group norm, post-LN, 12 x 768; for
# Data2VecAudio, its own base: layer norm, 5 positional convs); large =
# facebook/wav2vec2-large-960h-lv60-self's shape (layer norm, pre-LN "stable", 24 x 1024,
# conv bias), which wants an attention mask.
CONFIGS: dict[str, dict] = {
    "base": {},
    "large": dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
    ),
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    ),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# The mixed-length batch: 8 clips spread over 2-15 s (64.6 s of audio, 120 s once padded).
BATCH_SECONDS = [2.0, 3.7, 5.2, 6.8, 8.4, 10.3, 12.6, 15.0]


def save_checkpoint(
    path: Path, config: str, seed: int = 0, arch: str = "Wav2Vec2", **overrides
) -> Path:
    """A random <arch>ForCTC of the named size (and config overrides), written with
    save_pretrained (+ vocab)."""
    import transformers

    torch.manual_seed(seed)
    cfg = getattr(transformers, arch + "Config")(
        **(CONFIGS[config] | overrides), vocab_size=len(VOCAB), architectures=[arch + "ForCTC"]
    )
    getattr(transformers, arch + "ForCTC")(cfg).eval().save_pretrained(path)
    (path / "vocab.json").write_text(json.dumps(VOCAB))
    preprocessor = {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "sampling_rate": RATE,
        "padding_value": 0.0,
        "do_normalize": True,
        # Data2VecAudio's config has no feat_extract_norm: its convs are all layer-normed.
        "return_attention_mask": getattr(cfg, "feat_extract_norm", "layer") == "layer",
    }
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return path


def clip(seconds: float, seed: int) -> np.ndarray:
    """Noise under a slow envelope: deterministic and not silence (content does not matter)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    envelope = 0.1 + 0.9 * np.abs(np.sin(np.linspace(0, seconds * 3, n) + seed))
    return (rng.standard_normal(n) * 0.1 * envelope).astype(np.float32)


def cases(smoke: bool, device: str = "cpu") -> dict[str, list[np.ndarray]]:
    """case name -> clips. Smoke mode shortens everything so CI runs it in seconds; a GPU
    also gets a 32-clip batch (4 x the mixed lengths), closer to what it serves."""
    if smoke:
        mixed = [clip(s, i) for i, s in enumerate([0.5, 1.0, 1.5, 2.0])]
        return {"single_2s": [clip(2.0, 0)], "batch_4_mixed": mixed}
    out = {
        "single_10s": [clip(10.0, 0)],
        "batch_8_mixed": [clip(s, i) for i, s in enumerate(BATCH_SECONDS)],
    }
    if device == "cuda":
        out["batch_32_mixed"] = [clip(s, i) for i, s in enumerate(BATCH_SECONDS * 4)]
    return out


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


Runner = Callable[[list[np.ndarray]], list[np.ndarray]]


def ours(path: Path, device: str, dtype: str, attention: str) -> tuple[Runner, str]:
    """Our model on the checkpoint: LoadedModel.forward, the batch forward Engine.run_batch
    calls (per-clip normalisation included)."""
    from service.wav2vec2.loading import load_model

    loaded = load_model(str(path), device=device, dtype=dtype, attention=attention)
    return loaded.forward, loaded.model.backbone.attention_kind


def transformers_attention(arch: str, impl: str) -> str:
    """The attention implementation transformers runs `arch` with when asked for `impl`."""
    import transformers

    if impl == "sdpa" and not getattr(transformers, arch + "ForCTC")._supports_sdpa:
        return "eager"  # WavLM: transformers has no other attention for it
    return impl


def transformers_runner(
    path: Path, device: str, dtype: str, attention: str, arch: str = "Wav2Vec2"
) -> Runner:
    """transformers as its docs say: the feature extractor pads the batch (per-clip
    normalisation included); the attention mask only where the config asks for one."""
    import transformers

    impl = {"sdpa": "sdpa", "flash": "flash_attention_2", "eager": "eager"}[attention]
    model_class = getattr(transformers, arch + "ForCTC")
    impl = transformers_attention(arch, impl)
    model = model_class.from_pretrained(path, attn_implementation=impl)
    model = model.to(device=device, dtype=DTYPES[dtype]).eval()
    extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(path)
    use_mask = extractor.return_attention_mask

    def run(clips: list[np.ndarray]) -> list[np.ndarray]:
        batch = extractor(
            clips,
            sampling_rate=RATE,
            padding=True,
            return_tensors="pt",
            return_attention_mask=use_mask,
        )
        kwargs = {"input_values": batch.input_values.to(device, DTYPES[dtype])}
        if use_mask:
            kwargs["attention_mask"] = batch.attention_mask.to(device)
        with torch.inference_mode():
            logits = model(**kwargs).logits  # (B, T_max, vocab)
        return [x.float().cpu().numpy() for x in logits]

    return run


def timed(run: Runner, clips: list[np.ndarray], device: str) -> float:
    sync(device)
    started = time.perf_counter()
    run(clips)
    sync(device)
    return time.perf_counter() - started


def publish(report: dict, text: str, out: Path | None) -> None:
    """Print a benchmark's markdown, and with --out write OUT.json (the figures) and OUT.md."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2))
        out.with_suffix(".md").write_text(text)
