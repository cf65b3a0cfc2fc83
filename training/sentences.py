"""English sentences for the demo corpus: random common-word sequences and natural templates."""

from __future__ import annotations

import re
from functools import cache

import numpy as np

# Sentences the tests and examples speak: never trained on, so a test measures generalisation.
RESERVED = {
    "hello world",
    "the quick brown fox jumps over the lazy dog",
    "please call me back after lunch",
    "we will meet at the station tomorrow",
    "she sells sea shells by the sea shore",
    "the weather is nice today",
    "open the door and turn on the light",
    "my phone number is easy to remember",
}


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Abbreviations and spelled-out forms: espeak-ng says something the letters do not spell.
_SPOKEN_DIFFERENTLY = _words(
    "mr mrs ms dr st jr vs ok uk eu us ii iii iv ny ca ap op im id ed ll ve em el en le la da "
    "de di il mi sa se fi va ac li er ai dj ho ma pa na mo un et al co re etc usa inc dna ceo fbi "
    "nba lol gop abc jan feb aug oct nov dec sept sec vol min tho del des com con los las san rep "
    "doc rio lmao haha corp isis tv pm www http https dont cant"
)
# Kept out of a corpus whose sentences end up in tests, logs and the model card.
_PROFANE = _words(
    "fuck fucking fucked shit damn ass dick cock porn rape sex sexy nazi bitch pussy crap butt "
    "suck sucks hell gay wtf"
)
_TWO_LETTER_WORDS = _words(
    "to of in is it on be as at he by my or we an so me if up do no go am oh hi ex ad ah ha yo "
    "eh uh ye"
)


@cache
def common_words(n: int = 5000) -> tuple[str, ...]:
    """The n most frequent English words, a-z and apostrophe, that espeak-ng reads as spelled."""
    import wordfreq

    out = []
    for w in wordfreq.top_n_list("en", n):
        if not re.fullmatch(r"[a-z]+('[a-z]+)?", w) or not re.search("[aeiouy]", w):
            continue
        if len(w) == 1 and w not in ("a", "i"):
            continue
        if len(w) == 2 and w not in _TWO_LETTER_WORDS:
            continue
        if w in _SPOKEN_DIFFERENTLY or w in _PROFANE:
            continue
        out.append(w)
    return tuple(out)


def random_sequence(rng: np.random.Generator) -> str:
    """1-12 words drawn uniformly from the common-word list (short ones a little more often)."""
    words = common_words()
    n = _sequence_length(rng)
    return " ".join(words[i] for i in rng.integers(0, len(words), n))


# Exponent on a word's English frequency when drawing a frequent sequence: 1 would be running
# text (THE every 20 words), 0 the uniform draw, which lets OR, WHEN and DOES be heard no more
# often than TREATY (about 100 times in 93 h), and the model spells them from their sound.
FREQUENCY_EXPONENT = 0.6


@cache
def _word_weights() -> np.ndarray:
    import wordfreq

    f = np.array([wordfreq.word_frequency(w, "en") for w in common_words()]) ** FREQUENCY_EXPONENT
    return f / f.sum()


def frequent_sequence(rng: np.random.Generator) -> str:
    """1-12 common words drawn by their English frequency, tempered (FREQUENCY_EXPONENT)."""
    words, p = common_words(), _word_weights()
    return " ".join(words[i] for i in rng.choice(len(words), _sequence_length(rng), p=p))


# --- Connected function words (from round 12) -------------------------------------------------

# Round 11 heard its function words mostly beside random content words: the frequency draw puts
# ME next to TO, or WHEN before THE, only by chance, and in connected speech espeak-ng reduces and
# joins them ("me to" said as METER). These sequences alternate short chunks of function words,
# built from the generic clause pieces below, with 1-2 frequency-drawn words between them.
_FUNCTION = {
    "subj": "i you we they he she it people",
    "obj": "me you him her us them it",
    "aux": "will can could would should might must do does did is are was were has have had",
    "prep": "to of in on at for with from by about after before into over under like",
    "det": "the a this that my your his her our their some every",
    "wh": "when where what why how who which",
    "conj": "and but or so because if than",
}
_CHUNKS = (
    "{subj} {aux}",
    "{subj} {aux} not",
    "{aux} {subj}",
    "{aux} {det}",
    "{prep} {det}",
    "{prep} {obj}",
    "{obj} to",
    "{obj} {prep} {det}",
    "to {det}",
    "to",
    "{wh} {subj}",
    "{wh} {aux} {subj}",
    "{wh} {aux} {det}",
    "{wh} {det}",
    "{conj} {subj}",
    "{conj} {det}",
    "{conj} {wh} {subj}",
    "{obj} {wh} {subj}",
    "{obj} {wh} {det}",
    "{det}",
    "{prep}",
    "{obj}",
)


@cache
def heldout_trigrams() -> frozenset[str]:
    """Three words in a row that a held-out template fixes ("asked me to", "time does the"):
    connected sequences never contain one, so the held-out shapes stay unheard."""
    out = set()
    for template in HELDOUT_TEMPLATES:
        for run in re.split(r"\{\w+\}", template):
            words = run.split()
            out.update(" ".join(words[i : i + 3]) for i in range(len(words) - 2))
    return frozenset(out)


def connected_sequence(rng: np.random.Generator) -> str:
    """3-14 words: function-word chunks (`_CHUNKS`) alternating with 1-2 frequency-drawn words."""
    words, p = common_words(), _word_weights()
    while True:
        n, out = int(rng.integers(3, 15)), []
        chunk_next = rng.random() < 0.6
        while len(out) < n:
            if chunk_next:
                chunk = _CHUNKS[int(rng.integers(len(_CHUNKS)))]
                out += re.sub(
                    r"\{(\w+)\}", lambda m: _choice(rng, _FUNCTION[m.group(1)].split()), chunk
                ).split()
            else:
                out += [words[i] for i in rng.choice(len(words), int(rng.integers(1, 3)), p=p)]
            chunk_next = not chunk_next
        text = " ".join(out[:n])
        if not any(t in text for t in heldout_trigrams()):
            return text


def _choice(rng: np.random.Generator, choices: list[str]) -> str:
    return choices[int(rng.integers(len(choices)))]


def _sequence_length(rng: np.random.Generator) -> int:
    return int(rng.integers(1, 4)) if rng.random() < 0.15 else int(rng.integers(3, 13))


# --- Natural templates -------------------------------------------------------------------------

_LEX = {
    "name": "john mary david sarah michael emma james anna robert lisa peter laura tom kate "
    "daniel grace paul helen mark susan steve alice frank julia henry nina oliver rose",
    "noun": "car house book dog cat table phone letter window garden city river computer "
    "bottle chair door picture shirt bag key box apple song movie game school office "
    "ticket train bus plane bike road street park shop market kitchen bridge camera "
    "report plan meeting story question answer problem idea teacher doctor friend "
    "family child student driver manager neighbour baby team company bank hotel",
    "adj": "big small old new red blue green black white happy sad quiet loud cold warm hot "
    "early late good bad long short young beautiful strange simple important busy "
    "empty full dark bright heavy light cheap expensive clean dirty fast slow",
    "verb": "read find open close buy sell clean fix call send bring take carry watch paint "
    "build move check wash cook visit help need like want",
    "verb_past": "read found opened closed bought sold cleaned fixed called sent brought took "
    "carried watched painted built moved checked washed cooked visited helped",
    "verb_ing": "reading finding opening cleaning fixing calling sending bringing taking "
    "carrying watching painting building moving checking washing cooking visiting",
    "intrans": "walk run sleep work wait swim dance sing travel study drive rest",
    "intrans_past": "walked ran slept worked waited swam danced sang travelled studied drove",
    "unit": "minutes hours days weeks years miles people books dollars times",
    "pronoun": "i you we they he she",
    "feeling": "happy tired hungry ready sorry excited worried busy late sure",
    "weather": "sunny cold warm rainy windy cloudy hot",
    "food": "bread coffee tea rice soup fish chicken cheese water milk pizza salad cake fruit",
    "color": "red blue green black white yellow brown grey orange purple",
}
# Slots whose choices are several words long.
_MULTI = {
    "place": [
        "the park",
        "the office",
        "the station",
        "the airport",
        "the beach",
        "the market",
        "the library",
        "the hospital",
        "the school",
        "the city",
        "the mountains",
        "the river",
        "the store",
        "the kitchen",
        "the garden",
        "home",
        "work",
        "town",
        "london",
        "paris",
        "the cinema",
        "the restaurant",
        "the museum",
    ],
    "time": [
        "today",
        "tomorrow",
        "yesterday",
        "tonight",
        "this morning",
        "this evening",
        "next week",
        "last week",
        "on monday",
        "on friday",
        "in the morning",
        "at night",
        "every day",
        "after dinner",
        "before lunch",
        "on sunday",
        "in the afternoon",
    ],
    "number": [
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "fifteen",
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "a hundred",
        "twenty five",
        "sixty",
        "ninety",
    ],
}

TEMPLATES = [
    "the {noun} is {adj}",
    "the {adj} {noun} is in the {noun}",
    "{name} {verb_past} the {noun} {time}",
    "{pronoun} {verb_past} a {adj} {noun}",
    "can you {verb} the {noun} please",
    "please {verb} the {adj} {noun}",
    "i need to {verb} the {noun} {time}",
    "we went to {place} {time}",
    "{name} is going to {place} {time}",
    "{name} and {name} {intrans_past} to {place}",
    "where is the {adj} {noun}",
    "have you seen my {noun}",
    "it is {weather} {time}",
    "i am {feeling} {time}",
    "{pronoun} will {intrans} {time}",
    "there are {number} {unit} left",
    "it takes {number} {unit} to get to {place}",
    "my {noun} is {color}",
    "i would like some {food} please",
    "{name} likes {food} and {food}",
    "do you want to {verb} the {noun}",
    "the {noun} was too {adj}",
    "{name} is {verb_ing} the {noun}",
    "we are {verb_ing} a {adj} {noun} {time}",
    "i bought {number} {adj} {nouns}",
    "the {noun} near {place} is {adj}",
    "{pronoun} {intrans_past} for {number} {unit}",
    "why is the {noun} so {adj}",
    "let me {verb} the {noun} for you",
    "{name} said the {noun} was {adj}",
    "could you tell {name} to {verb} the {noun}",
    "the {color} {noun} belongs to {name}",
    "i think the {noun} is {adj}",
    "how many {unit} until we reach {place}",
    "{name} forgot the {noun} at {place}",
    "after {food} we {intrans_past} {time}",
    "the {noun} and the {noun} are {adj}",
    "don't forget to {verb} the {noun}",
    "{name} can't find the {adj} {noun}",
    "it's {weather} so we will {intrans} {time}",
]
# Held-out set (a) draws only from these: sentence shapes the model never heard.
HELDOUT_TEMPLATES = [
    "is the {noun} {adj} or {adj}",
    "{name} asked me to {verb} the {noun} {time}",
    "tell me when the {noun} is ready",
    "the {noun} at {place} was very {adj}",
    "you should {intrans} {time}",
    "{pronoun} found {number} {nouns} in the {noun}",
    "what time does the {noun} leave {place}",
    "my friend {name} is {feeling} {time}",
]


def _plural(noun: str) -> str:
    if noun == "child":
        return "children"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def _pick(rng: np.random.Generator, slot: str) -> str:
    if slot == "nouns":
        return _plural(_pick(rng, "noun"))
    return _choice(rng, _MULTI.get(slot) or _LEX[slot].split())


def natural_sentence(rng: np.random.Generator, heldout: bool = False) -> str:
    """A sentence from a template, every slot filled independently."""
    templates = HELDOUT_TEMPLATES if heldout else TEMPLATES
    template = templates[int(rng.integers(len(templates)))]
    return re.sub(r"\{(\w+)\}", lambda m: _pick(rng, m.group(1)), template)
