"""The REST API end to end: the real app in process (httpx + ASGITransport, with its lifespan)
serving four tiny random checkpoints at once, one app per test module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.api.helpers import (
    MODELS,
    Served,
    serve,
    settings_for,
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(checkpoints) -> AsyncIterator[Served]:
    async with serve(settings_for(checkpoints, list(MODELS))) as s:
        yield s
