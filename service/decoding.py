"""The transcript stage: which decoder a request gets, and the pool that runs beam searches.

Greedy CTC is an argmax and runs inline. A beam search takes tens of milliseconds of pure
Python per clip, so it runs in a small thread pool of its own: never on the event loop, never
on the model worker, and a request that goes away before its search starts skips it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from service.lm import BeamLimits, BeamOptions, Decoder, check_options
from service.schemas import Options
from service.settings import Settings

T = TypeVar("T")
GREEDY, BEAM = "greedy", "beam"


def decoder_kind(options: Options, decoder: Decoder | None) -> str:
    """greedy or beam: as asked, else beam where the model ships an LM or hotwords are given."""
    if options.decoder is not None:
        return options.decoder
    has_lm = decoder is not None and decoder.lm is not None
    return BEAM if has_lm or options.hotwords else GREEDY


def beam_options(options: Options) -> BeamOptions:
    """The beam search's options from a request's (unset fields keep the beam's defaults)."""
    given = {
        name: getattr(options, name)
        for name in ("beam_width", "alpha", "beta", "hotword_weight")
        if getattr(options, name) is not None
    }
    return BeamOptions(hotwords=options.hotwords, **given)


def limits(settings: Settings) -> BeamLimits:
    return BeamLimits(
        max_beam_width=settings.max_beam_width,
        max_hotwords=settings.max_hotwords,
        max_hotword_chars=settings.max_hotword_chars,
    )


def check(options: Options, settings: Settings) -> Options:
    """The options, or a 422 with invalid_beam_width / too_many_hotwords / hotword_too_long.
    An unset beam_width gets the beam's default, capped at max_beam_width."""
    if options.beam_width is None and BeamOptions().beam_width > settings.max_beam_width:
        options = options.model_copy(update={"beam_width": settings.max_beam_width})
    check_options(beam_options(options), limits(settings))
    return options


class DecodePool:
    """A bounded pool of decode threads; `run` answers (result, seconds the decode ran)."""

    def __init__(self, workers: int, name: str = "decode") -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: object) -> tuple[T, float]:
        # Cancelling the awaiting task cancels the executor's future: a search that has not
        # started is skipped (one that has started runs to its end, its answer dropped).
        return await asyncio.get_running_loop().run_in_executor(self._executor, timed, fn, args)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def timed(fn: Callable[..., T], args: tuple[object, ...]) -> tuple[T, float]:
    """fn(*args) and the seconds it took (decode and alignment times are reported apart)."""
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started
