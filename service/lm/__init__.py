"""CTC beam search with a word n-gram language model and hotwords (no torch, no kenlm needed)."""

from service.lm.loading import Decoder, has_decoder, load_decoder
from service.lm.transcript import (
    BeamLimits,
    BeamOptions,
    beam_decode,
    beam_transcript,
    check_options,
)

__all__ = [
    "BeamLimits",
    "BeamOptions",
    "Decoder",
    "beam_decode",
    "beam_transcript",
    "check_options",
    "has_decoder",
    "load_decoder",
]
