"""Every Prometheus metric of the service, defined once, prefix w2v_, explicit buckets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.admission import Throughput
from service.batcher import BatchObserver

PREFIX = "w2v_"
REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Greedy decoding takes well under a millisecond, a beam search tens of milliseconds.
_DECODE = (0.0005, 0.001, 0.0025, *_LATENCY)
_BATCH = (1, 2, 4, 8, 16, 32, 64)

REQUESTS = Counter(
    PREFIX + "requests_total",
    "Requests by endpoint and status",
    ["endpoint", "status"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    PREFIX + "request_duration_seconds",
    "Total request time",
    ["endpoint"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
QUEUE_DURATION = Histogram(
    PREFIX + "queue_duration_seconds",
    "Time from enqueue to batch start",
    ["model"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
INFERENCE_DURATION = Histogram(
    PREFIX + "inference_duration_seconds",
    "Forward pass time per batch",
    ["model"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
DECODE_DURATION = Histogram(
    PREFIX + "decode_duration_seconds",
    "Time to decode one transcript from its logits, by decoder (greedy or beam)",
    ["model", "decoder"],
    buckets=_DECODE,
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    PREFIX + "batch_size",
    "Clips per forward pass",
    ["model"],
    buckets=_BATCH,
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    PREFIX + "queue_depth",
    "Requests waiting in the batching queue",
    ["model"],
    registry=REGISTRY,
)
INFLIGHT_AUDIO = Gauge(
    PREFIX + "inflight_audio_seconds",
    "Seconds of audio queued or running",
    ["model"],
    registry=REGISTRY,
)
AUDIO_SECONDS = Counter(
    PREFIX + "audio_seconds_total",
    "Seconds of audio processed",
    ["model"],
    registry=REGISTRY,
)
BATCH_FAILURES = Counter(
    PREFIX + "batch_failures_total",
    "Batches that raised, by error kind",
    ["model", "kind"],
    registry=REGISTRY,
)
ACTIVE_STREAMS = Gauge(PREFIX + "active_streams", "Open WebSocket streams", registry=REGISTRY)
STREAM_LATENCY = Histogram(
    PREFIX + "stream_emit_latency_seconds",
    "Time from audio received to the partial/final that covers it",
    ["kind"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
READY = Gauge(PREFIX + "ready", "1 when the server accepts requests", registry=REGISTRY)

# The metric names an autoscaler may use (deploy/ tests check against this list).
AUTOSCALING_METRICS = (PREFIX + "queue_depth", PREFIX + "inflight_audio_seconds")


class BatchMetrics(BatchObserver):
    """Feeds one model's batcher events into the w2v_ metrics, labelled by model, and each
    finished batch's audio seconds per second into admission's throughput estimate."""

    def __init__(self, model: str, sampling_rate: int, throughput: Throughput) -> None:
        self.model = model
        self.rate = sampling_rate
        self.throughput = throughput
        self._batch_cost = 0
        # Export the autoscaling gauges from the start: an HPA needs every pod's series.
        self.queue_changed(0, 0)

    def queue_changed(self, depth: int, inflight_cost: int) -> None:
        QUEUE_DEPTH.labels(self.model).set(depth)
        INFLIGHT_AUDIO.labels(self.model).set(inflight_cost / self.rate)

    def batch_started(self, size: int, padded_cost: int, queue_times: list[float]) -> None:
        BATCH_SIZE.labels(self.model).observe(size)
        self._batch_cost = padded_cost
        for t in queue_times:
            QUEUE_DURATION.labels(self.model).observe(t)

    def batch_finished(self, size: int, seconds: float, error: BaseException | None) -> None:
        INFERENCE_DURATION.labels(self.model).observe(seconds)
        if error is None:
            self.throughput.observe(self._batch_cost / self.rate, seconds)
        else:
            BATCH_FAILURES.labels(self.model, type(error).__name__).inc()
