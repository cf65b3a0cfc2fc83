"""Engine: clips -> forward pass -> per-clip outputs, and long audio cut into windows.

`run_batch` is what the dynamic batcher calls (a list of windows in, one numpy output per
window out); the forward itself is `LoadedModel.forward` in the model package. `plan` and
`finish` turn one clip of any length into windows and the windows' outputs back into one
Prediction, so the CLI and the server (both through runtime.ServedModel) share every step but
the queue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from service import decode
from service.cost import fill_batches
from service.decoding import BEAM, beam_options, decoder_kind
from service.lm import Decoder, beam_transcript
from service.schemas import Options, Prediction, Word
from service.wav2vec2.loading import LoadedModel
from service.wav2vec2.resume import Resume
from service.wav2vec2.tokenizer import CTCTokenizer
from service.windows import Window, frame_windows, pooled_windows

# Tasks whose output is per frame: long audio is stitched from windows cut at pauses, or
# overlapping where speech runs on (windows.py); the others pool whole windows.
FRAME_TASKS = ("transcribe", "frames")
DEFAULT_OPTIONS = Options()


@dataclass(frozen=True)
class Clip:
    """What the batcher queues: a window's samples and the language whose adapters it runs
    through (None: the model's default, or a model without languages); a stream's window may
    reuse its stream's front-end frames (wav2vec2/resume.py)."""

    samples: np.ndarray
    language: str | None = None
    resume: Resume | None = None  # a stream window's start and its stream's front-end cache


class Engine:
    def __init__(
        self,
        loaded: LoadedModel,
        chunk_seconds: float = 30.0,
        stride_seconds: float = 5.0,
        decoder: Decoder | None = None,
        language_decoders: Mapping[str, Decoder] | None = None,
    ) -> None:
        self.loaded = loaded
        self.decoder = decoder  # the checkpoint's alphabet and LM for beam search, if it ships one
        # Language adapters: each language's own (build.py finds them), where it has one.
        self.language_decoders = dict(language_decoders or {})
        self.name = loaded.name
        self.task = loaded.task
        step = loaded.config.samples_per_frame
        rate = loaded.sampling_rate
        # Windows and strides in whole frames, so every window's frames line up with the clip's.
        self.step = step
        self.chunk = max(step * 4, round(chunk_seconds * rate / step) * step)
        self.stride = min(
            round(stride_seconds * rate / step) * step, (self.chunk // 2 // step - 1) * step
        )

    @property
    def sampling_rate(self) -> int:
        return self.loaded.sampling_rate

    @property
    def min_samples(self) -> int:
        return self.loaded.min_samples

    def run_batch(
        self,
        clips: list[np.ndarray],
        languages: Sequence[str | None] = (),
        resume: Sequence[Resume | None] = (),
    ) -> list[np.ndarray]:
        """The model package's batch forward (LoadedModel.forward), languages mixed freely."""
        return self.loaded.forward(clips, languages, resume)

    def run_clips(self, clips: list[Clip]) -> list[np.ndarray]:
        """What the batcher calls."""
        return self.run_batch(
            [c.samples for c in clips], [c.language for c in clips], [c.resume for c in clips]
        )

    @property
    def languages(self) -> list[str]:
        """The language codes served, the default first; [] without language adapters."""
        served = self.loaded.languages
        if served is None:
            return []
        return [served.default, *(c for c in served.codes if c != served.default)]

    def tokenizer(self, language: str | None = None) -> CTCTokenizer:
        """The vocabulary of `language` (a served code; None: the default)."""
        served = self.loaded.languages
        if served is not None and language is not None:
            return served.tokenizers[language]
        assert self.loaded.tokenizer is not None, "a transcription model has a tokenizer"
        return self.loaded.tokenizer

    def warmup(self) -> None:
        """One small mixed batch: allocates buffers and picks kernels before the first request."""
        n = max(self.min_samples, self.sampling_rate)
        self.run_batch([np.zeros(n, np.float32) + 1e-3, np.zeros(2 * n, np.float32) + 1e-3])

    def plan(self, samples: np.ndarray) -> list[Window]:
        """Cuts a clip into model windows; one window when it fits in chunk_seconds."""
        if self.task in FRAME_TASKS:
            return frame_windows(samples, self.chunk, self.stride, self.step, self.sampling_rate)
        return pooled_windows(len(samples), self.chunk, self.step)

    def stitch(self, windows: list[Window], outputs: list[np.ndarray]) -> np.ndarray:
        """Frame-task window outputs -> the clip's (frames, width) output, frame-exactly."""
        return np.concatenate([o[w.keep_from : w.keep_to] for w, o in zip(windows, outputs)])

    def finish(
        self,
        windows: list[Window],
        outputs: list[np.ndarray],
        duration: float,
        options: Options = DEFAULT_OPTIONS,
    ) -> Prediction:
        """Window outputs -> the clip's Prediction."""
        loaded, config = self.loaded, self.loaded.config
        base = dict(model=self.name, task=self.task, duration=round(duration, 6))
        if self.task in FRAME_TASKS:
            frames = self.stitch(windows, outputs)
            if self.task == "transcribe":
                frames = self.pauses_between_words(windows, frames, options.language)
                text, words = self.transcript(frames, options)
                language = options.language or next(iter(self.languages), None)
                return Prediction(**base, text=text, words=words, language=language)
            segments = decode.segments(frames, config.id2label, loaded.frame_seconds)
            return Prediction(**base, segments=segments)
        weights = np.array([w.end - w.start for w in windows], np.float64)
        pooled = (np.stack(outputs) * (weights / weights.sum())[:, None]).sum(axis=0)
        if self.task == "classify":
            return Prediction(**base, labels=decode.labels(pooled, config.id2label, options.top_k))
        return Prediction(**base, embedding=[float(v) for v in pooled.astype(np.float32)])

    def pauses_between_words(
        self, windows: list[Window], frames: np.ndarray, language: str | None
    ) -> np.ndarray:
        """Stitched logits with the word delimiter, certain, on each frame cut in a pause. The
        windows either side each heard their speech end in silence, where a model writes no
        delimiter (it writes one between words): left alone, the word before a pause and the
        word after it would be decoded as one."""
        cuts = [c for w in windows if w.pause and (c := w.cut(self.step)) is not None]
        tokenizer = self.tokenizer(language)
        delimiter = tokenizer.token_id(tokenizer.word_delimiter_token)
        blank = tokenizer.token_id(tokenizer.pad_token)
        if not cuts or delimiter is None:
            return frames
        # Only between two spoken tokens, neither of them a delimiter already (a second one
        # would make a double space).
        ids = frames.argmax(axis=-1)
        spoken = np.flatnonzero(ids != blank)
        cuts = [
            c
            for c, k in zip(cuts, np.searchsorted(spoken, cuts))
            if 0 < k < len(spoken) and delimiter not in (ids[spoken[k - 1]], ids[spoken[k]])
        ]
        if not cuts:
            return frames
        low, high = float(frames.min()), float(frames.max())
        frames = frames.copy()
        frames[cuts] = low - 100.0
        frames[cuts, delimiter] = high + 100.0
        return frames

    def decoder_for(self, language: str | None) -> Decoder | None:
        """The beam decoder of `language` (a served code; None: the default language's)."""
        if self.loaded.languages is None or language is None:
            return self.decoder
        return self.language_decoders.get(language)

    def decoder_kind(self, options: Options = DEFAULT_OPTIONS) -> str:
        """greedy or beam, for a transcription request with these options."""
        return decoder_kind(options, self.decoder_for(options.language))

    def transcript(self, frames: np.ndarray, options: Options) -> tuple[str, list[Word]]:
        """One clip's (T, vocab) logits -> text and words, greedy or with the beam."""
        tokenizer, seconds = self.tokenizer(options.language), self.loaded.frame_seconds
        if self.decoder_kind(options) == BEAM:
            decoder = self.decoder_for(options.language)
            return beam_transcript(frames, tokenizer, decoder, beam_options(options), seconds)
        return decode.transcript(frames, tokenizer, seconds)

    def forward_clips(
        self,
        clips: Sequence[np.ndarray],
        languages: Sequence[str | None],
        max_batch_samples: int,
        max_batch_size: int | None,
    ) -> list[tuple[list[Window], list[np.ndarray]]]:
        """Clips without a queue (the CLI): each clip's plan and window outputs (in its
        language), windows of similar length sharing forward passes within the batch limits,
        whatever their clips' languages."""
        plans = [self.plan(c) for c in clips]
        jobs = [(i, w) for i, plan in enumerate(plans) for w in plan]
        windows = [clips[i][w.start : w.end] for i, w in jobs]
        window_languages = [languages[i] for i, _ in jobs]
        outputs: list[np.ndarray] = [np.zeros(0)] * len(windows)
        for batch in fill_batches([len(x) for x in windows], max_batch_samples, max_batch_size):
            done = self.run_batch([windows[j] for j in batch], [window_languages[j] for j in batch])
            for j, out in zip(batch, done):
                outputs[j] = out
        per_clip, pos = [], 0
        for plan in plans:
            per_clip.append((plan, outputs[pos : pos + len(plan)]))
            pos += len(plan)
        return per_clip

    def predict(
        self, samples: np.ndarray, duration: float, options: Options = DEFAULT_OPTIONS
    ) -> Prediction:
        """One clip, no queue, its windows in one forward pass."""
        everything = len(samples) * 2 + self.chunk  # over the windows' total, overlaps included
        ((windows, outputs),) = self.forward_clips([samples], [options.language], everything, None)
        return self.finish(windows, outputs, duration, options)
