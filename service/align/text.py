"""Transcript -> words of token ids, as the checkpoint's CTC tokenizer sees the text.

transformers' Wav2Vec2CTCTokenizer upper-cases the text when `do_lower_case` (its vocabulary is
upper case then), turns each space into the word delimiter and every character missing from the
vocabulary into `<unk>`, which a CTC model almost never emits. Here, instead:
- all whitespace (and the delimiter character itself) separates words, runs of it count once;
- a character missing from the vocabulary is looked up in upper, then lower case, because most
  English checkpoints have an upper-case vocabulary without `do_lower_case`, and people type
  mixed case;
- a run of characters still missing (digits, punctuation, other scripts) becomes one WILDCARD
  token that matches any non-blank emission: the word keeps its place and gets times. One token
  per run, because the spoken form of "1984" has an unknown number of tokens.
- text is NFC-normalised first, so a composed vocabulary character ("é") matches either spelling.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from service.errors import ModelError
from service.wav2vec2.tokenizer import CTCTokenizer

WILDCARD = -1


@dataclass(frozen=True)
class Token:
    id: int  # vocabulary id, or WILDCARD
    text: str  # as answered: the vocabulary's character (lower case when do_lower_case), or
    # the run of characters a WILDCARD stands for, as typed


@dataclass(frozen=True)
class TextWord:
    text: str
    tokens: tuple[Token, ...]


@dataclass(frozen=True)
class AlignVocab:
    """What alignment needs from a CTC tokenizer, restricted to ids the emissions have."""

    chars: dict[str, int]  # single characters -> id; neither the blank nor the delimiter
    blank: int
    delimiter: int | None  # None: words follow each other without a token between them
    delimiter_text: str | None
    upper_first: bool  # the tokenizer's do_lower_case: text is upper-cased before lookup
    lower_output: bool  # and decoded words are lower case, as CTCTokenizer.decode gives them

    @classmethod
    def from_tokenizer(cls, tokenizer: CTCTokenizer, width: int) -> AlignVocab:
        """The vocabulary of `tokenizer` for emissions of `width` columns."""
        ids = {t: i for i, t in sorted(tokenizer.id_to_token.items()) if 0 <= i < width}
        if tokenizer.pad_token not in ids:
            raise ModelError(f"the CTC blank {tokenizer.pad_token!r} has no logit among {width}")
        blank = ids[tokenizer.pad_token]
        delim_text = tokenizer.word_delimiter_token
        delimiter = ids.get(delim_text) if delim_text else None
        chars = {t: i for t, i in ids.items() if len(t) == 1 and i != blank and i != delimiter}
        return cls(
            chars=chars,
            blank=blank,
            delimiter=delimiter,
            delimiter_text=delim_text if delimiter is not None else None,
            upper_first=tokenizer.do_lower_case,
            lower_output=tokenizer.do_lower_case,
        )

    def lookup(self, char: str) -> tuple[int, str] | None:
        """(id, vocabulary character) for a character, trying upper then lower case."""
        for form in (char, char.upper(), char.lower()):
            if form in self.chars:
                return self.chars[form], form
        return None


def normalise(text: str, vocab: AlignVocab) -> list[TextWord]:
    """The words of `text` with their tokens; empty when the text has no word."""
    text = unicodedata.normalize("NFC", text)
    if vocab.delimiter_text:
        text = text.replace(vocab.delimiter_text, " ")
    if vocab.upper_first:
        text = text.upper()
    return [_word(raw, vocab) for raw in text.split()]


def _word(raw: str, vocab: AlignVocab) -> TextWord:
    tokens: list[Token] = []
    for char in raw:
        found = vocab.lookup(char)
        if found is not None:
            tokens.append(Token(*found))
        elif tokens and tokens[-1].id == WILDCARD:
            tokens[-1] = Token(WILDCARD, tokens[-1].text + char)
        else:
            tokens.append(Token(WILDCARD, char))
    if vocab.lower_output:
        tokens = [Token(t.id, t.text.lower()) for t in tokens]
    return TextWord("".join(t.text for t in tokens), tuple(tokens))
