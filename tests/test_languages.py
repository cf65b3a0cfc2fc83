"""service/languages.py: a requested language -> one served code, or a clear 422."""

from __future__ import annotations

import pytest

from service.errors import BadFieldError
from service.languages import identified, resolve
from service.schemas import Label

SERVED = ["eng", "fra", "cmn-script_simplified", "srp-script_latin", "srp-script_cyrillic", "arb"]


@pytest.mark.parametrize(
    "requested, code",
    [
        ("fra", "fra"),  # exact
        ("fr", "fra"),  # ISO 639-1
        ("EN", "eng"),  # case
        ("zh", "cmn-script_simplified"),  # 639-1 -> the individual language MMS uses
        ("cmn", "cmn-script_simplified"),  # the one script variant served
        ("ar", "arb"),  # macrolanguage code not served, its individual language is
        ("srp-script_latin", "srp-script_latin"),
    ],
)
def test_resolves_to_the_one_served_code(requested, code):
    assert resolve(requested, SERVED, "mms") == code


@pytest.mark.parametrize(
    "requested, why",
    [
        ("sr", "'sr' is ambiguous (srp-script_latin, srp-script_cyrillic)"),
        ("srp", "'srp' is ambiguous"),
        ("de", "'de' is not served"),
        ("english", "'english' is not served"),
    ],
)
def test_unknown_or_ambiguous_is_a_422_listing_what_is_served(requested, why):
    with pytest.raises(BadFieldError) as err:
        resolve(requested, SERVED, "mms")
    assert err.value.status == 422 and err.value.code == "unsupported_language"
    assert why in err.value.message and "model 'mms' serves eng, fra, cmn-script_simplified" in (
        err.value.message
    )


def test_identified_takes_the_best_label_that_is_served():
    labels = [
        Label(label="deu", score=0.6),
        Label(label="fr", score=0.3),
        Label(label="en", score=0.1),
    ]
    assert identified(labels, SERVED, "mms") == ("fra", 0.3)
    with pytest.raises(
        BadFieldError, match=r"identified languages \(deu \(0.60\)\) are not served"
    ):
        identified(labels[:1], SERVED, "mms")
