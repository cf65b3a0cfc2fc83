"""Schema-driven fuzzing (schemathesis) against a real server: no 5xx, and every status,
content type and body is the one the OpenAPI document declares (issue 20)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import served  # noqa: E402

pytestmark = pytest.mark.slow
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def base_url(checkpoints, tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    args = ["--model", f"asr={checkpoints('ctc-group')}", "--device", "cpu"]
    with served([*args, "--max-audio-seconds", "20"], log) as (base, proc):
        yield base


# schemathesis' pytest plugin (from_fixture) fails on this pytest; drive hypothesis directly.
def test_api_conforms_to_its_schema(base_url):
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=6, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def run(case) -> None:
            case.call_and_validate(checks=CHECKS, timeout=30)

        try:
            run()
        except Exception as exc:  # collect: one report for every operation that fails
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
