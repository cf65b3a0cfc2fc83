"""A word n-gram model with interpolated Kneser-Ney smoothing, written as an ARPA file.

One discount per order, D = n1 / (n1 + 2 n2) (Ney et al.); lower orders count distinct left
contexts, except n-grams starting with <s>, which nothing precedes. Backoff weights are the mass
the listed n-grams leave, renormalised over the lower order, so pruned singletons keep every
context's distribution summing to one.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
Ngram = tuple[str, ...]


def count_ngrams(sentences: Iterable[str], order: int) -> list[Counter[Ngram]]:
    """Raw counts per order (index n-1), every sentence wrapped in <s> ... </s>."""
    counts: list[Counter[Ngram]] = [Counter() for _ in range(order)]
    for sentence in sentences:
        words = [BOS, *sentence.split(), EOS]
        for n in range(1, order + 1):
            counts[n - 1].update(zip(*(words[i:] for i in range(n))))
    return counts


def _kn_counts(raw: list[Counter[Ngram]]) -> list[Counter[Ngram]]:
    """Highest order keeps raw counts; lower orders count distinct words before them."""
    out = [Counter[Ngram]() for _ in raw]
    out[-1] = raw[-1]
    for n in range(len(raw) - 1):
        for gram, c in raw[n].items():
            if gram[0] == BOS:
                out[n][gram] = c
        for gram in raw[n + 1]:
            if gram[1] != BOS:
                out[n][gram[1:]] += 1
    return out


def _discount(counts: Counter[Ngram]) -> float:
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    return n1 / (n1 + 2 * n2) if n1 and n2 else 0.5


def build(sentences: Iterable[str], order: int = 3, prune: int = 1) -> list[dict[Ngram, float]]:
    """Probabilities per order, n-grams of order >= 2 counted <= `prune` times dropped (0 keeps
    all) unless a longer listed n-gram starts or ends with them."""
    kn = _kn_counts(count_ngrams(sentences, order))
    kn[0].pop((BOS,), None)  # never predicted: write_arpa lists it only as a context
    kn[0][(UNK,)] += 0  # listed, so it gets its share of the uniform floor
    probs: list[dict[Ngram, float]] = []
    for n, counts in enumerate(kn, 1):
        d = _discount(counts)
        totals: Counter[Ngram] = Counter()
        types: Counter[Ngram] = Counter()
        for gram, c in counts.items():
            totals[gram[:-1]] += c
            types[gram[:-1]] += c > 0
        level: dict[Ngram, float] = {}
        for gram, c in counts.items():
            history = gram[:-1]
            gamma = d * types[history] / totals[history]
            lower = probs[-1][gram[1:]] if n > 1 else 1.0 / len(counts)
            level[gram] = max(c - d, 0.0) / totals[history] + gamma * lower
        probs.append(level)
    return _prune(probs, kn, prune) if prune else probs


def _prune(
    probs: list[dict[Ngram, float]], counts: list[Counter[Ngram]], prune: int
) -> list[dict[Ngram, float]]:
    needed: set[Ngram] = set()
    for n in range(len(probs) - 1, 0, -1):  # top order down to bigrams
        probs[n] = {g: p for g, p in probs[n].items() if counts[n][g] > prune or g in needed}
        needed = {g[:-1] for g in probs[n]} | {g[1:] for g in probs[n]}
    return probs


def _backoffs(probs: list[dict[Ngram, float]]) -> dict[Ngram, float]:
    """bow(h) = (1 - sum of P(w|h) listed) / (1 - sum of P(w|h') for the same words)."""
    listed: dict[Ngram, list[Ngram]] = defaultdict(list)
    for level in probs[1:]:
        for gram in level:
            listed[gram[:-1]].append(gram)
    out: dict[Ngram, float] = {}
    for history, grams in listed.items():
        high = sum(probs[len(history)][g] for g in grams)
        low = sum(probs[len(history) - 1][g[1:]] for g in grams)
        out[history] = (1.0 - high) / (1.0 - low) if low < 1.0 else 1.0
    return out


def write_arpa(probs: list[dict[Ngram, float]], path: Path) -> None:
    """Writes log10 probabilities and backoffs; <s> is listed with -99 (never predicted)."""
    backoffs = _backoffs(probs)
    grams = [sorted(level) for level in probs]
    grams[0] = sorted([(BOS,), *grams[0]])
    with path.open("w", encoding="utf-8") as f:
        f.write("\\data\\\n")
        for n, level in enumerate(grams, 1):
            f.write(f"ngram {n}={len(level)}\n")
        for n, level in enumerate(grams, 1):
            f.write(f"\n\\{n}-grams:\n")
            for gram in level:
                logp = -99.0 if gram == (BOS,) else math.log10(probs[n - 1][gram])
                line = f"{logp:.6f}\t{' '.join(gram)}"
                if gram in backoffs and n < len(grams):
                    line += f"\t{math.log10(max(backoffs[gram], 1e-99)):.6f}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")
