"""One served model: its engine, its batcher, and the request-level predict that uses both."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from service import metrics
from service.admission import Throughput, admit, estimate
from service.batcher import DEFAULT_PRIORITY, Batcher, BatchObserver
from service.engine import Engine
from service.schemas import ModelCard, Prediction
from service.settings import Settings


class PrometheusObserver(BatchObserver):
    """Feeds the batcher's events into the w2v_ metrics, labelled by model."""

    def __init__(self, model: str, sampling_rate: int, throughput: Throughput) -> None:
        self.model = model
        self.rate = sampling_rate
        self.throughput = throughput
        self._batch_cost = 0
        # Export the autoscaling gauges from the start: an HPA needs every pod's series.
        self.queue_changed(0, 0)

    def queue_changed(self, depth: int, inflight_cost: int) -> None:
        metrics.QUEUE_DEPTH.labels(self.model).set(depth)
        metrics.INFLIGHT_AUDIO.labels(self.model).set(inflight_cost / self.rate)

    def batch_started(self, size: int, padded_cost: int, queue_times: list[float]) -> None:
        metrics.BATCH_SIZE.labels(self.model).observe(size)
        self._batch_cost = padded_cost
        for t in queue_times:
            metrics.QUEUE_DURATION.labels(self.model).observe(t)

    def batch_finished(self, size: int, seconds: float, error: BaseException | None) -> None:
        metrics.INFERENCE_DURATION.labels(self.model).observe(seconds)
        if error is None:
            self.throughput.observe(self._batch_cost / self.rate, seconds)
        if error is not None:
            metrics.BATCH_FAILURES.labels(self.model, type(error).__name__).inc()


@dataclass
class Timings:
    queue: float = 0.0
    inference: float = 0.0


class ModelRuntime:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.name = engine.name
        self.settings = settings
        self.throughput = Throughput()
        self.batcher: Batcher[np.ndarray, np.ndarray] = Batcher(
            run_batch=engine.run_batch,
            max_batch_size=settings.max_batch_size,
            max_batch_cost=settings.max_batch_samples,
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            name=engine.name,
            observer=PrometheusObserver(engine.name, engine.sampling_rate, self.throughput),
        )

    async def predict(
        self,
        samples: np.ndarray,
        duration: float,
        *,
        top_k: int = 5,
        priority: int = DEFAULT_PRIORITY,
    ) -> tuple[Prediction, Timings]:
        """Windows of one clip through the shared batcher, then one Prediction."""
        plan = self.engine.plan(len(samples))
        rate = self.engine.sampling_rate
        work = sum(w.end - w.start for w in plan) / rate
        est = estimate(self.batcher.inflight_cost / rate, work, self.throughput)
        admit(est, self.settings.max_queue_time, self.settings.request_timeout)
        windows = [
            asyncio.ensure_future(
                self.batcher.submit_timed(
                    samples[w.start : w.end],
                    w.end - w.start,
                    priority=priority,
                    timeout=self.settings.request_timeout,
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
        prediction = self.engine.finish(plan, [t.result for t in timed], duration, top_k)
        metrics.AUDIO_SECONDS.labels(self.name).inc(duration)
        # Windows were queued together: queue = until the first started, inference = the rest.
        first = min(t.queue_time for t in timed)
        last = max(t.queue_time + t.inference_time for t in timed)
        return prediction, Timings(first, last - first)

    def card(self) -> ModelCard:
        loaded = self.engine.loaded
        labels = None if loaded.task == "transcribe" else list(loaded.config.id2label.values())
        return ModelCard(
            id=self.name,
            task=loaded.task,
            architecture=loaded.config.architecture,
            sampling_rate=loaded.sampling_rate,
            labels=labels,
            device=str(loaded.device),
            dtype=str(loaded.dtype).removeprefix("torch."),
            attention=loaded.model.wav2vec2.attention_kind,
        )
