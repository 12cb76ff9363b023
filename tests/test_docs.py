"""The documentation: the MkDocs site builds without a warning, and the README stays a front page."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
README_MAX_BYTES = 12_000


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice about MkDocs 2.0, not a build warning
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stdout}\n{res.stderr}"
    assert (site / "index.html").is_file()
    api = site / "api" / "index.html"
    assert api.is_file(), sorted(p.name for p in site.iterdir())
    html = api.read_text(encoding="utf-8")
    assert 'id="napari_pix2pix.denoise"' in html, "the API page documents no napari_pix2pix.denoise"


def test_readme_is_a_front_page_with_the_test_command():
    readme = ROOT / "README.md"
    size = readme.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; at most {README_MAX_BYTES} (move text to docs/)"
    text = readme.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line.strip() for line in ci.splitlines() if "pytest" in line and not line.lstrip().startswith("#")]
    assert commands, ".ci/run has no pytest command"
    for command in commands:
        assert command in text, f"the README lacks CI's test command {command!r}"
    assert "bash scripts/setup.sh" in text and "pytest" in text
