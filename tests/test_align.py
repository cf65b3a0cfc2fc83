"""service/align: text as the tokenizer sees it, align()'s spans and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from service.align import AlignmentImpossibleError, EmptyTextError, align
from service.align.text import WILDCARD, AlignVocab, normalise
from service.errors import ModelError, ServiceError
from service.wav2vec2.tokenizer import CTCTokenizer

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4}
VOCAB.update({c: i + 5 for i, c in enumerate(LETTERS)})
UPPER = CTCTokenizer(VOCAB)


def words_of(text: str, tokenizer: CTCTokenizer = UPPER) -> list[tuple[str, list[int]]]:
    vocab = AlignVocab.from_tokenizer(tokenizer, len(VOCAB))
    return [(w.text, [t.id for t in w.tokens]) for w in normalise(text, vocab)]


def test_case_follows_the_vocabulary() -> None:
    assert words_of("Hi there") == [("HI", [12, 13]), ("THERE", [24, 12, 9, 22, 9])]
    lower = CTCTokenizer({k.lower(): v for k, v in VOCAB.items()})
    assert words_of("Hi", lower) == [("hi", [12, 13])]


def test_do_lower_case_upper_cases_the_text_and_answers_in_lower_case() -> None:
    """transformers' Wav2Vec2CTCTokenizer._tokenize upper-cases; decode lower-cases."""
    tokenizer = CTCTokenizer(VOCAB, do_lower_case=True)
    assert words_of("Hi", tokenizer) == [("hi", [12, 13])]
    result = align(peaky("hi"), "Hi", tokenizer)
    assert [c.char for c in result.chars] == ["h", "i"] and result.words[0].word == "hi"


def test_unknown_characters_become_one_wildcard_per_run_and_stay_in_the_word() -> None:
    assert words_of("in 1984, Zoë!") == [
        ("IN", [13, 18]),
        ("1984,", [WILDCARD]),
        ("ZOë!", [30, 19, WILDCARD]),
    ]
    assert words_of("d'accord") == [("D'ACCORD", [8, 31, 5, 7, 7, 19, 22, 8])]


def test_whitespace_and_the_delimiter_separate_words_once() -> None:
    assert [w for w, _ in words_of("  a\tb\n\nc|d  ")] == ["A", "B", "C", "D"]


def test_special_tokens_and_the_blank_are_never_characters() -> None:
    tokenizer = CTCTokenizer({"_": 0, "|": 1, "A": 2}, pad_token="_")
    assert words_of("A_A", tokenizer) == [("A_A", [2, WILDCARD, 2])]


def peaky(text: str, frames_per_token: int = 4, seed: int = 0) -> np.ndarray:
    """Logits that spell `text` (upper case, '|' between words) in CTC fashion: each token
    on one frame, blanks between, with noise."""
    rng = np.random.default_rng(seed)
    ids = [VOCAB.get(c, VOCAB["|"]) for c in "|".join(text.upper().split())]
    logits = rng.normal(size=(frames_per_token * len(ids) + 6, len(VOCAB))).astype(np.float32)
    logits[:, 0] += 6
    for i, token in enumerate(ids):
        logits[3 + frames_per_token * i, token] += 12
    return logits


def test_clean_emissions_put_each_character_on_its_spike() -> None:
    """The path alone: peaky()'s blank is not sure of its silence, which would move starts."""
    result = align(peaky("hello big world"), "Hello big world", UPPER, onset_log_prob=None)
    assert result.text == "HELLO BIG WORLD"
    assert [(w.word, w.start, w.end) for w in result.words] == [
        ("HELLO", 3, 20),
        ("BIG", 27, 36),
        ("WORLD", 43, 60),
    ]
    assert [c.char for c in result.chars] == list("HELLOBIGWORLD")
    assert all(c.end - c.start == 1 for c in result.chars)  # blanks between spikes
    assert all(-0.5 < w.score < 0 for w in result.words)


@pytest.mark.parametrize("star", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_spans_increase_lie_inside_the_clip_and_join_to_the_text(seed: int, star: bool) -> None:
    rng = np.random.default_rng(seed)
    text = " ".join(
        "".join(rng.choice(list("ABCXYZ'1.é"), size=rng.integers(1, 6))) for _ in range(9)
    )
    frames = int(rng.integers(60, 200))
    logits = rng.normal(scale=3, size=(frames, len(VOCAB))).astype(np.float32)
    result = align(logits, text, UPPER, star=star, block=int(rng.integers(1, 30)))
    assert " ".join(w.word for w in result.words) == result.text
    # Known characters in the vocabulary's case, unknown ones (é: no É either) as typed.
    assert result.text == "".join(c.upper() if c.upper() in LETTERS else c for c in text)
    assert result.frames == frames
    bounds = [(w.start, w.end) for w in result.words]
    assert all(0 <= s < e <= frames for s, e in bounds)
    assert all(e1 <= s2 for (_, e1), (s2, _) in zip(bounds, bounds[1:]))
    for i, w in enumerate(result.words):
        chars = [c for c in result.chars if c.word == i]
        assert "".join(c.char for c in chars) == w.word
        assert (chars[0].start, chars[-1].end) == (w.start, w.end)
        assert all(c1.end <= c2.start for c1, c2 in zip(chars, chars[1:]))
        assert np.isfinite(w.score) and w.score <= 0


def test_score_is_the_mean_log_probability_of_the_words_frames() -> None:
    logits = np.log(np.full((3, len(VOCAB)), 0.01, np.float32))
    logits[:, VOCAB["A"]] = np.log(0.5)
    logits[:, 0] = np.log(1 - 0.5 - 0.01 * (len(VOCAB) - 2))
    result = align(logits, "a", UPPER)
    assert (result.words[0].start, result.words[0].end) == (0, 3)
    assert result.words[0].score == pytest.approx(np.log(0.5), abs=1e-6)


@pytest.mark.parametrize("text", ["", "   \n", "|", " | "])
def test_empty_text_is_refused(text: str) -> None:
    with pytest.raises(EmptyTextError) as err:
        align(np.zeros((10, len(VOCAB)), np.float32), text, UPPER)
    assert (err.value.status, err.value.code) == (422, "empty_text")


@pytest.mark.parametrize(
    ("text", "frames", "needed", "repeats"),
    [("hello", 5, 6, 1), ("a a", 2, 3, 0), ("aa aa", 6, 7, 2), ("12 34", 2, 3, 0)],
)
def test_too_few_frames_is_refused_with_both_numbers(
    text: str, frames: int, needed: int, repeats: int
) -> None:
    with pytest.raises(AlignmentImpossibleError) as err:
        align(np.zeros((frames, len(VOCAB)), np.float32), text, UPPER)
    e = err.value
    assert isinstance(e, ServiceError)
    assert (e.status, e.code, e.frames, e.needed, e.repeats) == (
        422,
        "alignment_impossible",
        frames,
        needed,
        repeats,
    )
    assert f"{needed} frames" in e.message and f"has {frames}" in e.message
    align(np.zeros((needed, len(VOCAB)), np.float32), text, UPPER)  # one more frame is enough


def test_a_vocabulary_without_the_blank_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="blank"):
        align(np.zeros((5, 3), np.float32), "a", CTCTokenizer({"A": 0, "|": 1, "B": 2}))


@pytest.mark.parametrize("bad", [np.zeros((5,)), np.full((5, len(VOCAB)), np.nan)])
def test_malformed_emissions_are_a_caller_error(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        align(bad.astype(np.float32), "a", UPPER)


def test_star_absorbs_speech_the_text_lacks() -> None:
    """Emissions spell "hello low world"; the text says "hello world". Without the star,
    HELLO's O stretches onto the O of LOW; with it, LOW goes to the word boundary."""
    logits = peaky("hello low world")
    plain = align(logits, "hello world", UPPER, onset_log_prob=None)
    starred = align(logits, "hello world", UPPER, star=True, onset_log_prob=None)
    assert [(w.start, w.end) for w in plain.words] == [(3, 32), (43, 60)]
    assert [(w.start, w.end) for w in starred.words] == [(3, 20), (43, 60)]
    assert starred.words[0].score > plain.words[0].score


def test_a_costly_star_is_never_taken() -> None:
    logits = peaky("hello low world")
    starred = align(logits, "hello world", UPPER, star=True, star_penalty=1e6)
    assert starred == align(logits, "hello world", UPPER)
