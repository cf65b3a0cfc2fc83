"""MMS language adapters: every language of one checkpoint resident, chosen per clip.

An MMS checkpoint (facebook/mms-1b-all) is one Wav2Vec2ForCTC plus, per language, a file
`adapter.<lang>.safetensors` (or `.bin`) beside it, holding that language's bottleneck adapter
in every encoder layer (`wav2vec2.encoder.layers.<i>.adapter_layer.*`) and its CTC head
(`lm_head.*`, as wide as the language's vocabulary in the nested vocab.json). transformers
swaps one language at a time into the model (`load_adapter`). Here every layer holds every
served language's adapter, and one packed batch routes each clip's frames through its own:
clips are ordered by language, so a language's frames are one contiguous slice of the packed
(N, D) tensor, and each layer runs one small GEMM pair per language present.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from service.errors import ModelError
from service.wav2vec2.features import FeatureExtractor
from service.wav2vec2.heads import Wav2Vec2ForCTC
from service.wav2vec2.model import AttnAdapterLayer, Packed
from service.wav2vec2.tokenizer import CTCTokenizer

# transformers' WAV2VEC2_ADAPTER_SAFE_FILE / _PT_FILE; safetensors wins where both exist.
ADAPTER_FILE = re.compile(r"^adapter\.(?P<lang>.+)\.(?P<ext>safetensors|bin)$")
HEAD_KEYS = ("lm_head.weight", "lm_head.bias")


def adapter_files(path: Path) -> dict[str, Path]:
    """Language code -> its adapter file in the checkpoint directory, sorted by code."""
    found: dict[str, Path] = {}
    for f in sorted(path.glob("adapter.*")):
        m = ADAPTER_FILE.match(f.name)
        if m and (m["lang"] not in found or m["ext"] == "safetensors"):
            found[m["lang"]] = f
    return dict(sorted(found.items()))


def read_adapter(f: Path) -> dict[str, Tensor]:
    try:
        if f.suffix == ".safetensors":
            return load_file(str(f))
        # weights_only: a .bin is a pickle; never let it construct arbitrary objects.
        return torch.load(str(f), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read adapter weights {f}: {exc}") from exc


@dataclass
class Route:
    """Which language each run of packed frames belongs to, for the forward in progress."""

    segments: list[tuple[str, int]] = field(default_factory=list)  # (language, frames)


class LanguageAdapterLayer(nn.Module):
    """Stands in for one encoder layer's adapter_layer: each language's frames through its own
    adapter, as `x + adapter(x)` in EncoderLayer (a pre-LN layer's last step)."""

    def __init__(self, adapters: nn.ModuleDict, route: Route) -> None:
        super().__init__()
        self.adapters = adapters
        self.route = route

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, D), clips ordered by language -> (N, D)."""
        segments = self.route.segments
        if len(segments) == 1:
            return self.adapters[segments[0][0]](x)
        parts = x.split([n for _, n in segments])
        return torch.cat([self.adapters[lang](p) for (lang, _), p in zip(segments, parts)])


def _adapter(layer: nn.Module, lang: str) -> nn.Module:
    """One language's AttnAdapterLayer in an encoder layer."""
    routed = layer.adapter_layer
    assert isinstance(routed, LanguageAdapterLayer)
    return routed.adapters[lang]


class MultilingualCTC(nn.Module):
    """A Wav2Vec2ForCTC whose adapters and head are chosen per clip among `languages`."""

    def __init__(self, ctc: Wav2Vec2ForCTC, languages: Sequence[str]) -> None:
        super().__init__()
        config = ctc.config
        if config.adapter_attn_dim is None or not config.do_stable_layer_norm:
            raise ModelError("language adapters need a pre-LN checkpoint with adapter_attn_dim")
        self.ctc = ctc
        self.languages = list(languages)
        self.route = Route()
        p = next(ctc.parameters())
        with torch.device("meta"):  # the adapter files' tensors become the parameters
            for layer in ctc.wav2vec2.encoder.layers:
                adapters = nn.ModuleDict({lang: AttnAdapterLayer(config) for lang in languages})
                layer.adapter_layer = LanguageAdapterLayer(adapters, self.route)  # type: ignore[assignment]
        self.lm_heads = nn.ModuleDict()
        # The route is made from the feature encoder's own frame counts, so it never repeats
        # (or drifts from) the conv length arithmetic.
        ctc.wav2vec2.feature_extractor.register_forward_hook(self._route_frames)
        self._pending: list[str] = []  # the forward in progress: each clip's language, in order
        self._device, self._dtype = p.device, p.dtype

    def _route_frames(self, module: nn.Module, args: object, out: Packed) -> None:
        """After the conv front end: runs of clips of one language -> (language, frames)."""
        assert len(self._pending) == len(out.lengths), "call MultilingualCTC, not its .ctc"
        segments: list[tuple[str, int]] = []
        for lang, n in zip(self._pending, out.lengths):
            if segments and segments[-1][0] == lang:
                segments[-1] = (lang, segments[-1][1] + n)
            else:
                segments.append((lang, n))
        self.route.segments = segments

    def load_language(self, lang: str, f: Path, vocab_size: int) -> None:
        """One language's adapter file into every layer and its head; any key missing or
        unexpected, a shape off, or a head not `vocab_size` wide is an error naming the file."""
        weights = read_adapter(f)
        prefix = "wav2vec2.encoder.layers.{}.adapter_layer."
        expected = set(HEAD_KEYS)
        for i, layer in enumerate(self.ctc.wav2vec2.encoder.layers):
            names = _adapter(layer, lang).state_dict().keys()
            expected |= {prefix.format(i) + k for k in names}
        missing, unexpected = sorted(expected - weights.keys()), sorted(weights.keys() - expected)
        if missing or unexpected:
            raise ModelError(
                f"{f}: not an adapter of this model: missing keys {missing[:8]}, "
                f"unexpected keys {unexpected[:8]}"
            )
        rows = weights["lm_head.weight"].shape[0]
        if rows != vocab_size:
            raise ModelError(
                f"{f}: lm_head has {rows} outputs but vocab.json's {lang!r} vocabulary has "
                f"{vocab_size} tokens"
            )
        cast = {k: v.to(self._device, self._dtype) for k, v in weights.items()}
        try:
            for i, layer in enumerate(self.ctc.wav2vec2.encoder.layers):
                start = prefix.format(i)
                own = {k[len(start) :]: v for k, v in cast.items() if k.startswith(start)}
                _adapter(layer, lang).load_state_dict(own, strict=True, assign=True)
            with torch.device("meta"):
                head = nn.Linear(self.ctc.config.head_hidden_size, rows)
            head.load_state_dict(
                {"weight": cast["lm_head.weight"], "bias": cast["lm_head.bias"]},
                strict=True,
                assign=True,
            )
        except RuntimeError as exc:  # a shape that disagrees with config.json
            raise ModelError(f"{f}: {exc}") from exc
        self.lm_heads[lang] = head.requires_grad_(False)

    def forward(self, waveforms: list[Tensor], languages: list[str]) -> list[Tensor]:
        """B clips and each one's language -> each clip's logits (T_i, its vocabulary)."""
        # Stable sort: a language's clips, hence its frames, lie side by side.
        order = sorted(range(len(waveforms)), key=lambda i: languages[i])
        self._pending = [languages[i] for i in order]
        try:
            hidden = self.ctc.hidden([waveforms[i] for i in order])  # Packed (N, D)
        finally:
            self._pending, self.route.segments = [], []
        outputs: list[Tensor] = [torch.empty(0)] * len(waveforms)
        for i, x in zip(order, hidden.split()):
            outputs[i] = self.lm_heads[languages[i]](x)  # (T_i, vocab of its language)
        return outputs


@dataclass
class Languages:
    """The languages one MMS checkpoint serves: the shared model, each one's tokenizer, and
    the language a request without one gets (config.json's or tokenizer_config's target_lang)."""

    model: MultilingualCTC
    tokenizers: dict[str, CTCTokenizer]
    default: str

    @property
    def codes(self) -> list[str]:
        return list(self.tokenizers)

    def vocab_size(self, lang: str) -> int:
        """The width of `lang`'s CTC head."""
        head = self.model.lm_heads[lang]
        assert isinstance(head, nn.Linear)
        return head.out_features

    def infer(
        self, clips: list[np.ndarray], features: FeatureExtractor, languages: Sequence[str | None]
    ) -> list[np.ndarray]:
        """As Head.infer, each clip through its language's adapters and head (None: default)."""
        p = next(self.model.parameters())
        inputs = [torch.from_numpy(features(c)).to(p.device, p.dtype) for c in clips]
        chosen = [lang or self.default for lang in languages]
        with torch.inference_mode():
            out = self.model(inputs, chosen)
        return [x.float().cpu().numpy() for x in out]


def load_languages(
    path: Path, ctc: Wav2Vec2ForCTC, target_lang: str | None, wanted: Sequence[str] = ()
) -> Languages | None:
    """The checkpoint's adapter files, all or the `wanted` ones, into `ctc` (loaded, on its
    device and dtype); None for a checkpoint without adapter files (one language)."""
    files = adapter_files(path)
    if not files or ctc.config.adapter_attn_dim is None:
        return None
    unknown = sorted(set(wanted) - set(files))
    if unknown:
        raise ModelError(f"{path} has no adapter file for {unknown} (it has {len(files)})")
    codes = list(wanted) or list(files)
    vocabs = _vocabularies(path)
    absent = [lang for lang in codes if lang not in vocabs]
    if absent:
        raise ModelError(f"{path / 'vocab.json'} has no vocabulary for {absent[:8]}")
    tokenizers = {lang: CTCTokenizer.from_dir(path, target_lang=lang) for lang in codes}
    model = MultilingualCTC(ctc, codes)
    for lang in codes:
        model.load_language(lang, files[lang], len(vocabs[lang]))
    target_lang = target_lang or _read_json(path / "tokenizer_config.json").get("target_lang")
    if target_lang not in tokenizers:
        target_lang = "eng" if "eng" in tokenizers else codes[0]
    return Languages(model, tokenizers, target_lang)


def _read_json(f: Path) -> dict:
    try:
        return json.loads(f.read_text(encoding="utf-8")) if f.exists() else {}
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {f}: {exc}") from exc


def _vocabularies(path: Path) -> dict[str, dict[str, int]]:
    f = path / "vocab.json"
    vocab = _read_json(f)
    if not isinstance(vocab, dict) or not all(isinstance(v, dict) for v in vocab.values()):
        raise ModelError(f"{f}: adapter files need a vocab.json keyed by language code")
    return vocab
