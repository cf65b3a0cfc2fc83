"""Report-only: a lexicon-constrained CTC prefix beam search vs greedy on the held-out sets.

    python -m training.lexicon_decode                 # service/models/demo-ctc, prints a table
    python -m training.lexicon_decode --write         # ... and records it in the model card

Words may only be spelled along a trie of the training word list; each finished word adds
alpha * log P(word | previous word) + beta, with P an add-one unigram or an interpolated
bigram counted on the training transcripts. alpha and beta are tuned on the first --tune
utterances of each held-out set; the table reports the rest. The service keeps greedy decoding.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from service.wav2vec2.loading import load_model
from training import export
from training.corpus import Split, transcripts
from training.data import DATA_DIR, HELDOUT_SETS
from training.forward import transcribe
from training.text import BLANK, DELIMITER, encode, error_rates, greedy

_LOG0 = -1e30


@dataclass
class Node:
    children: dict[int, Node] = field(default_factory=dict)
    word: str | None = None  # set where a lexicon word ends


class LanguageModel:
    """Word trie plus add-one unigram and (optionally) interpolated bigram log-probabilities."""

    def __init__(self, transcripts: list[str], bigram: bool) -> None:
        self.root = Node()
        self.unigrams: Counter[str] = Counter()
        self.bigrams: Counter[tuple[str, str]] = Counter()
        for t in transcripts:
            words = ["<s>", *t.upper().split()]
            self.unigrams.update(words[1:])
            self.bigrams.update(zip(words[:-1], words[1:]))
        self.total = sum(self.unigrams.values())
        self.contexts = Counter(a for a, _ in self.bigrams.elements())
        self.use_bigram = bigram
        for w in self.unigrams:
            node = self.root
            for i in encode(w):
                node = node.children.setdefault(i, Node())
            node.word = w

    def logp(self, word: str, prev: str) -> float:
        uni = (self.unigrams[word] + 1) / (self.total + len(self.unigrams))
        if not self.use_bigram or not self.contexts[prev]:
            return math.log(uni)
        bi = self.bigrams[(prev, word)] / self.contexts[prev]
        return math.log(0.5 * bi + 0.5 * uni)


def _add(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    return a if b <= _LOG0 else a + math.log1p(math.exp(b - a))


@dataclass
class Beam:
    """A collapsed label prefix: words done, the trie node of the word in progress."""

    words: tuple[str, ...]
    node: Node
    last: int  # last emitted label (for CTC's repeat rule); -1 at the start
    lm: float  # alpha * log P + beta summed over finished words
    pb: float = _LOG0  # log P(prefix, path ends in blank)
    pnb: float = _LOG0  # log P(prefix, path ends in a label)

    def total(self) -> float:
        return _add(self.pb, self.pnb)

    def key(self) -> tuple:
        return self.words, id(self.node), self.last == DELIMITER


def _merge(beams: dict[tuple, Beam], proto: Beam) -> Beam:
    """The beam of proto's prefix in beams, proto itself if new."""
    return beams.setdefault(proto.key(), proto)


def beam_search(
    logp: np.ndarray,
    lm: LanguageModel,
    alpha: float,
    beta: float,
    width: int = 16,
    prune: float = -12.0,
) -> str:
    """(T, V) log-probabilities -> the best lexicon-constrained transcript."""
    start = Beam((), lm.root, -1, 0.0, pb=0.0)
    beams = {start.key(): start}
    for frame in logp:
        labels = [int(i) for i in np.flatnonzero(frame > prune) if i != BLANK]
        new: dict[tuple, Beam] = {}
        get = functools.partial(_merge, new)
        for b in beams.values():
            total = b.total()
            same = get(Beam(b.words, b.node, b.last, b.lm))
            same.pb = _add(same.pb, total + frame[BLANK])
            if b.last >= 0:  # the last label again without a blank between: same prefix
                same.pnb = _add(same.pnb, b.pnb + frame[b.last])
            for c in labels:
                # A repeated label only extends the prefix after a blank.
                p = (b.pb if c == b.last else total) + frame[c]
                if c == DELIMITER:
                    if b.node is lm.root:  # "|" between words or at the start: no new word
                        ext = get(Beam(b.words, b.node, c, b.lm))
                    elif b.node.word is not None:
                        prev = b.words[-1] if b.words else "<s>"
                        score = alpha * lm.logp(b.node.word, prev) + beta
                        ext = get(Beam((*b.words, b.node.word), lm.root, c, b.lm + score))
                    else:
                        continue  # not a word of the lexicon
                else:
                    if b.node.word is not None and c in lm.root.children:
                        # A word boundary the model did not mark with "|".
                        prev = b.words[-1] if b.words else "<s>"
                        score = alpha * lm.logp(b.node.word, prev) + beta
                        nxt = get(
                            Beam((*b.words, b.node.word), lm.root.children[c], c, b.lm + score)
                        )
                        nxt.pnb = _add(nxt.pnb, p)
                    if c not in b.node.children:
                        continue
                    ext = get(Beam(b.words, b.node.children[c], c, b.lm))
                ext.pnb = _add(ext.pnb, p)
        beams = dict(sorted(new.items(), key=lambda kv: -(kv[1].total() + kv[1].lm))[:width])

    def final(b: Beam) -> tuple[float, tuple[str, ...]]:
        if b.node is lm.root:
            return b.total() + b.lm, b.words
        if b.node.word is None:
            return _LOG0, b.words
        prev = b.words[-1] if b.words else "<s>"
        score = alpha * lm.logp(b.node.word, prev) + beta
        return b.total() + b.lm + score, (*b.words, b.node.word)

    return " ".join(max((final(b) for b in beams.values()), key=lambda s: s[0])[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=export.MODEL_DIR)
    p.add_argument("--data", type=Path, default=DATA_DIR)
    p.add_argument("--tune", type=int, default=40, help="utterances per set for alpha/beta")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--write", action="store_true", help="record in the model's card")
    args = p.parse_args()
    torch.set_num_threads(2)

    loaded = load_model(str(args.model), device="cpu", dtype="float32")
    train_texts = transcripts(args.data)
    sets = {k: Split.load(args.data, [f"heldout-{k}"]) for k in HELDOUT_SETS}
    logps, refs = {}, {}
    with torch.no_grad():
        for name, split in sets.items():
            clips = [split.clip(i) for i in range(len(split))]
            logits = [loaded.model([c]).data for c in clips]
            logps[name] = [x.double().log_softmax(-1).numpy() for x in logits]
            refs[name] = [" ".join(t.upper().split()) for t in split.texts]
            raw = [split.samples(i) for i in range(2)]
            assert transcribe(loaded.model, raw, 10**9) == [greedy(x) for x in logits[:2]]

    lms = {
        "unigram": LanguageModel(train_texts, bigram=False),
        "bigram": LanguageModel(train_texts, bigram=True),
    }
    vocab = set(lms["unigram"].unigrams)
    results: dict[str, dict] = {}
    for lm_name, lm in lms.items():
        best = None
        for alpha in (0.3, 0.6, 1.0):
            for beta in (0.0, 1.5, 3.0):
                hyps, rs = [], []
                for name in HELDOUT_SETS:
                    hyps += [
                        beam_search(x, lm, alpha, beta, args.width)
                        for x in logps[name][: args.tune]
                    ]
                    rs += refs[name][: args.tune]
                wer = error_rates(rs, hyps)["wer"]
                print(f"tune {lm_name} alpha {alpha} beta {beta}: WER {100 * wer:.1f}%", flush=True)
                if best is None or wer < best[0]:
                    best = (wer, alpha, beta)
        assert best is not None
        _, alpha, beta = best
        for name in HELDOUT_SETS:
            xs, rs = logps[name][args.tune :], refs[name][args.tune :]
            entry = results.setdefault(
                name,
                {
                    "n": len(rs),
                    "oov_words": sum(w not in vocab for r in rs for w in r.split()),
                    "greedy": error_rates(rs, [greedy(torch.from_numpy(x)) for x in xs]),
                },
            )
            entry[lm_name] = {
                **error_rates(rs, [beam_search(x, lm, alpha, beta, args.width) for x in xs]),
                "alpha": alpha,
                "beta": beta,
            }
    for name, r in results.items():
        print(
            f"{name} ({r['n']} utterances, {r['oov_words']} OOV words): greedy CER "
            f"{100 * r['greedy']['cer']:.1f}% WER {100 * r['greedy']['wer']:.1f}%; "
            + "; ".join(
                f"{k} CER {100 * r[k]['cer']:.1f}% WER {100 * r[k]['wer']:.1f}%" for k in lms
            )
        )
    if args.write:
        history = json.loads((args.model / "training.json").read_text())
        history["lexicon"] = {
            "description": (
                f"Round-{history['rounds'][-1]['round']} weights. "
                f"CTC prefix beam search (width {args.width}) constrained to the "
                f"{len(vocab):,} words of the training transcripts, with an add-one word "
                "unigram or an interpolated bigram (0.5 bigram + 0.5 unigram) counted on them; "
                f"alpha and beta tuned on the first {args.tune} utterances of each held-out "
                f"set, scores on the other {len(refs['natural']) - args.tune} of each."
            ),
            "results": results,
        }
        export.update_card(args.model, history)


if __name__ == "__main__":
    main()
