"""A requested language -> one of the codes a model serves (docs/api.md, "Languages").

MMS names its adapters by ISO 639-3 code (`eng`, `fra`), sometimes with a script (`cmn-script_
simplified`); OpenAI clients send ISO 639-1 (`en`). A request matches a served code exactly, or
through ISO_639_1 (the 639-3 codes a 639-1 code stands for: the macrolanguage and the
individual language MMS may use instead), or by its script variants; a request that matches
several served codes is ambiguous and refused, never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.errors import BadFieldError
from service.schemas import Label

AUTO = "auto"  # language identification picks the language (service/lid.py)
MAX_CODE_CHARS = 64

# ISO 639-1 -> ISO 639-3: the macrolanguage first, then the individual language MMS uses.
ISO_639_1: dict[str, tuple[str, ...]] = {
    "af": ("afr",), "am": ("amh",), "ar": ("ara", "arb"), "as": ("asm",), "az": ("aze", "azj"),
    "be": ("bel",), "bg": ("bul",), "bn": ("ben",), "bo": ("bod",), "br": ("bre",),
    "bs": ("bos",), "ca": ("cat",), "cs": ("ces",), "cy": ("cym",), "da": ("dan",),
    "de": ("deu",), "el": ("ell",), "en": ("eng",), "eo": ("epo",), "es": ("spa",),
    "et": ("est", "ekk"), "eu": ("eus",), "fa": ("fas", "pes"), "fi": ("fin",), "fo": ("fao",),
    "fr": ("fra",), "ga": ("gle",), "gl": ("glg",), "gu": ("guj",), "ha": ("hau",),
    "he": ("heb",), "hi": ("hin",), "hr": ("hrv",), "ht": ("hat",), "hu": ("hun",),
    "hy": ("hye",), "id": ("ind",), "ig": ("ibo",), "is": ("isl",), "it": ("ita",),
    "ja": ("jpn",), "jv": ("jav",), "ka": ("kat",), "kk": ("kaz",), "km": ("khm",),
    "kn": ("kan",), "ko": ("kor",), "ku": ("kur", "kmr"), "ky": ("kir",), "la": ("lat",),
    "lb": ("ltz",), "ln": ("lin",), "lo": ("lao",), "lt": ("lit",), "lv": ("lav", "lvs"),
    "mg": ("mlg", "plt"), "mi": ("mri",), "mk": ("mkd",), "ml": ("mal",), "mn": ("mon", "khk"),
    "mr": ("mar",), "ms": ("msa", "zsm"), "mt": ("mlt",), "my": ("mya",), "ne": ("nep", "npi"),
    "nl": ("nld",), "nn": ("nno",), "no": ("nor", "nob"), "ny": ("nya",), "oc": ("oci",),
    "om": ("orm", "gaz"), "or": ("ori", "ory"), "pa": ("pan",), "pl": ("pol",),
    "ps": ("pus", "pbt"), "pt": ("por",), "qu": ("que", "quz"), "ro": ("ron",), "ru": ("rus",),
    "rw": ("kin",), "sa": ("san",), "sd": ("snd",), "si": ("sin",), "sk": ("slk",),
    "sl": ("slv",), "sn": ("sna",), "so": ("som",), "sq": ("sqi", "als"), "sr": ("srp",),
    "su": ("sun",), "sv": ("swe",), "sw": ("swa", "swh"), "ta": ("tam",), "te": ("tel",),
    "tg": ("tgk",), "th": ("tha",), "tk": ("tuk",), "tl": ("tgl",), "tr": ("tur",),
    "tt": ("tat",), "ug": ("uig",), "uk": ("ukr",), "ur": ("urd",), "uz": ("uzb", "uzn"),
    "vi": ("vie",), "wo": ("wol",), "xh": ("xho",), "yi": ("yid", "ydd"), "yo": ("yor",),
    "zh": ("zho", "cmn"), "zu": ("zul",),
}  # fmt: skip


def matching(requested: str, served: Sequence[str]) -> list[str]:
    """The served codes `requested` may name: itself, or through ISO_639_1, or a script
    variant of either (`cmn` names `cmn-script_simplified`)."""
    if requested in served:
        return [requested]
    wanted = (requested.lower(), *ISO_639_1.get(requested.lower(), ()))
    return [c for c in served if c.lower() in wanted or c.lower().split("-", 1)[0] in wanted]


def resolve(requested: str, served: Sequence[str], model: str) -> str:
    """The served code `requested` names; a 422 unsupported_language (listing what `model`
    serves) when it names none, or several."""
    matches = matching(requested, served)
    if len(matches) == 1:
        return matches[0]
    why = f"is ambiguous ({', '.join(matches)})" if matches else "is not served"
    raise unsupported(f"language {requested!r} {why}", served, model)


def unsupported(message: str, served: Sequence[str], model: str) -> BadFieldError:
    listed = ", ".join(served[:50]) + (f" and {len(served) - 50} more" if len(served) > 50 else "")
    offer = f"model {model!r} serves {listed}" if served else f"model {model!r} has no languages"
    return BadFieldError(f"{message}: {offer}", code="unsupported_language")


def identified(labels: Sequence[Label], served: Sequence[str], model: str) -> tuple[str, float]:
    """The language identifier's answer (labels best first) -> the best-scored label that
    names a served language, and its score; a 422 when none does."""
    for label in labels:
        try:
            return resolve(label.label, served, model), label.score
        except BadFieldError:
            continue
    best = ", ".join(f"{x.label} ({x.score:.2f})" for x in labels[:3])
    raise unsupported(f"the identified languages ({best}) are not served", served, model)
