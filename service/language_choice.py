"""Which language a request runs in: its `language` resolved against the model's codes
(service/languages.py), or for "auto" what the model's language identifier finds on the clip.

The identifier is a served classification model of its own (its batcher, its batches), asked
for every label so the best one that names a served language can be picked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from service.batcher import Timed
from service.languages import AUTO, identified, resolve, unsupported
from service.schemas import Options

if TYPE_CHECKING:
    from service.audio import Audio
    from service.runtime import ServedModel

# A language "auto" found: its code and score, timed as the identifier's request was.
Found = Timed[tuple[str, float]]
T = TypeVar("T")


def after(first: Timed[Any], then: Timed[T]) -> Timed[T]:
    """`then`'s result, timed from `first`'s start: the identifier's seconds before ours."""
    queue = first.queue_time + then.queue_time
    return Timed(then.result, queue, first.inference_time + then.inference_time)


class LanguageChoice:
    def __init__(self, model: str, served: Sequence[str], identifier: ServedModel | None) -> None:
        self.model = model
        self.served = list(served)  # the default first; [] for a model of one language
        self.identifier = identifier

    def resolve(self, requested: str | None) -> str | None:
        """A request's `language` -> a served code, AUTO (an identifier is configured) or
        None (a model without languages); anything else is a 422 unsupported_language."""
        if requested is None:
            return next(iter(self.served), None)
        if requested == AUTO and self.identifier is not None and self.served:
            return AUTO
        if requested == AUTO:
            raise unsupported(
                "language 'auto' needs a language identifier", self.served, self.model
            )
        return resolve(requested, self.served, self.model)

    async def choose(
        self, samples: np.ndarray, duration: float, options: Options, priority: int
    ) -> tuple[Options, Found | None]:
        """`options` with its language resolved; for "auto", what the identifier found on
        the whole clip."""
        language = self.resolve(options.language)
        if language != AUTO:
            return options.model_copy(update={"language": language}), None
        assert self.identifier is not None
        timed = await self.identifier.predict(samples, duration, self._all(), priority=priority)
        found = identified(timed.result.labels or [], self.served, self.model)
        options = options.model_copy(update={"language": found[0]})
        return options, Timed(found, timed.queue_time, timed.inference_time)

    def choose_now(
        self, clips: Sequence[Audio], options: Options
    ) -> list[tuple[Options, float | None]]:
        """Each clip's options with its language resolved, and the identifier's score where
        the language was "auto" (the identifier runs on all clips first, without a queue)."""
        language = self.resolve(options.language)
        if language != AUTO:
            return [(options.model_copy(update={"language": language}), None)] * len(clips)
        assert self.identifier is not None
        out: list[tuple[Options, float | None]] = []
        for p in self.identifier.predict_now(clips, self._all()):
            code, score = identified(p.labels or [], self.served, self.model)
            out.append((options.model_copy(update={"language": code}), score))
        return out

    def _all(self) -> Options:
        """The identifier's options: every label, best first."""
        assert self.identifier is not None
        return Options(top_k=len(self.identifier.card().labels or ()))
