"""Tiny random MMS-style checkpoints: one Wav2Vec2ForCTC with attention adapters, plus per
language an `adapter.<lang>.safetensors` (or `.bin`) beside it and a nested vocab.json, as
facebook/mms-1b-all lays them out; and a language-identification classifier to go with it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.checkpoints import TINY, VOCAB, make_checkpoint, write_preprocessor

# Three languages, three vocabulary sizes; `deu` ships a .bin adapter (the fallback format).
LANGUAGES = {
    "eng": VOCAB,
    "fra": {**VOCAB, "É": 16, "Ç": 17},
    "deu": {**VOCAB, "Ä": 16, "Ö": 17, "Ü": 18, "ß": 19, "Z": 20},
}
BIN_LANGUAGES = ("deu",)
DEFAULT_LANGUAGE = "eng"


def adapter_weights(model: torch.nn.Module, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Random weights for every key transformers' load_adapter expects (its _get_adapters),
    with a head `vocab_size` wide; norms away from (1, 0) so a misplaced one shows."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, param in model._get_adapters().items():  # type: ignore[operator]
        shape = (vocab_size, param.shape[1]) if key == "lm_head.weight" else param.shape
        if key == "lm_head.bias":
            shape = (vocab_size,)
        value = torch.randn(shape, generator=generator) * 0.3
        if key.endswith("norm.weight"):
            value = 1 + value
        out[key] = value.contiguous()
    return out


def make_mms_checkpoint(root: Path, languages: dict[str, dict[str, int]] = LANGUAGES) -> Path:
    """root/mms: the base checkpoint (its own adapter is `eng`'s), one adapter file per
    language and vocab.json keyed by language; tokenizer_config names the default."""
    import transformers

    path = make_checkpoint(root / "mms-base", "ctc-attn-adapter").rename(root / "mms")
    model = transformers.Wav2Vec2ForCTC.from_pretrained(path)
    for i, (lang, vocab) in enumerate(languages.items()):
        weights = adapter_weights(model, len(vocab), seed=100 + i)
        if lang in BIN_LANGUAGES:
            torch.save(weights, path / f"adapter.{lang}.bin")
        else:
            save_file(weights, path / f"adapter.{lang}.safetensors", metadata={"format": "pt"})
    (path / "vocab.json").write_text(json.dumps(languages))
    config = json.loads((path / "tokenizer_config.json").read_text())
    config["target_lang"] = DEFAULT_LANGUAGE
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


def make_lid_checkpoint(root: Path, labels: list[str], forced: str, name: str = "lid") -> Path:
    """A Wav2Vec2ForSequenceClassification over language codes whose classifier bias makes
    `forced` win on any audio (softmax score ~1), as mms-lid-* checkpoints label theirs."""
    import transformers

    torch.manual_seed(1)
    config = transformers.Wav2Vec2Config(
        **{**TINY, "feat_extract_norm": "layer", "do_stable_layer_norm": True},
        architectures=["Wav2Vec2ForSequenceClassification"],
        id2label=dict(enumerate(labels)),
        label2id={v: i for i, v in enumerate(labels)},
    )
    model = transformers.Wav2Vec2ForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.bias.zero_()
        model.classifier.bias[labels.index(forced)] = 50.0
    path = root / name
    model.save_pretrained(path)
    write_preprocessor(path, attention_mask=True)
    return path
