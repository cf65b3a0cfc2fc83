"""training/arpa.py and training/build_lm.py: our Kneser-Ney ARPA writer and the demo LM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import service
from service.lm.alphabet import check_alphabet, labels_for
from service.lm.arpa import BOS, read_arpa
from service.lm.loading import load_decoder
from service.wav2vec2.tokenizer import CTCTokenizer
from tests.conftest import require_tool
from training import arpa, build_lm, tune_lm
from training.data import HELDOUT_SETS, HELDOUT_VARIANTS, plan_split
from training.sentences import RESERVED

MODEL_DIR = Path(service.__file__).parent / "models" / "demo-ctc"
TEXT = [
    "THE CAT SAT ON THE MAT",
    "THE DOG SAT ON THE LOG",
    "A CAT AND A DOG",
    "THE CAT AND THE DOG SAT",
    "ON THE MAT SAT A CAT",
    "THE CAT SAT ON THE MAT",
]
CONTEXTS = [
    (),
    (BOS,),
    ("THE",),
    ("SAT",),
    (BOS, "THE"),
    ("THE", "CAT"),
    ("ON", "THE"),
    ("DOG", "UNSEEN"),
    ("A", "A"),
]


@pytest.mark.parametrize("prune", [0, 1])
def test_conditional_probabilities_sum_to_one(tmp_path, prune):
    path = tmp_path / "lm.arpa"
    arpa.write_arpa(arpa.build(TEXT, order=3, prune=prune), path)
    model = read_arpa(path)  # also checks the header counts against the sections
    words = model.vocabulary - {BOS}
    for context in CONTEXTS:
        total = sum(10 ** model.score(context, w)[0] for w in words)
        assert total == pytest.approx(1.0, abs=1e-5), context


def test_kneser_ney_counts_and_pruning():
    raw = arpa.count_ngrams(["A B", "C B"], 2)
    assert raw[1][("A", "B")] == 1 and raw[0][(BOS,)] == 2
    pruned = arpa.build(TEXT, order=3, prune=1)
    full = arpa.build(TEXT, order=3, prune=0)
    assert set(pruned[2]) < set(full[2])
    assert ("THE", "CAT", "SAT") in pruned[2]  # seen twice
    assert ("A", "CAT", "AND") not in pruned[2]  # seen once
    for gram in pruned[2]:  # every listed trigram's context and suffix are listed
        assert gram[:-1] in pruned[1]
        assert gram[1:] in pruned[1]
    # A word seen after many different words gets more unigram mass than a frequent one
    # seen after one word only: the Kneser-Ney continuation count.
    assert pruned[0][("SAT",)] > pruned[0][("MAT",)]


def test_the_lm_is_built_from_training_text_only():
    require_tool("espeak-ng")  # training.data lists espeak-ng's voices while planning
    texts = build_lm.training_texts(shards=3, shard_size=200, heldout_size=200, seed=0)
    assert len(texts) == 600
    heldout = {
        u.text.upper()
        for kind in HELDOUT_SETS
        for u in plan_split(f"heldout-{kind}", 200, 0, RESERVED)
    }
    assert not heldout & set(texts)
    assert not {r.upper() for r in RESERVED} & set(texts)


def test_the_lm_is_tuned_on_sentences_it_and_the_tests_never_saw():
    """training.tune_lm's dev set: each held-out kind, none of it a test, reserved or
    training sentence (the LM's text), and the voices set in held-out voices only."""
    require_tool("espeak-ng")
    plans = tune_lm.dev_plans(n=20, test_size=200, train_shards=2)
    assert sorted(plans) == [f"dev-{kind}" for kind in sorted(HELDOUT_SETS)]
    test = {
        u.text for kind in HELDOUT_SETS for u in plan_split(f"heldout-{kind}", 200, 0, RESERVED)
    }
    seen = set(build_lm.training_texts(shards=2, shard_size=1000, heldout_size=200, seed=0))
    for plan in plans.values():
        assert len(plan) == 20
        texts = {u.text for u in plan}
        assert not texts & (test | RESERVED) and not {t.upper() for t in texts} & seen
    assert {u.variant for u in plans["dev-voices"]} <= set(HELDOUT_VARIANTS)
    assert {u.kind for u in plans["dev-natural"]} == {"natural"}


def test_alphabet_matches_the_demo_tokenizer():
    alphabet = build_lm.alphabet(MODEL_DIR)
    assert alphabet["is_bpe"] is False
    tokenizer = CTCTokenizer.from_dir(MODEL_DIR)
    vocab = json.loads((MODEL_DIR / "vocab.json").read_text())
    check_alphabet(alphabet["labels"], labels_for(tokenizer, len(vocab)))


def test_committed_demo_lm_is_what_build_lm_writes():
    """service/models/demo-ctc holds build_lm's layout: alphabet and attrs as written."""
    committed = MODEL_DIR
    assert json.loads((committed / "alphabet.json").read_text()) == build_lm.alphabet(MODEL_DIR)
    decoder = load_decoder(committed)
    assert decoder.lm is not None
    unigrams = (committed / "language_model/unigrams.txt").read_text().split()
    assert unigrams == sorted(unigrams) and not {"<s>", "</s>", "<unk>"} & set(unigrams)
