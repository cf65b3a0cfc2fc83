"""Print pyproject.toml's runtime dependencies, one per line, minus torch (the base image's).

Used by the Dockerfile so the dependency layer is built from pyproject.toml alone and pip never
replaces the CUDA build of torch that the base image ships.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

# Provided by the base image; reinstalling them from PyPI would pull a different CUDA build.
BASE_IMAGE_PACKAGES = {"torch"}


def requirement_name(requirement: str) -> str:
    """The normalized distribution name of a PEP 508 requirement string."""
    name = re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(pyproject: Path) -> list[str]:
    """project.dependencies of pyproject, without the packages the base image provides."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [r for r in dependencies if requirement_name(r) not in BASE_IMAGE_PACKAGES]


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
    print("\n".join(runtime_requirements(path)))
