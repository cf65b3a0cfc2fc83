"""service/lm/beam.py and transcript.py: the beam search on hand-made and random logits."""

from __future__ import annotations

import numpy as np
import pytest

from service.decode import transcript
from service.errors import BadFieldError
from service.lm import BeamLimits, BeamOptions, beam_decode, beam_transcript, check_options
from service.lm.loading import load_decoder
from service.wav2vec2.tokenizer import CTCTokenizer
from tests.checkpoints import VOCAB
from tests.lm_cases import random_logits, spell, sure, tokenizer, write_decoder

# H, then E a little likelier than A, then T: greedy spells HET, which no LM knows.
HET_OR_HAT = spell([*sure("_H_"), {"E": 0.55, "A": 0.45}, *sure("_T_")])


@pytest.fixture
def decoder(tmp_path):
    return load_decoder(write_decoder(tmp_path))


@pytest.mark.parametrize("seed", range(30))
def test_width_one_without_lm_is_greedy(seed):
    """Beam 1 keeps the argmax path; only runs of delimiters collapse to one space."""
    logits = random_logits(np.random.default_rng(seed), 50)
    tok = tokenizer()
    greedy = tok.decode(logits.argmax(-1).tolist())
    beam = beam_decode(logits, tok, None, BeamOptions(beam_width=1))
    assert beam.text == " ".join(greedy.text.split())
    assert beam.words == greedy.words


def test_word_times_match_greedy_in_seconds():
    logits = random_logits(np.random.default_rng(0), 80)
    tok = tokenizer()
    assert beam_transcript(logits, tok, None, BeamOptions(beam_width=1), 0.02) == transcript(
        logits, tok, 0.02
    )


def test_word_offsets_are_the_frames_that_spell_them():
    # frames: 0 blank, 1-2 T, 3 H, 4 E, 5 blank, 6 space, 7 S, 8 E, 9 E, 10 A, 11 blank
    logits = spell(sure("_TTHE_ SEEA_"))
    decoded = beam_decode(logits, tokenizer(), None, BeamOptions(beam_width=8))
    assert decoded.text == "THE SEA"
    assert [(w.word, w.start, w.end) for w in decoded.words] == [("THE", 1, 5), ("SEA", 7, 11)]


def test_special_tokens_never_become_words():
    frames = sure("_H<A<T_")
    frames[2] = {"<s>": 0.9, "<pad>": 0.1}
    frames[4] = {"<unk>": 0.9, "<pad>": 0.1}
    logits = spell([{("<pad>" if c == "<" else c): p for c, p in f.items()} for f in frames])
    tok = tokenizer()
    assert "<" in tok.decode(logits.argmax(-1).tolist()).text  # greedy keeps them
    decoded = beam_decode(logits, tok, None, BeamOptions(beam_width=4))
    assert decoded.text == "HAT"


def test_lm_picks_the_known_word_where_greedy_misspells(decoder):
    tok = tokenizer()
    assert tok.decode(HET_OR_HAT.argmax(-1).tolist()).text == "HET"
    assert beam_decode(HET_OR_HAT, tok, None, BeamOptions()).text == "HET"
    assert beam_decode(HET_OR_HAT, tok, decoder, BeamOptions()).text == "HAT"


def test_lm_context_decides_between_known_words(tmp_path):
    """After THE, P(HAT) is high; with the sentence start alone, SEA's backoff wins less."""
    logits = spell([*sure("_THE_ _"), {"H": 0.5, "S": 0.5}, {"A": 0.5, "E": 0.5}, *sure("AT_")])
    decoder = load_decoder(write_decoder(tmp_path, unigrams=["HAT", "THE", "SEA", "SEAT"]))
    assert beam_decode(logits, tokenizer(), decoder, BeamOptions()).text == "THE HAT"


def test_hotwords_lift_a_word():
    tok = tokenizer()
    assert beam_decode(HET_OR_HAT, tok, None, BeamOptions()).text == "HET"
    lifted = BeamOptions(hotwords=("hat",))  # matched in the vocabulary's case
    assert beam_decode(HET_OR_HAT, tok, None, lifted).text == "HAT"
    too_light = BeamOptions(hotwords=("hat",), hotword_weight=0.01)
    assert beam_decode(HET_OR_HAT, tok, None, too_light).text == "HET"


def test_hotwords_beat_the_lm(decoder):
    """An out-of-vocabulary hotword still wins over the LM's known word."""
    tok = tokenizer()
    assert beam_decode(HET_OR_HAT, tok, decoder, BeamOptions()).text == "HAT"
    options = BeamOptions(hotwords=("HET",), hotword_weight=30.0)
    assert beam_decode(HET_OR_HAT, tok, decoder, options).text == "HET"


def test_alpha_and_beta_per_request(decoder):
    """alpha 0 turns the finished-word LM scores off for one request (the model keeps 0.5)."""
    tok = tokenizer()
    assert beam_decode(HET_OR_HAT, tok, decoder, BeamOptions()).text == "HAT"
    assert beam_decode(HET_OR_HAT, tok, decoder, BeamOptions(alpha=0.0, beta=0.0)).text == "HET"
    assert decoder.lm is not None and decoder.lm.params.alpha == 0.5
    lm = decoder.lm.with_params(alpha=0.0, beta=0.0)
    assert lm.score(lm.start_state(), "HAT", is_last=True)[0] == 0.0
    assert lm.score(lm.start_state(), "HET", is_last=False)[0] == 0.0
    assert decoder.lm.with_params(alpha=None, beta=None) is decoder.lm


def test_lower_case_tokenizers_lower_the_beam_output():
    tok = CTCTokenizer(VOCAB, do_lower_case=True)
    decoded = beam_decode(spell(sure("_THE_ SEA_")), tok, None, BeamOptions())
    assert decoded.text == "the sea"
    assert [w.word for w in decoded.words] == ["the", "sea"]


def test_empty_and_silent_clips():
    tok = tokenizer()
    assert beam_decode(np.zeros((0, len(VOCAB))), tok, None, BeamOptions()).text == ""
    assert beam_decode(spell(sure("__ __")), tok, None, BeamOptions()).words == []


@pytest.mark.parametrize(
    ("options", "code"),
    [
        (BeamOptions(beam_width=0), "invalid_beam_width"),
        (BeamOptions(beam_width=-3), "invalid_beam_width"),
        (BeamOptions(beam_width=10_000), "invalid_beam_width"),
        (BeamOptions(hotwords=("w",) * 10_000), "too_many_hotwords"),
        (BeamOptions(hotwords=("x" * 1_000_000,)), "hotword_too_long"),
        (BeamOptions(alpha=float("nan")), "invalid_field"),
        (BeamOptions(hotword_weight=float("inf")), "invalid_field"),
        (BeamOptions(token_min_logp=1.0), "invalid_field"),
    ],
)
def test_bad_options_are_422(options, code):
    with pytest.raises(BadFieldError) as info:
        check_options(options, BeamLimits())
    assert info.value.status == 422
    assert info.value.code == code


def test_default_options_pass():
    check_options(BeamOptions(hotwords=("paris", "london")), BeamLimits())


@pytest.mark.parametrize("seed", range(3))
def test_long_clips_are_searched_in_pieces_cut_between_words(seed):
    """Over PIECE_FRAMES the clip is searched in pieces; cut between words, the pieces give
    the whole clip's greedy text and word frames (width 1), and no piece is over the limit."""
    from service.lm.alphabet import labels_for
    from service.lm.transcript import PIECE_FRAMES, pieces

    logits = random_logits(np.random.default_rng(seed), 4 * PIECE_FRAMES + 123)
    tok = tokenizer()
    ids = logits.argmax(-1)
    spans = pieces(ids, labels_for(tok, logits.shape[1]))
    assert spans[0][0] == 0 and spans[-1][1] == len(ids) and len(spans) >= 5
    assert all(a < b <= a + PIECE_FRAMES for a, b in spans)
    assert all(prev[1] == nxt[0] for prev, nxt in zip(spans, spans[1:]))
    assert all(ids[b - 1] == VOCAB["|"] for _, b in spans[:-1])  # right after a delimiter
    greedy = tok.decode(ids.tolist())
    beam = beam_decode(logits, tok, None, BeamOptions(beam_width=1))
    assert beam.text == " ".join(greedy.text.split())
    assert beam.words == greedy.words


def test_a_piece_without_a_delimiter_is_cut_in_a_pause():
    from service.lm.alphabet import labels_for
    from service.lm.transcript import PIECE_FRAMES, pieces

    word = "_TTHE_SEEA"  # no delimiter anywhere: only pauses separate the words
    frames = (word + "_" * 20) * (3 * PIECE_FRAMES // (len(word) + 20))
    logits = spell(sure(frames))
    ids = logits.argmax(-1)
    for a, b in pieces(ids, labels_for(tokenizer(), logits.shape[1]))[:-1]:
        assert b - a <= PIECE_FRAMES
        assert (ids[b - 5 : b + 5] == VOCAB["<pad>"]).all()  # inside a run of blanks
