"""MMS language adapters: every language of one checkpoint served at once, chosen per clip.

An MMS checkpoint (facebook/mms-1b-all) is one Wav2Vec2ForCTC plus, per language, a file
`adapter.<lang>.safetensors` (or `.bin`) beside it, holding that language's bottleneck adapter
in every encoder layer (`wav2vec2.encoder.layers.<i>.adapter_layer.*`) and its CTC head
(`lm_head.*`, as wide as the language's vocabulary in the nested vocab.json). transformers
swaps one language at a time into the model (`load_adapter`). Here every layer holds every
served language's adapter, and one packed batch routes each clip's frames through its own:
clips are ordered by language, so a language's frames are one contiguous slice of the packed
(N, D) tensor, and each layer runs one small GEMM pair per language present. Languages are
all loaded at start, or (with a memory budget) on first use, least recently used dropped.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from service.errors import ModelError
from service.wav2vec2.features import FeatureExtractor
from service.wav2vec2.heads import Wav2Vec2ForCTC
from service.wav2vec2.model import AttnAdapterLayer
from service.wav2vec2.packed import Packed
from service.wav2vec2.resume import Waveform, model_inputs
from service.wav2vec2.tokenizer import CTCTokenizer

log = logging.getLogger(__name__)

# transformers' WAV2VEC2_ADAPTER_SAFE_FILE / _PT_FILE; safetensors wins where both exist.
ADAPTER_FILE = re.compile(r"^adapter\.(?P<lang>.+)\.(?P<ext>safetensors|bin)$")
PREFIX = "wav2vec2.encoder.layers.{}.adapter_layer."  # then norm, linear_1, linear_2


def adapter_files(path: Path) -> dict[str, Path]:
    """Language code -> its adapter file in the checkpoint directory, sorted by code."""
    found: dict[str, Path] = {}
    for f in sorted(path.glob("adapter.*")):
        m = ADAPTER_FILE.match(f.name)
        if m and (m["lang"] not in found or m["ext"] == "safetensors"):
            found[m["lang"]] = f
    return dict(sorted(found.items()))


def read_adapter(f: Path) -> dict[str, Tensor]:
    """An adapter file's tensors, on the CPU."""
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


def _routed(layer: nn.Module) -> LanguageAdapterLayer:
    routed = layer.adapter_layer
    assert isinstance(routed, LanguageAdapterLayer)
    return routed


def read_shapes(f: Path) -> dict[str, tuple[int, ...]]:
    """An adapter file's keys and shapes: a safetensors header only; a .bin, read whole."""
    if f.suffix != ".safetensors":
        return {k: tuple(v.shape) for k, v in read_adapter(f).items()}
    try:
        with safe_open(str(f), framework="pt") as reader:
            return {k: tuple(reader.get_slice(k).get_shape()) for k in reader.keys()}  # noqa: SIM118
    except Exception as exc:
        raise ModelError(f"cannot read adapter weights {f}: {exc}") from exc


def check_adapter(
    f: Path, lang: str, shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]
) -> None:
    """An adapter file must hold exactly the expected keys and shapes; the error names it."""
    missing, unexpected = sorted(expected.keys() - shapes), sorted(shapes.keys() - expected)
    if missing or unexpected:
        raise ModelError(
            f"{f}: not an adapter of this model: missing keys {missing[:8]}, "
            f"unexpected keys {unexpected[:8]}"
        )
    rows, vocab = shapes["lm_head.weight"][0], expected["lm_head.weight"][0]
    if rows != vocab:
        raise ModelError(
            f"{f}: lm_head has {rows} outputs but vocab.json's {lang!r} vocabulary has "
            f"{vocab} tokens"
        )
    for key, shape in shapes.items():
        if shape != expected[key]:
            raise ModelError(
                f"{f}: size mismatch for {key}: {shape}, the model needs {expected[key]}"
            )


class MultilingualCTC(nn.Module):
    """A Wav2Vec2ForCTC whose adapters and head are chosen per clip among those loaded."""

    def __init__(self, ctc: Wav2Vec2ForCTC) -> None:
        super().__init__()
        config = ctc.config
        if config.adapter_attn_dim is None or not config.do_stable_layer_norm:
            raise ModelError("language adapters need a pre-LN checkpoint with adapter_attn_dim")
        self.ctc = ctc
        self.route = Route()
        self.layers = list(ctc.backbone.encoder.layers)
        for layer in self.layers:
            layer.adapter_layer = LanguageAdapterLayer(nn.ModuleDict(), self.route)  # type: ignore[assignment]
        self.lm_heads = nn.ModuleDict()
        # The route is made from the feature encoder's own frame counts, so it never repeats
        # (or drifts from) the conv length arithmetic.
        ctc.backbone.feature_extractor.register_forward_hook(self._route_frames)
        self._pending: list[str] = []  # the forward in progress: each clip's language, in order
        p = next(ctc.parameters())
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

    def expected(self, vocab_size: int) -> dict[str, tuple[int, ...]]:
        """Every key of this model's adapter files (transformers' _get_adapters names) and
        its shape, for a language of `vocab_size` tokens."""
        with torch.device("meta"):
            one = AttnAdapterLayer(self.ctc.config).state_dict()
        shapes = {
            PREFIX.format(i) + k: tuple(v.shape)
            for i in range(len(self.layers))
            for k, v in one.items()
        }
        d = self.ctc.config.head_hidden_size
        return {**shapes, "lm_head.weight": (vocab_size, d), "lm_head.bias": (vocab_size,)}

    def load_language(self, lang: str, f: Path, vocab_size: int) -> int:
        """One language's adapter file into every layer and its head, checked first
        (check_adapter); returns the bytes it holds on the device."""
        weights = read_adapter(f)
        check_adapter(
            f, lang, {k: tuple(v.shape) for k, v in weights.items()}, self.expected(vocab_size)
        )
        cast = {k: v.to(self._device, self._dtype) for k, v in weights.items()}
        with torch.device("meta"):  # the file's tensors become the parameters
            adapters = [AttnAdapterLayer(self.ctc.config) for _ in self.layers]
            head = nn.Linear(self.ctc.config.head_hidden_size, vocab_size)
        for i, adapter in enumerate(adapters):
            start = PREFIX.format(i)
            own = {k[len(start) :]: v for k, v in cast.items() if k.startswith(start)}
            adapter.load_state_dict(own, strict=True, assign=True)
        head.load_state_dict(
            {"weight": cast["lm_head.weight"], "bias": cast["lm_head.bias"]},
            strict=True,
            assign=True,
        )
        for layer, adapter in zip(self.layers, adapters):
            _routed(layer).adapters[lang] = adapter.requires_grad_(False)
        self.lm_heads[lang] = head.requires_grad_(False)
        return sum(v.numel() * v.element_size() for v in cast.values())

    def unload_language(self, lang: str) -> None:
        for layer in self.layers:
            del _routed(layer).adapters[lang]
        del self.lm_heads[lang]

    def forward(self, waveforms: Sequence[Waveform], languages: list[str]) -> list[Tensor]:
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
    """The languages one MMS checkpoint serves: the shared model, each one's tokenizer and
    adapter file, and the language a request without one gets. Without a budget every
    language is loaded at start; with one, a language loads on first use and the least
    recently used are dropped while the resident ones hold more than `budget` bytes (the
    languages of the batch at hand always stay)."""

    model: MultilingualCTC
    tokenizers: dict[str, CTCTokenizer]
    files: dict[str, Path]
    vocab_sizes: dict[str, int]
    default: str = ""
    budget: int | None = None
    # Resident languages, least recently used first, and the bytes each holds.
    resident: OrderedDict[str, int] = field(default_factory=OrderedDict)

    @property
    def codes(self) -> list[str]:
        return list(self.tokenizers)

    def vocab_size(self, lang: str) -> int:
        """The width of `lang`'s CTC head."""
        return self.vocab_sizes[lang]

    def make_resident(self, wanted: Sequence[str]) -> None:
        """Loads what `wanted` lacks, then drops the least recently used over the budget."""
        for lang in wanted:
            if lang not in self.resident:
                self.resident[lang] = self.model.load_language(
                    lang, self.files[lang], self.vocab_sizes[lang]
                )
            self.resident.move_to_end(lang)
        if self.budget is None:
            return
        for lang in list(self.resident):
            if sum(self.resident.values()) <= self.budget:
                break
            if lang not in wanted:
                self.model.unload_language(lang)
                del self.resident[lang]

    def infer(
        self, clips: list[np.ndarray], features: FeatureExtractor, languages: Sequence[str | None]
    ) -> list[np.ndarray]:
        """As Head.infer, each clip through its language's adapters and head (None: default)."""
        chosen = [lang or self.default for lang in languages]
        self.make_resident(list(dict.fromkeys(chosen)))
        inputs = model_inputs(clips, features, next(self.model.parameters()))
        with torch.inference_mode():
            out = self.model(inputs, chosen)
        return [x.float().cpu().numpy() for x in out]


def load_languages(
    path: Path,
    ctc: Wav2Vec2ForCTC,
    target_lang: str | None,
    wanted: Sequence[str] = (),
    memory_mb: float | None = None,
) -> Languages | None:
    """The checkpoint's adapter files, all or the `wanted` ones, into `ctc` (loaded, on its
    device and dtype): all at once, or with `memory_mb` the default only, the others checked
    (file headers) now and loaded on first use; None for a checkpoint without adapter files."""
    found = adapter_files(path)
    if not found or ctc.config.adapter_attn_dim is None:
        return None
    unknown = sorted(set(wanted) - set(found))
    if unknown:
        raise ModelError(f"{path} has no adapter file for {unknown} (it has {len(found)})")
    codes = list(wanted) or list(found)
    vocabs = _vocabularies(path)
    absent = [lang for lang in codes if lang not in vocabs]
    if absent:
        raise ModelError(f"{path / 'vocab.json'} has no vocabulary for {absent[:8]}")
    budget = None if memory_mb is None else int(memory_mb * 1e6)
    languages = Languages(
        model=MultilingualCTC(ctc),
        tokenizers={lang: CTCTokenizer.from_dir(path, target_lang=lang) for lang in codes},
        files={lang: found[lang] for lang in codes},
        vocab_sizes={lang: len(vocabs[lang]) for lang in codes},
        budget=budget,
    )
    target_lang = target_lang or _read_json(path / "tokenizer_config.json").get("target_lang")
    languages.default = (
        target_lang if target_lang in codes else "eng" if "eng" in codes else codes[0]
    )
    if budget is None:
        languages.make_resident(codes)
    else:
        for lang in codes:
            expected = languages.model.expected(languages.vocab_sizes[lang])
            check_adapter(found[lang], lang, read_shapes(found[lang]), expected)
        languages.make_resident([languages.default])
    held = sum(languages.resident.values()) / 1e6
    log.info(
        "%s: %d languages, %d resident (%.1f MB)", path, len(codes), len(languages.resident), held
    )
    return languages


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
