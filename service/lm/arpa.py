"""ARPA n-gram language model: the reader and backed-off log10 probabilities, as KenLM scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.errors import ModelError

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
# KenLM's probability for <unk> when an ARPA file does not list it.
MISSING_UNK_LOG10 = -100.0

Context = tuple[str, ...]


@dataclass(frozen=True)
class NgramModel:
    """log10 probabilities and backoff weights keyed by n-gram tuples."""

    order: int
    logprobs: dict[Context, float]
    backoffs: dict[Context, float]

    def __contains__(self, word: str) -> bool:
        return (word,) in self.logprobs

    @property
    def vocabulary(self) -> set[str]:
        return {k[0] for k in self.logprobs if len(k) == 1}

    def begin_state(self) -> Context:
        return (BOS,)

    def null_state(self) -> Context:
        return ()

    def score(self, context: Context, word: str) -> tuple[float, Context]:
        """log10 P(word | context) with Katz backoff, and the context after the word."""
        if (word,) not in self.logprobs:
            word = UNK
        total = 0.0
        for n in range(len(context), -1, -1):
            history = context[len(context) - n :]
            logprob = self.logprobs.get((*history, word))
            if logprob is not None:
                total += logprob
                break
            total += self.backoffs.get(history, 0.0)
        keep = self.order - 1
        return total, (*context, word)[-keep:] if keep else ()


def read_arpa(path: Path) -> NgramModel:
    """Parses an ARPA file; a malformed one raises ModelError naming the line."""
    logprobs: dict[Context, float] = {}
    backoffs: dict[Context, float] = {}
    counts: dict[int, int] = {}
    section = -1  # -1 before \data\, 0 in \data\, n in \n-grams:
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            try:
                section = _read_line(line, section, counts, logprobs, backoffs)
            except (ValueError, IndexError) as exc:
                raise ModelError(
                    f"{path}:{number}: not an ARPA line ({exc}): {line[:80]!r}"
                ) from exc
            if section == -2:
                break
    if not counts or section != -2:
        raise ModelError(f"{path} is not an ARPA file (no \\data\\ section or no \\end\\)")
    for n, expected in counts.items():
        found = sum(1 for k in logprobs if len(k) == n)
        if found != expected:
            raise ModelError(f"{path}: \\data\\ announces {expected} {n}-grams, found {found}")
    logprobs.setdefault((UNK,), MISSING_UNK_LOG10)
    return NgramModel(max(counts), logprobs, backoffs)


def _read_line(
    line: str,
    section: int,
    counts: dict[int, int],
    logprobs: dict[Context, float],
    backoffs: dict[Context, float],
) -> int:
    """Reads one non-empty line into the tables; returns the section it leaves open."""
    if line == "\\data\\":
        return 0
    if line == "\\end\\":
        return -2
    if line.startswith("\\") and line.endswith("-grams:"):
        return int(line[1 : -len("-grams:")])
    if section == 0:
        key, value = line.removeprefix("ngram ").split("=")
        counts[int(key)] = int(value)
        return section
    if section < 1:
        return section  # text before \data\ is a header comment
    parts = line.split("\t")
    if len(parts) > 1:  # prob <tab> words [<tab> backoff]: the words need no counting
        if len(parts) > 3 or len(parts[1].split()) != section:
            raise ValueError(f"expected {section} words, a log10 probability and maybe a backoff")
        fields = [parts[0], *parts[1].split(), *parts[2:]]
    else:
        fields = line.split()
    if len(fields) not in (section + 1, section + 2):
        raise ValueError(f"expected {section} words, a log10 probability and maybe a backoff")
    ngram = tuple(fields[1 : section + 1])
    logprobs[ngram] = float(fields[0])
    if len(fields) == section + 2:
        backoffs[ngram] = float(fields[-1])
    return section
