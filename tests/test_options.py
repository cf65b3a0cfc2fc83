"""service/options.py: request fields -> Options, the same for REST text, JSON and CLI flags."""

from __future__ import annotations

import pytest

from service.errors import BadFieldError
from service.options import parse_options, split_hotwords
from service.schemas import Options
from service.settings import Settings

SETTINGS = Settings(max_beam_width=64, max_hotwords=3, max_hotword_chars=10)


def test_text_and_json_values_parse_alike():
    text = {"decoder": "beam", "beam_width": "8", "alpha": "0.5", "beta": "-1"}
    text["hotword_weight"] = "4"
    typed = {"decoder": "beam", "beam_width": 8, "alpha": 0.5, "beta": -1, "hotword_weight": 4}
    expected = Options(decoder="beam", beam_width=8, alpha=0.5, beta=-1.0, hotword_weight=4.0)
    assert parse_options(text, SETTINGS) == parse_options(typed, SETTINGS) == expected


def test_empty_fields_mean_defaults():
    assert parse_options({"decoder": "", "alpha": None}, Settings()) == Options()


def test_the_default_beam_width_is_capped_by_the_setting():
    assert parse_options({"beam_width": ""}, SETTINGS).beam_width == 64


def test_hotwords_repeat_or_split_at_commas():
    assert split_hotwords(["paris, new york", "oslo", " "]) == ("paris", "new york", "oslo")
    assert parse_options({}, SETTINGS, ["a,b"]).hotwords == ("a", "b")


@pytest.mark.parametrize(
    ("fields", "hotwords", "code"),
    [
        ({"decoder": "viterbi"}, [], "invalid_decoder"),
        ({"beam_width": "0"}, [], "invalid_beam_width"),
        ({"beam_width": "-3"}, [], "invalid_beam_width"),
        ({"beam_width": "65"}, [], "invalid_beam_width"),  # max_beam_width is a setting
        ({"beam_width": "wide"}, [], "invalid_beam_width"),
        ({"beam_width": True}, [], "invalid_beam_width"),
        ({"alpha": "nan"}, [], "invalid_field"),
        ({"beta": "inf"}, [], "invalid_field"),
        ({"hotword_weight": "heavy"}, [], "invalid_field"),
        ({}, ["a", "b", "c", "d"], "too_many_hotwords"),
        ({}, ["x" * 11], "hotword_too_long"),
        ({}, [3], "invalid_hotwords"),
    ],
)
def test_bad_values_are_422_with_their_code(fields, hotwords, code):
    with pytest.raises(BadFieldError) as caught:
        parse_options(fields, SETTINGS, hotwords)
    assert caught.value.status == 422 and caught.value.code == code
