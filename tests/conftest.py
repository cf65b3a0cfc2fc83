import os
import shutil
from pathlib import Path

import pytest

from tests.checkpoints import make_checkpoint

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(name: str) -> str:
    """The path of a command-line tool; a missing tool skips locally and fails in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """variant name -> path, created on first use and shared by the whole session."""
    root = tmp_path_factory.mktemp("checkpoints")
    cache: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in cache:
            cache[variant] = make_checkpoint(root, variant)
        return cache[variant]

    return get
