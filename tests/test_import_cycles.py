"""tools/import_cycles.py: finds cycles (package __init__ ones included) and the tree has none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "import_cycles.py"


def run(*args: str, root: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_project_has_no_import_cycle():
    done = run("service", "loadtest", "training", "benchmarks")
    assert done.returncode == 0, done.stdout
    assert ", 0 cycles" in done.stdout


def test_a_package_init_importing_a_module_that_imports_it_back_is_a_cycle(tmp_path):
    write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.report import markdown\n",
            "pkg/report.py": "from pkg import Clip\nmarkdown = 1\n",
            "pkg/clean.py": "import json\nfrom pkg.report import markdown\n",
        },
    )
    done = run("pkg", root=tmp_path)
    assert done.returncode == 1
    assert "cycle: pkg -> pkg.report -> pkg" in done.stdout


def test_lazy_and_relative_imports_count_type_checking_ones_do_not(tmp_path):
    write(
        tmp_path,
        {
            "a/__init__.py": "",
            "a/x.py": "def f():\n    from . import y\n",
            "a/y.py": "from .z import g\n",
            "a/z.py": "import a.x\ng = 1\n",
            "b/__init__.py": "",
            "b/p.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from b import q\n",
            "b/q.py": "from b.p import TYPE_CHECKING\n",
        },
    )
    done = run("a", "b", root=tmp_path)
    assert done.returncode == 1
    assert done.stdout.splitlines()[:-1] == ["cycle: a.x -> a.y -> a.z -> a.x"]
