"""CTC tokenizer: greedy ids -> text and word offsets, as Wav2Vec2CTCTokenizer decodes them.

Decoding follows transformers' CTC pipeline: special tokens are kept (only the pad token,
which is the CTC blank, is removed after collapsing repeats), the word delimiter becomes the
replacement character, the string is stripped, and do_lower_case lower-cases the output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from service.errors import ModelError

_CLEANUPS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)


@dataclass(frozen=True)
class WordSpan:
    """A word and its frames: start = first frame, end = one past the last frame."""

    word: str
    start: int
    end: int


@dataclass(frozen=True)
class Decoded:
    text: str
    words: list[WordSpan]


def _token_text(token: Any) -> str:
    return token["content"] if isinstance(token, dict) else str(token)


class CTCTokenizer:
    def __init__(
        self,
        vocab: dict[str, int],
        *,
        pad_token: str = "<pad>",
        unk_token: str = "<unk>",
        word_delimiter_token: str | None = "|",
        replace_word_delimiter_char: str = " ",
        do_lower_case: bool = False,
        clean_up_tokenization_spaces: bool = False,
        added_tokens: dict[int, str] | None = None,
    ) -> None:
        self.id_to_token = {int(i): t for t, i in vocab.items()}
        for i, t in (added_tokens or {}).items():
            self.id_to_token.setdefault(int(i), t)  # the vocabulary wins over added tokens
        self.pad_token = pad_token
        self.unk_token = unk_token
        self.word_delimiter_token = word_delimiter_token
        self.replace_word_delimiter_char = replace_word_delimiter_char
        self.do_lower_case = do_lower_case
        self.clean_up = clean_up_tokenization_spaces

    @classmethod
    def from_dir(cls, path: Path, target_lang: str | None = None) -> CTCTokenizer:
        """Reads vocab.json and the tokenizer config, special tokens and added tokens files."""

        def read(name: str) -> dict[str, Any]:
            f = path / name
            try:
                return json.loads(f.read_text(encoding="utf-8")) if f.exists() else {}
            except ValueError as exc:
                raise ModelError(f"cannot parse {f}: {exc}") from exc

        vocab, config = read("vocab.json"), read("tokenizer_config.json")
        if not vocab:
            raise ModelError(f"{path} has no vocab.json: a CTC checkpoint needs its vocabulary")
        special = {
            k: _token_text(v)
            for k, v in read("special_tokens_map.json").items()
            if isinstance(v, (str, dict))
        }
        lang = target_lang or config.get("target_lang")
        if all(isinstance(v, dict) for v in vocab.values()):  # MMS: one vocabulary per language
            if lang is None:
                lang = "eng" if "eng" in vocab else sorted(vocab)[0]
            if lang not in vocab:
                raise ModelError(f"target_lang {lang!r} not in vocab.json ({len(vocab)} languages)")
            vocab = vocab[lang]
        added = {int(i): _token_text(t) for i, t in config.get("added_tokens_decoder", {}).items()}
        added.update({int(i): t for t, i in read("added_tokens.json").items()})

        def option(name: str, default: Any) -> Any:
            value = config.get(name, special.get(name, default))
            return _token_text(value) if isinstance(value, dict) else value

        return cls(
            vocab,
            pad_token=option("pad_token", "<pad>"),
            unk_token=option("unk_token", "<unk>"),
            word_delimiter_token=option("word_delimiter_token", "|"),
            replace_word_delimiter_char=option("replace_word_delimiter_char", " "),
            do_lower_case=bool(config.get("do_lower_case", False)),
            clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
            added_tokens=added,
        )

    def token_id(self, token: str | None) -> int | None:
        """The id of a token of the vocabulary; None when it has no such token."""
        ids = {t: i for i, t in self.id_to_token.items()}
        return None if token is None else ids.get(token)

    def decode(self, ids: list[int]) -> Decoded:
        """Greedy CTC ids (one per frame) -> text and word frame spans."""
        tokens = [self.id_to_token.get(int(i), self.unk_token) for i in ids]
        chars: list[str] = []
        spans: list[tuple[int, int]] = []
        frame = 0
        for token, run in groupby(tokens):
            n = len(list(run))
            if token != self.pad_token:
                chars.append(
                    self.replace_word_delimiter_char
                    if token == self.word_delimiter_token
                    else token
                )
                spans.append((frame, frame + n))
            frame += n
        text = "".join(chars).strip()
        if self.do_lower_case:
            text = text.lower()
        if self.clean_up:
            for old, new in _CLEANUPS:
                text = text.replace(old, new)
        return Decoded(text, self._words(chars, spans))

    def _words(self, chars: list[str], spans: list[tuple[int, int]]) -> list[WordSpan]:
        """Groups characters between delimiters into words, as transformers' word offsets."""
        words: list[WordSpan] = []
        current: list[str] = []
        start = end = 0
        for char, (s, e) in zip(chars, spans):
            if char == self.replace_word_delimiter_char:
                if current:
                    words.append(WordSpan("".join(current), start, end))
                    current = []
                continue
            if not current:
                start = s
            current.append(char)
            end = e
        if current:
            words.append(WordSpan("".join(current), start, end))
        if self.do_lower_case:
            words = [WordSpan(w.word.lower(), w.start, w.end) for w in words]
        return words
