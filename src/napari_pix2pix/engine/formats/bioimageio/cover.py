"""The package's cover image."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def cover(image: np.ndarray, output: np.ndarray, path: Path) -> None:
    """Input | output side by side (2:1), each stretched to its 0.5-99.5 percentiles, as PNG."""
    from PIL import Image

    def to_rgb8(a: np.ndarray) -> np.ndarray:
        a = a[:3] if a.shape[0] >= 3 else np.repeat(a[:1], 3, axis=0)
        lo, hi = np.percentile(a, (0.5, 99.5))
        a = np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)
        return (np.moveaxis(a, 0, -1) * 255).astype(np.uint8)

    left, right = to_rgb8(image), to_rgb8(output)
    Image.fromarray(np.concatenate([left, right], axis=1)).save(path, format="PNG")
