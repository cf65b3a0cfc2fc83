"""service/lm/loading.py and alphabet.py: the Wav2Vec2ProcessorWithLM decoder layout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import service
from service.errors import ModelError
from service.lm import has_decoder, load_decoder
from service.lm.alphabet import BLANK, SPACE, check_alphabet, labels_for
from tests.lm_cases import alphabet_labels, tokenizer, write_decoder

DEMO_LM = Path(service.__file__).parent / "models" / "demo-ctc"


def test_loads_alphabet_attrs_unigrams_and_arpa(tmp_path):
    decoder = load_decoder(write_decoder(tmp_path, alpha=0.7, beta=2.0, score_boundary=False))
    assert decoder.alphabet == alphabet_labels()
    assert decoder.lm is not None
    assert decoder.lm.ngram.order == 3
    assert decoder.lm.unigrams == {"HAT", "THE", "SEA"}
    assert (decoder.lm.params.alpha, decoder.lm.params.beta) == (0.7, 2.0)
    assert decoder.lm.start_state() == ()  # score_boundary false: no <s> context
    assert has_decoder(tmp_path)


def test_unigrams_the_arpa_lacks_are_dropped(tmp_path):
    decoder = load_decoder(write_decoder(tmp_path, unigrams=["HAT", "TEA"]))
    assert decoder.lm is not None and decoder.lm.unigrams == {"HAT"}
    assert decoder.lm.partial_score("HA") == 0.0
    assert decoder.lm.partial_score("TE") == -10.0


def test_without_language_model_dir_decodes_without_lm(tmp_path):
    (tmp_path / "alphabet.json").write_text(json.dumps({"labels": alphabet_labels()}))
    assert load_decoder(tmp_path).lm is None
    assert not has_decoder(tmp_path / "elsewhere")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: (p / "alphabet.json").unlink(), "cannot read"),
        (lambda p: (p / "alphabet.json").write_text('{"labels": 3}'), "'labels' list"),
        (
            lambda p: (p / "alphabet.json").write_text('{"labels": ["a"], "is_bpe": true}'),
            "BPE",
        ),
        (lambda p: (p / "language_model/attrs.json").write_text('{"gamma": 1}'), "may hold only"),
        (lambda p: (p / "language_model/attrs.json").write_text('{"alpha": "x"}'), "numbers"),
        (lambda p: (p / "language_model/lm.arpa").unlink(), "exactly one .arpa"),
        (lambda p: (p / "language_model/two.arpa").write_text(""), "exactly one .arpa"),
    ],
)
def test_broken_layouts_are_model_errors(tmp_path, change, message):
    write_decoder(tmp_path)
    change(tmp_path)
    with pytest.raises(ModelError, match=message):
        load_decoder(tmp_path)


def test_kenlm_binary_without_kenlm_names_the_extra(tmp_path, monkeypatch):
    write_decoder(tmp_path)
    (tmp_path / "language_model/lm.arpa").rename(tmp_path / "language_model/lm.bin")
    monkeypatch.setitem(sys.modules, "kenlm", None)  # import kenlm now raises ImportError
    with pytest.raises(ModelError, match="pip install kenlm"):
        load_decoder(tmp_path)


def test_kenlm_binary_with_kenlm(tmp_path):
    kenlm = pytest.importorskip("kenlm")
    write_decoder(tmp_path)
    arpa = tmp_path / "language_model/lm.arpa"
    binary = tmp_path / "language_model/lm.bin"
    arpa.rename(binary)  # KenLM reads ARPA text under any name; the suffix picks the loader
    decoder = load_decoder(tmp_path)
    assert decoder.lm is not None and decoder.lm.ngram.order == 3
    state = decoder.lm.start_state()
    assert isinstance(state, kenlm.State)
    assert decoder.lm.ngram.score(state, "THE")[0] == pytest.approx(-0.2)


def test_labels_blank_space_and_specials():
    labels = labels_for(tokenizer(), 16)
    assert labels[0] == BLANK and labels[4] == SPACE
    assert labels[1:4] == [None, None, None]  # <s>, </s>, <unk>
    assert labels_for(tokenizer(), 18)[16:] == [None, None]  # logits beyond the vocabulary


def test_alphabet_must_match_the_tokenizer():
    labels = labels_for(tokenizer(), 16)
    check_alphabet(alphabet_labels(), labels)
    check_alphabet(["<pad>", "<s>", "</s>", "<unk>", "|", *alphabet_labels()[5:]], labels)
    swapped = alphabet_labels()
    swapped[5], swapped[6] = swapped[6], swapped[5]
    with pytest.raises(ModelError, match="label 5"):
        check_alphabet(swapped, labels)
    with pytest.raises(ModelError, match="15 labels"):
        check_alphabet(alphabet_labels()[:-1], labels)


def test_the_committed_demo_lm_loads_and_is_small():
    path = DEMO_LM
    assert (path / "language_model/lm.arpa").stat().st_size < 5_000_000
    decoder = load_decoder(path)
    assert decoder.lm is not None and decoder.lm.ngram.order == 3
    assert {"HELLO", "WORLD"} <= decoder.lm.unigrams
