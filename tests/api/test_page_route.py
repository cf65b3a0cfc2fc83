"""GET / and its static files in process: what the page needs is served, nothing from elsewhere,
and the OpenAPI spec lists the page as HTML (the browser test is tests/test_page.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from service.routes.page import FILES
from tests.api.helpers import Served, serve, settings_for

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(checkpoints) -> AsyncIterator[Served]:
    async with serve(settings_for(checkpoints, ["asr"])) as s:
        yield s


async def test_the_page_has_labelled_controls_for_a_file(served):
    r = await served.client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for control in ("file", "align-text"):
        assert f'<label for="{control}">' in r.text and f'id="{control}"' in r.text
    for button in ("transcribe", "align", "mic"):
        assert re.search(f'<button id="{button}" type="button"[^>]*>[^<]+</button>', r.text)
    assert 'id="wave"' in r.text and 'aria-label="waveform' in r.text


async def test_everything_the_page_loads_is_served_here(served):
    page = (await served.client.get("/")).text
    scripts = [(await served.client.get(f"/static/{name}")).text for name in FILES]
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page)
    loaded += [u for text in scripts for u in re.findall(r'(?:from|addModule\()\s*"([^"]+)"', text)]
    assert loaded and all(u.startswith("/static/") for u in loaded), loaded
    for url in loaded:
        r = await served.client.get(url)
        assert r.status_code == 200, url
    assert not any(re.search(r"https?://", text) for text in [page, *scripts])
    assert (await served.client.get("/static/index.html")).status_code == 404


async def test_openapi_lists_the_page_as_html_and_not_its_files(served):
    spec = (await served.client.get("/openapi.json")).json()
    assert "text/html" in spec["paths"]["/"]["get"]["responses"]["200"]["content"]
    assert not [p for p in spec["paths"] if p.startswith("/static")]
    assert "onset" in spec["paths"]["/v1/align"]["post"]["description"]
