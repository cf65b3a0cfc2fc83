"""Admission by expected wait: pure rules, the throughput measurement and the runtime's hook."""

from __future__ import annotations

import pytest

from service.admission import Estimate, Throughput, admit, estimate
from service.errors import OverloadedError, TooLargeError


def test_throughput_is_a_smoothed_mean_of_measured_batches():
    t = Throughput(smoothing=0.5)
    assert t.rate is None
    t.observe(10.0, 1.0)  # 10 audio seconds in 1 s of compute
    assert t.rate == 10.0
    t.observe(20.0, 1.0)
    assert t.rate == pytest.approx(15.0)
    t.observe(0.0, 1.0)  # an empty batch says nothing about speed
    t.observe(5.0, 0.0)
    assert t.rate == pytest.approx(15.0)


def test_estimate_divides_the_backlog_and_the_work_by_the_throughput():
    t = Throughput()
    assert estimate(100.0, 10.0, t) is None  # nothing measured yet: no estimate
    t.observe(20.0, 1.0)
    assert estimate(100.0, 10.0, t) == Estimate(wait=5.0, work=0.5)


def test_unmeasured_and_short_waits_are_admitted():
    admit(None, max_queue_time=1.0, deadline=10.0)
    admit(Estimate(wait=0.9, work=2.0), max_queue_time=1.0, deadline=10.0)


def test_a_wait_over_the_maximum_is_429_with_retry_after_from_the_queue():
    with pytest.raises(OverloadedError) as err:
        admit(Estimate(wait=7.2, work=0.5), max_queue_time=2.0, deadline=120.0)
    assert err.value.status == 429
    assert err.value.retry_after == 6  # ceil(7.2 - 2.0): when the queue is short enough


def test_a_request_that_would_miss_its_deadline_is_not_admitted():
    # 5 s of wait is within max_queue_time, but 5 + 8 s of work misses a 10 s deadline.
    with pytest.raises(OverloadedError) as err:
        admit(Estimate(wait=5.0, work=8.0), max_queue_time=30.0, deadline=10.0)
    assert err.value.retry_after == 3
    # Work longer than the deadline on an idle server: retrying cannot help, 413.
    with pytest.raises(TooLargeError) as err2:
        admit(Estimate(wait=0.0, work=11.0), max_queue_time=30.0, deadline=10.0)
    assert err2.value.status == 413 and err2.value.code == "audio_too_long"


async def test_the_runtime_measures_throughput_and_admits_by_it(checkpoints):
    from tests.api.helpers import serve, settings_for, wav
    from tests.checkpoints import speech_like

    raw = {"content-type": "audio/wav"}
    async with serve(settings_for(checkpoints, ["asr"], request_timeout=30.0)) as s:
        runtime = s.runtime("asr")
        r = await s.client.post("/v1/transcribe", content=wav(speech_like(1.0)), headers=raw)
        assert r.status_code == 200
        assert runtime.throughput.rate is not None and runtime.throughput.rate > 0
        runtime.throughput.rate = 1 / 60  # a minute of compute per audio second: 1 s > 30 s
        r = await s.client.post("/v1/transcribe", content=wav(speech_like(1.0)), headers=raw)
        assert r.status_code == 413 and r.json()["error"]["code"] == "audio_too_long"
        runtime.throughput.rate = 1e6
        r = await s.client.post("/v1/transcribe", content=wav(speech_like(1.0)), headers=raw)
        assert r.status_code == 200
