"""service/decoding.py: which decoder a request gets, and the decode pool."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.decoding import DecodePool, beam_options, decoder_kind
from service.lm import BeamOptions, Decoder
from service.schemas import Options

WITH_LM = Decoder(["", " ", "A"], lm=object())  # type: ignore[arg-type]
NO_LM = Decoder(["", " ", "A"], lm=None)


@pytest.mark.parametrize(
    ("options", "decoder", "kind"),
    [
        (Options(), WITH_LM, "beam"),
        (Options(), NO_LM, "greedy"),
        (Options(), None, "greedy"),
        (Options(hotwords=("A",)), None, "beam"),  # hotwords only work in the beam
        (Options(decoder="greedy"), WITH_LM, "greedy"),
        (Options(decoder="beam"), None, "beam"),
    ],
)
def test_decoder_kind(options, decoder, kind):
    assert decoder_kind(options, decoder) == kind


def test_beam_options_keep_the_beams_defaults_for_unset_fields():
    assert beam_options(Options()) == BeamOptions()
    given = Options(beam_width=8, alpha=0.1, beta=0.0, hotwords=("X",), hotword_weight=3.0)
    assert beam_options(given) == BeamOptions(8, 0.1, 0.0, ("X",), 3.0)


async def test_the_pool_times_a_decode_off_the_loop():
    pool = DecodePool(1)
    loop_thread = threading.get_ident()
    (thread, value), seconds = await pool.run(lambda x: (threading.get_ident(), x * 2), 21)
    assert value == 42 and thread != loop_thread and seconds >= 0
    pool.shutdown()


async def test_a_cancelled_request_skips_its_queued_decode():
    pool = DecodePool(1)
    release, ran = threading.Event(), []
    busy = asyncio.ensure_future(pool.run(release.wait))
    await asyncio.sleep(0.05)  # the only worker is now blocked
    queued = asyncio.ensure_future(pool.run(ran.append, "decoded"))
    await asyncio.sleep(0.05)
    queued.cancel()  # the client went away before its decode started
    await asyncio.sleep(0)
    release.set()
    await busy
    await asyncio.sleep(0.05)
    assert queued.cancelled() and ran == []
    pool.shutdown()
