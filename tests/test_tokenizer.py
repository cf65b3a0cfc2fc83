"""CTC decoding: text and word offsets exactly as transformers' Wav2Vec2CTCTokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.wav2vec2.tokenizer import CTCTokenizer
from tests.checkpoints import VOCAB

transformers = pytest.importorskip("transformers")

P, S, E, U, D = 0, 1, 2, 3, 4  # pad (blank), <s>, </s>, <unk>, | (word delimiter)
H, L, O, A, T = VOCAB["H"], VOCAB["L"], VOCAB["O"], VOCAB["A"], VOCAB["T"]  # noqa: E741

CASES = {
    "repeats collapse": [H, H, H, A, A, T],
    "blank between repeats keeps both": [H, E, L, P, L, O],
    "repeat without blank collapses": [L, L, L, O],
    "delimiter runs": [H, D, D, D, A, P, D, D, T],
    "leading and trailing delimiters": [D, D, H, A, D, T, D, D],
    "only blanks": [P, P, P],
    "only delimiters": [D, D, P, D],
    "empty": [],
    "unknown id": [H, 99, 99, A, 250],
    "special tokens are kept": [S, H, A, E, U, T],
    "blanks inside a word": [T, P, P, O, P, O, D, P, A],
}


def make_tokenizers(tmp_path, **config):
    (tmp_path / "vocab.json").write_text(json.dumps(VOCAB))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    ref = transformers.Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), **config)
    return CTCTokenizer.from_dir(tmp_path), ref


def expected(ref, ids):
    out = ref.decode(ids, output_word_offsets=True)
    words = [(w["word"], w["start_offset"], w["end_offset"]) for w in out.word_offsets]
    return out.text, words


@pytest.mark.parametrize("case", sorted(CASES))
def test_cases_match_transformers(tmp_path, case):
    ours, ref = make_tokenizers(tmp_path)
    got = ours.decode(CASES[case])
    assert (got.text, [(w.word, w.start, w.end) for w in got.words]) == expected(ref, CASES[case])


def test_random_sequences_match_transformers(tmp_path):
    ours, ref = make_tokenizers(tmp_path)
    rng = np.random.default_rng(0)
    for _ in range(300):
        # Blank- and delimiter-heavy, like real CTC output.
        ids = rng.choice(len(VOCAB), size=int(rng.integers(0, 60)), p=_weights()).tolist()
        got = ours.decode(ids)
        assert (got.text, [(w.word, w.start, w.end) for w in got.words]) == expected(ref, ids)


def _weights():
    w = np.ones(len(VOCAB))
    w[P], w[D] = 12, 4
    return w / w.sum()


def test_lower_casing(tmp_path):
    ours, ref = make_tokenizers(tmp_path, do_lower_case=True)
    ids = [H, A, P, D, T, O]
    got = ours.decode(ids)
    assert got.text == ref.decode(ids) == "ha to"
    # transformers leaves word offsets upper-case; ours agree with the text.
    assert [w.word for w in got.words] == ["ha", "to"]


def test_word_offsets_join_to_text(tmp_path):
    ours, _ = make_tokenizers(tmp_path)
    got = ours.decode([P, H, H, A, P, D, D, T, O, P, D, A, A])
    assert " ".join(w.word for w in got.words) == got.text == "HA TO A"
    assert [(w.start, w.end) for w in got.words] == [(1, 4), (7, 9), (11, 13)]


def test_nested_mms_vocabulary(tmp_path):
    vocab = {"eng": VOCAB, "fra": {"<pad>": 0, "|": 1, "É": 2}}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"target_lang": "fra"}))
    assert CTCTokenizer.from_dir(tmp_path).decode([2, 0, 2, 1, 2]).text == "ÉÉ É"
    assert CTCTokenizer.from_dir(tmp_path, target_lang="eng").decode([H, A]).text == "HA"


def test_added_tokens_decode(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"<pad>": 0, "|": 1, "A": 2}))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"added_tokens_decoder": {"3": {"content": "<s>", "special": True}}})
    )
    assert CTCTokenizer.from_dir(tmp_path).decode([2, 3, 1, 2]).text == "A<s> A"
