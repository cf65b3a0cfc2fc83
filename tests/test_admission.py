"""Admission by expected wait: pure rules, the throughput measurement and the runtime's hook."""

from __future__ import annotations

import pytest

from service.admission import Deadline, Estimate, Throughput, admit, estimate
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


def test_the_deadline_grows_with_the_expected_work_up_to_the_cap():
    d = Deadline(base=120.0, margin=2.0, cap=1000.0)
    assert d.seconds(None) == 1000.0  # nothing measured: the longest
    assert d.seconds(Estimate(wait=3.0, work=1.0)) == 122.0
    assert d.seconds(Estimate(wait=0.0, work=300.0)) == 720.0  # long audio: 10 min of work
    assert d.seconds(Estimate(wait=0.0, work=600.0)) == 1000.0
    # Work within the cap is admitted on an idle server; over it, 413.
    admit(Estimate(0.0, 900.0), max_queue_time=10.0, deadline=d.seconds(Estimate(0.0, 900.0)))
    with pytest.raises(TooLargeError):
        admit(Estimate(0.0, 1001.0), 10.0, d.seconds(Estimate(0.0, 1001.0)))


async def test_the_runtime_measures_throughput_and_admits_by_it(checkpoints):
    from tests.api.helpers import serve, settings_for, wav
    from tests.checkpoints import speech_like

    raw = {"content-type": "audio/wav"}
    settings = settings_for(checkpoints, ["asr"], request_timeout=30.0, max_request_timeout=100.0)
    async with serve(settings) as s:
        runtime = s.runtime("asr")
        submit = runtime._batcher.submit_timed
        timeouts: list[float] = []

        async def spy(*args, timeout=None, **kwargs):
            timeouts.append(timeout)
            return await submit(*args, timeout=timeout, **kwargs)

        runtime._batcher.submit_timed = spy
        r = await s.client.post("/v1/transcribe", content=wav(speech_like(1.0)), headers=raw)
        assert r.status_code == 200
        assert timeouts == [100.0]  # the first request, nothing measured: the cap
        assert runtime.throughput.rate is not None and runtime.throughput.rate > 0
        # 40 s of compute per audio second: the 1 s clip misses the 30 s base, but its
        # deadline grows with the work (30 + 2 x 40 = 110 s, capped at 100): admitted.
        runtime.throughput.rate = 1 / 40
        r = await s.client.post("/v1/transcribe", content=wav(speech_like(1.0)), headers=raw)
        assert r.status_code == 200 and timeouts[-1] == 100.0
        runtime.throughput.rate = 1 / 101  # over the cap even alone: 413 before any work
        r = await s.client.post("/v1/transcribe", content=wav(speech_like(1.0)), headers=raw)
        assert r.status_code == 413 and r.json()["error"]["code"] == "audio_too_long"
        assert len(timeouts) == 2
        runtime.throughput.rate = 100.0  # fast: 30 s plus twice a hundredth of a second
        r = await s.client.post("/v1/transcribe", content=wav(speech_like(1.0)), headers=raw)
        assert r.status_code == 200 and timeouts[-1] == pytest.approx(30.02, abs=1e-3)
