"""Hotwords: a fixed bonus per hotword in the text, and a growing one while spelling one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_HOTWORD_WEIGHT = 10.0


@dataclass(frozen=True)
class Hotwords:
    """Phrases are split into words, and each word counts on its own, as in pyctcdecode."""

    words: frozenset[str]
    weight: float = DEFAULT_HOTWORD_WEIGHT
    # prefix -> length of the shortest hotword starting with it
    shortest: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shortest: dict[str, int] = {}
        for word in self.words:
            for i in range(1, len(word) + 1):
                prefix = word[:i]
                shortest[prefix] = min(shortest.get(prefix, len(word)), len(word))
        object.__setattr__(self, "shortest", shortest)

    @classmethod
    def build(
        cls, phrases: Iterable[str] | None, weight: float = DEFAULT_HOTWORD_WEIGHT
    ) -> Hotwords:
        return cls(frozenset(w for p in phrases or () for w in p.split()), weight)

    def __bool__(self) -> bool:
        return bool(self.words)

    def word_score(self, word: str) -> float:
        """Bonus for one finished word."""
        return self.weight if word in self.words else 0.0

    def is_prefix(self, part: str) -> bool:
        return part in self.shortest

    def partial_score(self, part: str) -> float:
        """Bonus for a word in progress: the weight times the share of a hotword spelled so far."""
        length = self.shortest.get(part)
        return 0.0 if length is None else self.weight * len(part) / length
