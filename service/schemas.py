"""Wire types (docs/api.md): the one Prediction (CLI line, REST body) and the stream's messages,
whose `final` carries the same `Word` as a Prediction."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Task = Literal["transcribe", "classify", "embed", "frames", "align"]
Granularity = Literal["word", "char", "both"]  # align: which spans the answer carries


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Options(_Frozen):
    """Per-request options that reach post-processing through ServedModel.predict (and
    ServedModel.align: granularity, star)."""

    granularity: Granularity = "word"  # align: words, characters, or both
    star: bool = False  # align: word boundaries may absorb speech the text lacks
    top_k: int = 5  # classify: labels returned
    # transcribe (docs/api.md, "Decoding"); None means the model's or the beam's default.
    decoder: Literal["greedy", "beam"] | None = None  # None: beam where the model has an LM
    beam_width: int | None = None
    alpha: float | None = None  # LM weight; None keeps the model's attrs.json value
    beta: float | None = None  # word insertion bonus; None keeps attrs.json
    hotwords: tuple[str, ...] = ()
    hotword_weight: float | None = None
    # transcribe, align, stream: a served language code, "auto", or None for the model's
    # default; ServedModel resolves it to one of the model's codes (service/languages.py).
    language: str | None = None


class Word(_Frozen):
    word: str
    start: float
    end: float


class ScoredWord(Word):
    """An aligned word: its span, and the mean log-probability of its frames on the path."""

    score: float


class ScoredChar(_Frozen):
    """An aligned character (a run of characters the vocabulary lacks is one), `word` the
    index of its word in `words`/the text."""

    char: str
    start: float
    end: float
    score: float
    word: int


class Label(_Frozen):
    label: str
    score: float


class Segment(_Frozen):
    label: str
    start: float
    end: float


class Prediction(_Frozen):
    """Fields by task (docs/api.md); those a task does not produce are left out of the JSON."""

    model: str
    task: Task
    duration: float
    text: str | None = None
    words: list[Word] | list[ScoredWord] | None = None  # ScoredWord for task align
    chars: list[ScoredChar] | None = None
    labels: list[Label] | None = None
    embedding: list[float] | None = None
    segments: list[Segment] | None = None
    language: str | None = None  # a model with language adapters: the language used
    language_score: float | None = None  # language "auto": the identifier's softmax score


class ErrorDetail(_Frozen):
    code: str
    message: str


class ErrorBody(_Frozen):
    """Every error answer (service/errors.py builds it); for the OpenAPI page."""

    error: ErrorDetail


class ModelCard(_Frozen):
    """One entry of GET /v1/models."""

    id: str
    object: Literal["model"] = "model"
    task: Task
    architecture: str
    sampling_rate: int
    labels: list[str] | None = None
    device: str
    dtype: str
    attention: str
    decoder: str | None = None  # transcribe: "beam+lm" where the model ships an LM, else "greedy"
    languages: list[str] | None = None  # language adapters: the codes served, default first
    language_identifier: str | None = None  # the model behind language "auto", if any


class VerifyResult(_Frozen):
    score: float
    same_speaker: bool
    threshold: float


# WebSocket /v1/stream, server -> client (docs/api.md, "Streaming transcription")


class Ready(_Frozen):
    type: Literal["ready"] = "ready"
    model: str
    sample_rate: int
    encoding: str
    language: str | None = None  # a model with language adapters: the stream's language


class Partial(_Frozen):
    """May still change; the open segment's text so far."""

    type: Literal["partial"] = "partial"
    text: str
    start: float


class Final(_Frozen):
    """Never changes; times from the start of the stream."""

    type: Literal["final"] = "final"
    text: str
    words: list[Word]
    start: float
    end: float


class End(_Frozen):
    type: Literal["end"] = "end"
    duration: float  # seconds of audio received, before resampling


class ErrorMessage(_Frozen):
    """Sent before the server closes the socket with a close code."""

    type: Literal["error"] = "error"
    code: str
    message: str


StreamMessage = Ready | Partial | Final | End | ErrorMessage
