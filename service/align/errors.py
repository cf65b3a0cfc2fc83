"""Alignment errors: both are the client's (422), with stable codes the routes render as is."""

from __future__ import annotations

from service.errors import BadFieldError, ServiceError


class EmptyTextError(BadFieldError):
    """The text has no word to align once normalised (empty, or only whitespace)."""

    code = "empty_text"


class AlignmentImpossibleError(ServiceError):
    """The text needs more frames than the audio has: one per token plus one per repeat."""

    status = 422
    code = "alignment_impossible"

    def __init__(self, frames: int, needed: int, tokens: int, repeats: int) -> None:
        super().__init__(
            f"the text needs at least {needed} frames ({tokens} tokens + {repeats} repeated "
            f"tokens that need a blank between them) but the audio has {frames}"
        )
        self.frames = frames
        self.needed = needed
        self.tokens = tokens
        self.repeats = repeats
