"""One served model: what the routes and the CLI see of it (service/build.py builds it).

A `ServedModel` has a name, task, sampling rate, minimum length and card, answers `predict`
(one clip through the shared batcher, windows and all), `predict_now` (clips without a queue,
for the CLI), `align`/`align_now` (a transcript force-aligned on the same emissions) and
`open_stream` (a live stream in the priority lane, its audio counted). Nothing
outside it touches the engine, the batcher or the loaded model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service import metrics
from service.admission import Deadline, Throughput, admit, estimate
from service.align import align
from service.align import wire as align_wire
from service.audio import Audio, PcmDecoder
from service.batcher import DEFAULT_PRIORITY, STREAM_PRIORITY, Batcher, Timed
from service.decoding import BEAM, DecodePool, beam_options, timed
from service.engine import DEFAULT_OPTIONS, Clip, Engine
from service.errors import BadFieldError, ServiceError, UnavailableError
from service.language_choice import LanguageChoice, after
from service.languages import AUTO, unsupported
from service.lm import Decoder, beam_decode
from service.schemas import ModelCard, Options, Prediction
from service.settings import Settings
from service.streaming import LiveStream, Stream, windowing_for
from service.wav2vec2.loading import LoadedModel
from service.wav2vec2.resume import FrontEndCache
from service.wav2vec2.tokenizer import Decoded
from service.windows import Window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimedPrediction(Timed[Prediction]):
    """A Prediction with its queue and inference seconds, and the seconds its decoding took."""

    decode_time: float = 0.0


class ServedModel:
    """One model as the routes and the CLI see it."""

    def __init__(
        self,
        loaded: LoadedModel,
        settings: Settings,
        decoder: Decoder | None = None,
        language_decoders: Mapping[str, Decoder] | None = None,
        identifier: ServedModel | None = None,
    ) -> None:
        self._loaded = loaded
        self._settings = settings
        self.name = loaded.name
        self.task = loaded.task
        self.sampling_rate = loaded.sampling_rate
        self.min_samples = loaded.min_samples
        self.verify_threshold = loaded.verify_threshold()
        chunk, stride = settings.chunk_seconds, settings.stride_seconds
        if not {"chunk_seconds", "stride_seconds"} & settings.model_fields_set:
            chunk, stride = loaded.window_seconds() or (chunk, stride)  # the checkpoint's, if any
        self._engine = Engine(loaded, chunk, stride, decoder, language_decoders)
        self._decoding = DecodePool(settings.beam_workers, f"decode-{self.name}")
        # Measured per batch; admission turns queued audio into an expected wait with it.
        self.throughput = Throughput()
        self._deadline = Deadline(
            settings.request_timeout, settings.request_timeout_margin, settings.max_request_timeout
        )
        # Fault-injection tests wrap _batcher.run_batch; nothing outside this class reaches in.
        self._batcher: Batcher[Clip, np.ndarray] = Batcher(
            run_batch=self._engine.run_clips,
            max_batch_size=settings.max_batch_size,
            max_batch_cost=settings.max_batch_samples,
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            name=self.name,
            observer=metrics.BatchMetrics(self.name, self.sampling_rate, self.throughput),
        )
        # The Viterbi runs here, not on the event loop nor in its default executor (which
        # decodes uploads): an hour of audio takes about a minute of one core.
        self._aligner: ThreadPoolExecutor | None = None
        # language "auto": a classifier over language codes (settings.lid_model), started,
        # warmed up and stopped with this model.
        self.identifier = identifier
        self._choice = LanguageChoice(self.name, self._engine.languages, identifier)

    @property
    def attention(self) -> str:
        """The attention kernel the model runs (eager, sdpa, flash)."""
        return str(self._loaded.model.backbone.attention_kind)

    @property
    def windows(self) -> tuple[float, float]:
        """Long audio's window and the context kept each side of it, in seconds."""
        return self._engine.chunk / self.sampling_rate, self._engine.stride / self.sampling_rate

    def card(self) -> ModelCard:
        loaded = self._loaded
        # An XVector's id2label names the rows of its training objective, not outputs.
        labels = (
            None if self.task in ("transcribe", "embed") else list(loaded.config.id2label.values())
        )
        return ModelCard(
            id=self.name,
            task=self.task,  # type: ignore[arg-type]
            architecture=loaded.config.architecture,
            sampling_rate=self.sampling_rate,
            labels=labels,
            device=str(loaded.device),
            dtype=loaded.dtype_name,
            attention=self.attention,
            decoder=self.default_decoder if self.task == "transcribe" else None,
            languages=self.languages or None,
            language_identifier=self.identifier.name if self.identifier else None,
        )

    @property
    def languages(self) -> list[str]:
        """The language codes a request may pick, the default first ([]: one language)."""
        return self._engine.languages

    def language(self, requested: str | None) -> str | None:
        """A request's `language` -> a served code, AUTO or None (LanguageChoice.resolve)."""
        return self._choice.resolve(requested)

    @property
    def default_decoder(self) -> str:
        """What a transcription gets by default: beam+lm where the model ships an LM."""
        kind = self._engine.decoder_kind()
        decoder = self._engine.decoder_for(next(iter(self.languages), None))
        has_lm = decoder is not None and decoder.lm is not None
        return f"{kind}+lm" if kind == BEAM and has_lm else kind

    # ---- lifecycle ----

    def warmup(self) -> None:
        self._engine.warmup()
        if self.identifier is not None:
            self.identifier.warmup()

    def start(self) -> None:
        """Start the batcher on the running loop (and the alignment threads, as needed)."""
        self._batcher.start()
        if self.identifier is not None:
            self.identifier.start()
        self._aligner = ThreadPoolExecutor(
            self._settings.align_workers, thread_name_prefix=f"{self.name}-align"
        )

    async def stop(self, drain_timeout: float) -> None:
        await self._batcher.stop(drain_timeout)
        if self.identifier is not None:
            await self.identifier.stop(drain_timeout)
        if self._aligner is not None:
            self._aligner.shutdown(wait=False, cancel_futures=True)
            self._aligner = None
        self._decoding.shutdown()

    # ---- requests ----

    async def predict(
        self,
        samples: np.ndarray,
        duration: float,
        options: Options = DEFAULT_OPTIONS,
        *,
        priority: int = DEFAULT_PRIORITY,
    ) -> TimedPrediction:
        """Windows of one clip through the shared batcher, then one Prediction (a beam search
        in the decode pool)."""
        options, found = await self._choice.choose(samples, duration, options, priority)
        plan, forward = await self._forward(samples, priority, options.language)
        outputs = forward.result
        if self._beam(options):
            prediction, seconds = await self._decoding.run(
                self._engine.finish, plan, outputs, duration, options
            )
        else:
            prediction, seconds = timed(self._engine.finish, (plan, outputs, duration, options))
        self._observe_decode(options, seconds)
        metrics.AUDIO_SECONDS.labels(self.name).inc(duration)
        if found is not None:
            prediction = prediction.model_copy(update={"language_score": found.result[1]})
            forward = after(found, forward)
        return TimedPrediction(prediction, forward.queue_time, forward.inference_time, seconds)

    async def align(
        self,
        samples: np.ndarray,
        duration: float,
        text: str,
        options: Options = DEFAULT_OPTIONS,
        *,
        priority: int = DEFAULT_PRIORITY,
    ) -> Timed[Prediction]:
        """The clip's emissions from the shared batcher (windowed and stitched as for
        transcription), then `text` force-aligned on them in an alignment thread; the
        Viterbi's seconds count as inference time."""
        self.check_aligns()
        options, found = await self._choice.choose(samples, duration, options, priority)
        plan, outputs = await self._forward(samples, priority, options.language)
        frames = self._engine.stitch(plan, outputs.result)
        if found is not None:
            outputs = after(found, outputs)
        if self._aligner is None:
            raise UnavailableError("the model is not accepting requests", retry_after=1.0)
        # Cancelled while it waits for a thread (the client went away), it never runs; once
        # running it finishes and its answer is dropped.
        prediction, seconds = await asyncio.get_running_loop().run_in_executor(
            self._aligner, self._timed_alignment, frames, text, duration, options
        )
        metrics.AUDIO_SECONDS.labels(self.name).inc(duration)
        if found is not None:
            prediction = prediction.model_copy(update={"language_score": found.result[1]})
        return Timed(prediction, outputs.queue_time, outputs.inference_time + seconds)

    async def _forward(
        self, samples: np.ndarray, priority: int, language: str | None
    ) -> tuple[list[Window], Timed[list[np.ndarray]]]:
        """One clip's windows through the shared batcher: the plan and the windows' outputs."""
        # A long clip's plan reads its energy (60 ms an hour): off the event loop, while a
        # short clip's, one window, waits for no thread.
        long = len(samples) > self._engine.chunk
        plan = (
            await asyncio.to_thread(self._engine.plan, samples)
            if long
            else self._engine.plan(samples)
        )
        rate = self.sampling_rate
        work = sum(w.end - w.start for w in plan) / rate
        est = estimate(self._batcher.inflight_cost / rate, work, self.throughput)
        deadline = self._deadline.seconds(est)
        admit(est, self._settings.max_queue_time, deadline)
        windows = [
            asyncio.ensure_future(
                self._batcher.submit_timed(
                    Clip(samples[w.start : w.end], language),
                    w.end - w.start,
                    priority=priority,
                    timeout=deadline,
                )
            )
            for w in plan
        ]
        try:
            timed = await asyncio.gather(*windows)
        except BaseException:
            # One window refused (queue full) or failed: the clip has no answer, so its other
            # windows are dropped before they cost a forward pass.
            for w in windows:
                w.cancel()
            raise
        # Windows were queued together: queue = until the first started, inference = the rest.
        first = min(t.queue_time for t in timed)
        last = max(t.queue_time + t.inference_time for t in timed)
        return plan, Timed([t.result for t in timed], first, last - first)

    def _beam(self, options: Options) -> bool:
        return self.task == "transcribe" and self._engine.decoder_kind(options) == BEAM

    def _observe_decode(self, options: Options, seconds: float) -> None:
        if self.task == "transcribe":
            kind = self._engine.decoder_kind(options)
            metrics.DECODE_DURATION.labels(self.name, kind).observe(seconds)

    def predict_now(
        self, clips: Sequence[Audio], options: Options = DEFAULT_OPTIONS
    ) -> list[Prediction]:
        """Clips without the queue (the CLI): windows of similar length share forward passes
        within the batch limits; results in input order."""
        chosen = self._choice.choose_now(clips, options)
        predictions = []
        for audio, (opts, score), (plan, outputs) in zip(
            clips, chosen, self._forward_now(clips, [o.language for o, _ in chosen])
        ):
            prediction, seconds = timed(self._engine.finish, (plan, outputs, audio.duration, opts))
            self._observe_decode(opts, seconds)
            predictions.append(prediction.model_copy(update={"language_score": score}))
        return predictions

    def align_now(
        self, clips: Sequence[Audio], texts: Sequence[str], options: Options = DEFAULT_OPTIONS
    ) -> list[Prediction | ServiceError]:
        """Each clip's `texts` entry aligned on its emissions, without the queue (the CLI);
        a text that cannot be aligned gives its error in its place."""
        self.check_aligns()
        chosen = self._choice.choose_now(clips, options)
        forwards = self._forward_now(clips, [o.language for o, _ in chosen])
        results: list[Prediction | ServiceError] = []
        for audio, text, (opts, score), (plan, outputs) in zip(clips, texts, chosen, forwards):
            try:
                frames = self._engine.stitch(plan, outputs)
                aligned = self._alignment(frames, text, audio.duration, opts)
                results.append(aligned.model_copy(update={"language_score": score}))
            except ServiceError as exc:
                results.append(exc)
        return results

    def _forward_now(
        self, clips: Sequence[Audio], languages: Sequence[str | None]
    ) -> list[tuple[list[Window], list[np.ndarray]]]:
        s = self._settings
        samples = [a.samples for a in clips]
        return self._engine.forward_clips(samples, languages, s.max_batch_samples, s.max_batch_size)

    # ---- forced alignment ----

    @property
    def aligns(self) -> bool:
        """Whether the model can force-align a transcript: a CTC head with its vocabulary."""
        return self.task == "transcribe" and self._loaded.tokenizer is not None

    def check_aligns(self) -> None:
        if not self.aligns:
            raise BadFieldError(
                f"model {self.name!r} does {self.task}: alignment needs a CTC (transcription) "
                "model",
                code="wrong_task",
            )

    def _alignment(
        self, frames: np.ndarray, text: str, duration: float, options: Options
    ) -> Prediction:
        """A clip's stitched (frames, vocab) logits and its transcript -> the align Prediction."""
        tokenizer = self._engine.tokenizer(options.language)
        result = align(frames, text, tokenizer, star=options.star)
        return Prediction(
            model=self.name,
            task="align",
            duration=round(duration, 6),
            language=options.language,
            **align_wire.fields(result, self._loaded.frame_seconds, options.granularity),
        )

    def _timed_alignment(
        self, frames: np.ndarray, text: str, duration: float, options: Options
    ) -> tuple[Prediction, float]:
        return timed(self._alignment, (frames, text, duration, options))

    def open_stream(
        self,
        encoding: str,
        sample_rate: int,
        interim: bool = True,
        options: Options = DEFAULT_OPTIONS,
    ) -> LiveStream:
        """A live transcription stream: raw PCM in, partials and finals out. Its windows run
        in the stream lane (ahead of REST clips) and its audio counts as processed audio.
        Finals are decoded as `options` ask (a beam search in the decode pool); partials stay
        greedy, they are replaced within a second anyway."""
        if self.task != "transcribe" or self._loaded.tokenizer is None:
            raise ServiceError(f"{self.name!r} does not transcribe", code="wrong_task", status=422)
        language = self.language(options.language)
        if language == AUTO:  # the identifier wants the whole clip; a stream has none yet
            raise unsupported(
                "language 'auto' is not available on a stream", self.languages, self.name
            )
        tokenizer = self._engine.tokenizer(language)
        options = options.model_copy(update={"language": language})
        decoder = self._engine.decoder_for(language)
        s = self._settings
        windowing = windowing_for(
            self._loaded,
            chunk=s.stream_chunk_seconds,
            left=s.stream_left_context_seconds,
            lookahead=s.stream_lookahead_seconds,
            pause=s.stream_pause_seconds,
            max_segment=s.stream_max_segment_seconds,
            parallel=s.stream_parallel_windows,
        )
        pcm = PcmDecoder(encoding, sample_rate, self.sampling_rate)
        cache = FrontEndCache() if self._loaded.front_end_reusable else None

        async def infer(window: np.ndarray, start: int) -> np.ndarray:
            return await self._batcher.submit(
                Clip(window, language, None if cache is None else (start, cache)),
                len(window),
                priority=STREAM_PRIORITY,
                timeout=s.request_timeout,
            )

        beam = beam_options(options)

        async def decode_final(logits: np.ndarray) -> Decoded:
            decoded, seconds = await self._decoding.run(
                beam_decode, logits, tokenizer, decoder, beam
            )
            metrics.DECODE_DURATION.labels(self.name, BEAM).observe(seconds)
            return decoded

        stream = Stream(
            windowing,
            tokenizer,
            self._loaded.frame_seconds,
            infer,
            interim=interim,
            decode_final=decode_final if self._beam(options) else None,
        )
        return LiveStream(stream, pcm, metrics.AUDIO_SECONDS.labels(self.name).inc)
