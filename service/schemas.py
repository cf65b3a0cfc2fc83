"""Wire types: the one Prediction result (CLI line, REST body, final streaming message)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Task = Literal["transcribe", "classify", "embed", "frames"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Word(_Frozen):
    word: str
    start: float
    end: float


class Label(_Frozen):
    label: str
    score: float


class Segment(_Frozen):
    label: str
    start: float
    end: float


class Prediction(_Frozen):
    """Fields by task (CONTRACT.md); those a task does not produce are left out of the JSON."""

    model: str
    task: Task
    duration: float
    text: str | None = None
    words: list[Word] | None = None
    labels: list[Label] | None = None
    embedding: list[float] | None = None
    segments: list[Segment] | None = None

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


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


class VerifyResult(_Frozen):
    score: float
    same_speaker: bool
    threshold: float
