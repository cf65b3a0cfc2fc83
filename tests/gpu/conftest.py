"""The GPU set: `pytest -m gpu`. Every test here is marked gpu and skipped where torch sees no
CUDA device, in CI too (CI machines without a GPU must not fail on it); with a device, a
failure is a failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(skip)


@pytest.fixture(scope="session")
def models(checkpoints, tmp_path_factory):
    """name -> checkpoint path: the tiny variants of tests/checkpoints.py, and "base", a random
    checkpoint of wav2vec2-base's shape (12 x 768, group norm; benchmarks/_common.py)."""
    base: list[Path] = []

    def get(name: str) -> Path:
        if name != "base":
            return checkpoints(name)
        if not base:
            from benchmarks._common import save_checkpoint

            base.append(save_checkpoint(tmp_path_factory.mktemp("gpu") / "base", "base"))
        return base[0]

    return get
