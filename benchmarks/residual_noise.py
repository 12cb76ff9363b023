"""Calibration of the residual-against-noise check (``uncertainty.residual_report`` with a noise model).

On the real photon-counting images of ``benchmarks/real_noise.py`` and two synthetic ones, the
check is run on the bundled denoiser's result ("good"), that result blurred by 2 px ("blur2":
signal removed), half of it with half the input ("half": noise left) and the input itself. A good
result should pass (residual/noise near 1, little flagged), the others be flagged. Usage::

    python benchmarks/residual_noise.py [/tmp/p2p-realnoise]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import data as skd

import napari_pix2pix as p2p
from napari_pix2pix.engine.images import phantoms
from napari_pix2pix.engine.images.noise import estimate_noise
from napari_pix2pix.engine.predict.uncertainty import RATIO_HIGH, RATIO_LOW, residual_report

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_noise as rn  # noqa: E402


def main() -> int:
    data = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/p2p-realnoise")
    rng = np.random.default_rng(0)
    imgs = {name: rn.split(np.load(data / f), how, p)["input"].astype(np.float32)
            for name, (f, how, p) in rn.CASES.items()}
    imgs["camera, 15 photons (synthetic)"] = rng.poisson(skd.camera()[128:384, 128:384] / 255 * 15 + 0.5).astype(
        np.float32)
    imgs["fluorescence phantom, Gaussian"] = (phantoms.fluorescence((256, 256), seed=3)
                                              + rng.normal(0, 0.08, (256, 256))).astype(np.float32)
    print(f"# thresholds: signal removed where residual/noise > {RATIO_HIGH}, noise left where < {RATIO_LOW}")
    for name, y in imgs.items():
        noise = estimate_noise(y)
        good = p2p.denoise(y)
        for label, out in (("good", good), ("blur2", ndimage.gaussian_filter(good, 2)), ("half", 0.5 * (good + y)),
                           ("input", y)):
            r = residual_report(y, out, noise=noise)
            assert r.removed_signal is not None and r.remaining_noise is not None
            print(f"{name:32s} {label:6s} residual/noise {r.noise_ratio:5.2f}  signal removed "
                  f"{100 * r.removed_signal.mean():5.1f} %  noise left {100 * r.remaining_noise.mean():5.1f} %  "
                  f"structure score {r.score:.2f}  flagged {100 * r.flagged.mean():5.1f} %  [{noise.describe()}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
