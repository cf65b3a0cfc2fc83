"""One Settings object: every CLI flag is also an environment variable with the W2V_ prefix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "W2V_"


def _split_csv(value: object) -> object:
    """Env vars carry lists as comma-separated text (W2V_MODEL=a=/m/a,b=/m/b)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Server and engine settings; validated once at start-up (fail fast)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # Models: [NAME=]PATH_OR_HUB_ID; empty means the embedded demo model.
    model: Annotated[list[str], NoDecode] = Field(default_factory=list)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # int8: dynamic int8 weights on CPU (wav2vec2/quantize.py); auto never picks it
    dtype: Literal["auto", "float32", "float16", "bfloat16", "int8"] = "auto"
    attention: Literal["auto", "eager", "sdpa", "flash"] = "auto"
    # fp32 linear layers on the CPU through oneDNN or MKL (wav2vec2/onednn.py); auto times
    # both at load, so two starts may differ in the last bits: pin one for reproducible runs.
    linear: Literal["auto", "onednn", "mkl"] = "auto"
    # MMS checkpoints (adapter.<lang>.safetensors beside the weights): the languages kept
    # resident, every one the checkpoint has when empty; a code it lacks fails its load.
    languages: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # With it, an MMS model loads each language's adapters on first use and drops the least
    # recently used beyond this many MB (per model); without it, all are loaded at start.
    language_memory_mb: float | None = Field(None, gt=0)
    # language "auto": ASR_NAME=LID_PATH_OR_HUB_ID, a Wav2Vec2ForSequenceClassification whose
    # labels are language codes (as facebook/mms-lid-*), loaded beside that model.
    lid_model: Annotated[list[str], NoDecode] = Field(default_factory=list)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Dynamic batching
    max_batch_size: int = Field(16, ge=1)
    max_batch_samples: int = Field(16_000 * 240, ge=16_000)  # padded samples per forward pass
    max_wait_ms: float = Field(5.0, ge=0)
    max_queue: int = Field(256, ge=1)
    # A request's deadline: request_timeout plus its expected compute (measured throughput)
    # times request_timeout_margin, at most max_request_timeout (admission.Deadline). Work
    # expected to take longer than max_request_timeout is refused up front (413).
    request_timeout: float = Field(120.0, gt=0)
    request_timeout_margin: float = Field(2.0, ge=1)
    max_request_timeout: float = Field(3600.0, gt=0)
    # Admission (admission.py): refuse (429) a request expected to wait longer than this
    max_queue_time: float = Field(10.0, gt=0)

    # Request limits, enforced while reading
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    max_audio_seconds: float = Field(3600.0, gt=0)
    # Isolated FFmpeg decoding (sandbox.py): worker processes, their time and memory limits
    decode_workers: int = Field(2, ge=1)
    decode_timeout: float = Field(60.0, gt=0)
    decode_queue_timeout: float = Field(10.0, gt=0)
    decode_memory_mb: int = Field(1024, ge=64)

    # Long audio: windows of at most chunk_seconds, cut in pauses, or where speech runs on
    # with stride_seconds of context on each side (windows.py)
    chunk_seconds: float = Field(30.0, gt=0)
    stride_seconds: float = Field(5.0, ge=0)

    # Forced alignment (POST /v1/align): the transcript's size limit (an hour of speech is
    # ~50,000 characters), and the threads that run the Viterbi beside the forward passes.
    max_align_text_chars: int = Field(100_000, ge=1)
    align_workers: int = Field(2, ge=1)

    # Streaming
    max_streams: int = Field(64, ge=1)
    stream_idle_timeout: float = Field(30.0, gt=0)
    stream_max_frame_bytes: int = Field(1024 * 1024, ge=1024)
    stream_chunk_seconds: float = Field(1.0, gt=0)
    stream_left_context_seconds: float = Field(4.0, ge=0)
    stream_lookahead_seconds: float = Field(0.5, ge=0)
    stream_max_segment_seconds: float = Field(20.0, gt=0)
    # A segment ends (a final is sent) after this much CTC blank/delimiter output: a pause.
    stream_pause_seconds: float = Field(0.5, gt=0)
    # Windows of one stream submitted together when it has a backlog (a client sending faster
    # than real time); they share forward passes with other streams and REST clips.
    stream_parallel_windows: int = Field(4, ge=1)

    # Transcript decoding: beam searches run in a pool of this many threads per model, off the
    # event loop and the model worker; the limits bound what one request may ask for.
    beam_workers: int = Field(2, ge=1)
    max_beam_width: int = Field(512, ge=1)
    max_hotwords: int = Field(100, ge=0)
    max_hotword_chars: int = Field(100, ge=1)

    # Security and lifecycle
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    drain_timeout: float = Field(30.0, ge=0)
    # Slow clients: a request's headers must arrive within header_timeout of the connection
    # (or of the previous answer), and its body may pause at most body_timeout at a time.
    # Generous: a phone on a poor link uploads slowly but steadily.
    header_timeout: float = Field(30.0, gt=0)
    body_timeout: float = Field(60.0, gt=0)
    # None: each model's own `verify_threshold` (config.json), else 0.7.
    verify_threshold: float | None = Field(None, ge=-1, le=1)

    _split = field_validator(
        "model", "languages", "lid_model", "api_keys", "cors_origins", mode="before"
    )(_split_csv)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.stride_seconds * 2 >= self.chunk_seconds:
            raise ValueError("stride_seconds must be less than half of chunk_seconds")
        if self.max_request_timeout < self.request_timeout:
            raise ValueError("max_request_timeout must be at least request_timeout")
        self.lid_models()
        return self

    def lid_models(self) -> dict[str, str]:
        """ASR model name -> its language identifier's path or hub id."""
        pairs = [s.partition("=") for s in self.lid_model]
        bad = [f"{a}{sep}{b}" for a, sep, b in pairs if not (sep and a and b)]
        if bad:
            raise ValueError(f"lid_model takes ASR_NAME=LID_PATH_OR_HUB_ID, got {bad}")
        return {a: b for a, _, b in pairs}

    def model_specs(self) -> list[tuple[str, str]]:
        """(name, path or hub id) per --model; the embedded demo models when none is given."""
        if not self.model:
            return default_model_specs()
        return [parse_model_spec(s) for s in self.model]


MODELS_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL_NAME = "demo-ctc"
# Served when no --model is given, so that every endpoint has a real default (where the package
# carries it): speech recognition, spoken commands, speaker embeddings and voice activity.
DEFAULT_MODEL_NAMES = (DEFAULT_MODEL_NAME, "demo-commands", "demo-speakers", "demo-vad")
TASK_DEFAULTS = {"classify": "demo-commands", "embed": "demo-speakers", "frames": "demo-vad"}


def default_model_specs(task: str | None = None) -> list[tuple[str, str]]:
    """The embedded demo models present in the package; with `task`, only the one for it."""
    specs = [
        (name, str(MODELS_DIR / name))
        for name in DEFAULT_MODEL_NAMES
        if (MODELS_DIR / name / "config.json").is_file()
    ]
    if task is None:
        return specs
    wanted = TASK_DEFAULTS.get(task, DEFAULT_MODEL_NAME)
    return [s for s in specs if s[0] == wanted] or specs[:1]


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_model_spec(spec: str) -> tuple[str, str]:
    """NAME=PATH_OR_HUB_ID, or PATH_OR_HUB_ID named by its last path component."""
    name, sep, source = spec.partition("=")
    if sep and _NAME.match(name) and source:
        return name, source
    return Path(spec.rstrip("/")).name or spec, spec
