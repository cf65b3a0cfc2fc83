"""Building the served models: load each checkpoint (and its LM decoder, if it ships one), wrap
it in a ServedModel and warm it up. The app and the CLI both get their models here."""

from __future__ import annotations

import logging

from service.errors import ModelError, ServiceError
from service.languages import matching
from service.lm import Decoder, has_decoder, load_decoder
from service.lm.alphabet import check_alphabet, labels_for
from service.runtime import ServedModel
from service.settings import Settings
from service.wav2vec2.loading import LoadedModel, load_model, resolve

log = logging.getLogger(__name__)


def build_model(
    settings: Settings, name: str, source: str, task: str = "auto", warmup: bool = True
) -> ServedModel:
    """Load a checkpoint and wrap it: how the app and the CLI get a ServedModel."""
    loaded = load_model(
        source,
        name=name,
        task=task,
        device=settings.device,
        dtype=settings.dtype,
        attention=settings.attention,
        linear=settings.linear,
        languages=settings.languages,
        language_memory_mb=settings.language_memory_mb,
    )
    decoder = _decoder(loaded, source)
    lid = settings.lid_models().get(name)
    identifier = _identifier(settings, name, lid, loaded) if lid else None
    language_decoders = _language_decoders(loaded, source, decoder)
    served = ServedModel(loaded, settings, decoder, language_decoders, identifier)
    if warmup:
        served.warmup()
    log.info(
        "loaded %s (%s) from %s on %s/%s, attention %s, linear %s, decoder %s, windows %g/%g s",
        name,
        served.task,
        source,
        loaded.device,
        loaded.dtype_name,
        served.attention,
        "onednn" if loaded.onednn else "torch",
        served.card().decoder,
        *served.windows,
    )
    return served


def _identifier(settings: Settings, name: str, source: str, asr: LoadedModel) -> ServedModel:
    """The language identifier behind `name`'s language "auto": a classifier whose labels
    are language codes, at least one of them served by the ASR model."""
    if asr.languages is None:
        raise ModelError(f"lid_model {name}={source}: {name} has no language adapters")
    lid = build_model(settings, f"{name}-lid", source, task="classify", warmup=False)
    labels = lid.card().labels or []
    if not any(matching(label, asr.languages.codes) for label in labels):
        raise ModelError(
            f"lid_model {source}: none of its labels ({', '.join(labels[:8])}) names a "
            f"language {name} serves"
        )
    return lid


def _decoder(loaded: LoadedModel, source: str) -> Decoder | None:
    """The checkpoint's ProcessorWithLM layout (alphabet.json, language_model/), if it has one;
    its alphabet is checked against the tokenizer now, not on the first request."""
    if loaded.tokenizer is None or not has_decoder(path := resolve(source)):
        return None
    decoder = load_decoder(path)
    languages = loaded.languages
    if languages is not None:  # the default language's: its head's width, not config.json's
        vocab_size = languages.vocab_size(languages.default)
    else:
        vocab_size = loaded.config.vocab_size or 0
    check_alphabet(decoder.alphabet, labels_for(loaded.tokenizer, vocab_size))
    return decoder


def _language_decoders(
    loaded: LoadedModel, source: str, root: Decoder | None
) -> dict[str, Decoder]:
    """Language adapters: each language's decoder from a folder named by its code, in the
    ProcessorWithLM layout (<lang>/alphabet.json, <lang>/language_model/), checked against its
    vocabulary; the checkpoint's own decoder serves the default language without one."""
    languages = loaded.languages
    if languages is None:
        return {}
    path = resolve(source)
    out = {}
    for lang in languages.codes:
        if has_decoder(path / lang):
            decoder = load_decoder(path / lang)
            labels = labels_for(languages.tokenizers[lang], languages.vocab_size(lang))
            check_alphabet(decoder.alphabet, labels)
            out[lang] = decoder
    if root is not None:
        out.setdefault(languages.default, root)
    return out


def build_models(settings: Settings) -> dict[str, ServedModel]:
    """Every --model, warmed up; names must be unique."""
    models: dict[str, ServedModel] = {}
    specs = settings.model_specs()
    orphans = sorted(set(settings.lid_models()) - {name for name, _ in specs})
    if orphans:
        raise ServiceError(f"lid_model names {orphans}, which no --model is named")
    for name, source in specs:
        if name in models:
            raise ServiceError(f"two models are named {name!r}; use NAME=PATH to tell them apart")
        models[name] = build_model(settings, name, source)
    return models
