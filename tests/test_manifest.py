"""`npe2 validate napari-pix2pix`, as the napari hub runs it."""

import shutil
import subprocess
import sys
from pathlib import Path


def test_npe2_validate():
    npe2 = shutil.which("npe2") or str(Path(sys.executable).parent / "npe2")
    assert Path(npe2).exists(), "the npe2 command is missing: npe2 is a dependency"
    res = subprocess.run([npe2, "validate", "napari-pix2pix"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in (res.stdout + res.stderr).lower()
