"""Request fields -> Options: one parser for REST form/query text, the stream's JSON start
message and the CLI's flags, so every entry point accepts and refuses the same values."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping

from service import decoding
from service.errors import BadFieldError
from service.languages import MAX_CODE_CHARS
from service.schemas import Options
from service.settings import Settings

DECODERS = ("greedy", "beam")


def _int(name: str, raw: object, code: str = "invalid_field") -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            pass
    raise BadFieldError(f"{name} must be an integer, got {raw!r}", code=code)


def _float(name: str, raw: object) -> float | None:
    if raw is None or raw == "":
        return None
    value: float | None = None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        with contextlib.suppress(ValueError):
            value = float(raw)
    if value is None or not math.isfinite(value):
        raise BadFieldError(f"{name} must be a finite number, got {raw!r}")
    return value


def parse_language(raw: object) -> str | None:
    """A language code as given ("auto" too); which codes a model serves is its own check."""
    if isinstance(raw, str):
        raw = raw.strip()
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > MAX_CODE_CHARS or not raw.isprintable():
        raise BadFieldError(
            f"language must be a language code, got {str(raw)[:80]!r}", code="invalid_language"
        )
    return raw


def split_hotwords(values: Iterable[object]) -> tuple[str, ...]:
    """Hotwords from repeated fields and/or comma-separated text; a hotword may be a phrase."""
    out: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise BadFieldError("hotwords must be strings", code="invalid_hotwords")
        out += [part.strip() for part in value.split(",") if part.strip()]
    return tuple(out)


def parse_options(
    fields: Mapping[str, object],
    settings: Settings,
    hotwords: Iterable[object] = (),
    *,
    top_k: int = 5,
) -> Options:
    """Decoding fields (decoder, beam_width, alpha, beta, hotword_weight) plus hotwords,
    checked against the settings' limits: a 422 with a clear code for any bad value."""
    decoder = fields.get("decoder") or None
    if decoder is not None and decoder not in DECODERS:
        raise BadFieldError(
            f"decoder must be greedy or beam, got {decoder!r}", code="invalid_decoder"
        )
    options = Options(
        language=parse_language(fields.get("language")),
        top_k=top_k,
        decoder=decoder,  # type: ignore[arg-type]
        beam_width=_int("beam_width", fields.get("beam_width"), "invalid_beam_width"),
        alpha=_float("alpha", fields.get("alpha")),
        beta=_float("beta", fields.get("beta")),
        hotwords=split_hotwords(hotwords),
        hotword_weight=_float("hotword_weight", fields.get("hotword_weight")),
    )
    return decoding.check(options, settings)
