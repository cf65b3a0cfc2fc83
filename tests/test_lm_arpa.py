"""service/lm/arpa.py: the ARPA reader and backed-off probabilities, checked by hand and
against KenLM."""

from __future__ import annotations

import importlib.util
import itertools
import re

import pytest

from service.errors import ModelError
from service.lm.arpa import BOS, MISSING_UNK_LOG10, read_arpa
from tests.conftest import IN_CI
from tests.lm_cases import ARPA


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "lm.arpa"
    path.write_text(ARPA)
    return read_arpa(path)


@pytest.mark.parametrize(
    ("context", "word", "log10", "state"),
    [
        ((BOS,), "THE", -0.2, (BOS, "THE")),  # listed bigram
        ((BOS, "THE"), "HAT", -0.05, ("THE", "HAT")),  # listed trigram
        (("THE", "HAT"), "</s>", -0.15 + -0.3, ("HAT", "</s>")),  # bow(THE HAT) + P(</s>|HAT)
        ((BOS,), "SEA", -0.5 + -1.2, (BOS, "SEA")),  # bow(<s>) + P(SEA)
        ((BOS, "SEA"), "HAT", 0.0 + -0.1 + -0.7, ("SEA", "HAT")),  # unlisted context: bow 0
        (("THE",), "SEA", -0.2 + -1.2, ("THE", "SEA")),
        ((BOS,), "DOG", -0.5 + -2.0, (BOS, "<unk>")),  # unknown words score as <unk>
        ((), "HAT", -0.7, ("HAT",)),
    ],
)
def test_scores_back_off_as_hand_computed(model, context, word, log10, state):
    got, next_state = model.score(context, word)
    assert got == pytest.approx(log10)
    assert next_state == state


def test_header_counts_order_and_vocabulary(model):
    assert model.order == 3
    assert model.vocabulary == {"</s>", "<s>", "<unk>", "HAT", "THE", "SEA"}
    assert "HAT" in model and "DOG" not in model


def test_missing_unk_gets_kenlms_floor(tmp_path):
    path = tmp_path / "lm.arpa"
    path.write_text(ARPA.replace("ngram 1=6", "ngram 1=5").replace("-2.0\t<unk>\n", ""))
    assert read_arpa(path).score((), "DOG")[0] == MISSING_UNK_LOG10


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("just some text\n", "no \\data\\"),
        (ARPA.replace("ngram 2=3", "ngram 2=4"), "announces 4 2-grams, found 3"),
        (ARPA.replace("-0.4\tTHE HAT", "x\tTHE HAT"), "lm.arpa:16"),
        (ARPA.replace("-0.4\tTHE HAT", "-0.4\tTHE"), "expected 2 words"),
        (ARPA.replace("\\end\\", ""), "no \\end\\"),
    ],
)
def test_malformed_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "lm.arpa"
    path.write_text(text)
    with pytest.raises(ModelError, match=re.escape(message)):
        read_arpa(path)


def test_agrees_with_kenlm(model, tmp_path):
    if importlib.util.find_spec("kenlm") is None:
        if IN_CI:
            pytest.fail("kenlm is not installed (the test extra installs it)")
        pytest.skip("kenlm is not installed")
    import kenlm

    path = tmp_path / "lm.arpa"
    path.write_text(ARPA)
    reference = kenlm.Model(str(path))
    words = ["THE", "HAT", "SEA", "DOG", "</s>"]
    for n in range(3):
        for history in itertools.product(["THE", "HAT", "SEA"], repeat=n):
            for word in words:
                ours = model.score((BOS, *history), word)[0]
                theirs = sum(
                    p for p, _, _ in reference.full_scores(" ".join([*history, word]), eos=False)
                )
                before = sum(p for p, _, _ in reference.full_scores(" ".join(history), eos=False))
                assert ours == pytest.approx(theirs - before, abs=1e-5), (history, word)
