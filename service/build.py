"""Building the served models: load each checkpoint (and its LM decoder, if it ships one), wrap
it in a ServedModel and warm it up. The app and the CLI both get their models here."""

from __future__ import annotations

import logging

from service.errors import ServiceError
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
    )
    decoder = _decoder(loaded, source)
    served = ServedModel(loaded, settings, decoder)
    if warmup:
        served.warmup()
    log.info(
        "loaded %s (%s) from %s on %s/%s, attention %s, decoder %s",
        name,
        served.task,
        source,
        loaded.device,
        loaded.dtype_name,
        served.attention,
        served.card().decoder,
    )
    return served


def _decoder(loaded: LoadedModel, source: str) -> Decoder | None:
    """The checkpoint's ProcessorWithLM layout (alphabet.json, language_model/), if it has one;
    its alphabet is checked against the tokenizer now, not on the first request."""
    if loaded.tokenizer is None or not has_decoder(path := resolve(source)):
        return None
    decoder = load_decoder(path)
    vocab_size = loaded.config.vocab_size or 0
    check_alphabet(decoder.alphabet, labels_for(loaded.tokenizer, vocab_size))
    return decoder


def build_models(settings: Settings) -> dict[str, ServedModel]:
    """Every --model, warmed up; names must be unique."""
    models: dict[str, ServedModel] = {}
    for name, source in settings.model_specs():
        if name in models:
            raise ServiceError(f"two models are named {name!r}; use NAME=PATH to tell them apart")
        models[name] = build_model(settings, name, source)
    return models
