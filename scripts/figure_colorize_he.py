"""Figure for the README: the bundled H&E colorizer on real, held-out H&E sections.

Rows: crops of the stardist and tiatoolbox H&E images (BSD-3-Clause packages; see
benchmarks/EVAL_DATA.md), never seen in training. Columns: the gray input (luminance),
``colorize-he``, the general ``colorize``, the true colours.

Usage: python scripts/figure_colorize_he.py /tmp/p2p-evaldata [docs/images/colorize_he.jpg]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import eval_data  # noqa: E402

import napari_pix2pix as p2p  # noqa: E402


def main() -> int:
    data = sys.argv[1] if len(sys.argv) > 1 else "/tmp/p2p-evaldata"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "images" / "colorize_he.jpg"
    images = eval_data.load(data, 320)
    rows = []
    for name in ("histo/stardist_he", "histo/tiatoolbox_he"):
        rgb = images[name][:256, :256]
        gray = eval_data.luminance(rgb)
        cols = [np.repeat(gray[..., None], 3, -1), p2p.colorize(gray, model="colorize-he"),
                p2p.colorize(gray, model="colorize"), rgb]
        rows.append(np.concatenate([np.pad(np.clip(c, 0, 1), ((4, 4), (4, 4), (0, 0)), constant_values=1)
                                    for c in cols], 1))
    fig = (np.concatenate(rows, 0) * 255 + 0.5).astype(np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(fig).save(out, quality=88, optimize=True)
    print(f"wrote {out} {fig.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
