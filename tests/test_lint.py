"""ruff (with numpy-style pydocstyle) and mypy on the package, as part of the test suite."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    assert Path(ruff).exists(), "ruff is not installed: the testing extra has it (pip install -e '.[testing]')"
    res = subprocess.run([ruff, "check", "src", "tests", "scripts", "benchmarks"], cwd=ROOT, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy():
    import mypy  # noqa: F401 - the testing extra has it: a missing package must fail CI
    res = subprocess.run([sys.executable, "-m", "mypy", "src/napari_pix2pix"], cwd=ROOT, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout + res.stderr
