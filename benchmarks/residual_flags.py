"""How much of an image the residual check flags: false alarms on good results, hits on bad ones.

``engine.uncertainty.residual_report`` flags regions where the residual (input − output)
correlates locally with the output's structure. This script measures the flagged share for
residuals that hold no signal (the true noise: output = clean image), for good denoisings (the
bundled denoiser on the plugin's denoise sample and on held-out fluorescence images) and for a
bad one (a Gaussian blur that removes signal), for several thresholds, and prints them.

Usage: ``python benchmarks/residual_flags.py [--data /tmp/p2p-evaldata]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent


def cases(data: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (noisy, clean), float32."""
    from napari_pix2pix._napari.sample_data import sample_path
    from napari_pix2pix.engine.images.io import read_image

    out = {"sample (photon noise)": (read_image(str(sample_path("denoise_noisy.tif"))).astype(np.float32),
                                     read_image(str(sample_path("denoise_clean.tif"))).astype(np.float32))}
    if data:
        sys.path.insert(0, str(HERE))
        import eval_data

        imgs = eval_data.load(data, size=512)
        rng = np.random.default_rng(0)
        for k in ("fluo/dsb2018_nuclei", "fluo/mahotas_nuclear", "fluo/purkinje_mip"):
            clean = imgs[k]
            out[f"{k} (sigma 0.1)"] = ((clean + rng.normal(0, 0.1, clean.shape)).astype(np.float32), clean)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="evaluation data folder (benchmarks/fetch_eval_data.sh)")
    ap.add_argument("--thresholds", default="0.3,0.4,0.5,0.6")
    args = ap.parse_args()
    import napari_pix2pix as p2p
    from napari_pix2pix.engine.predict.uncertainty import residual_report

    thresholds = [float(t) for t in args.thresholds.split(",")]
    model = p2p.load_model("denoise")
    print("flagged share of the image (%) by threshold " + " / ".join(f"{t:g}" for t in thresholds))
    for name, (noisy, clean) in cases(args.data).items():
        results = {"true noise (output = clean)": clean, "bundled denoiser": model.predict(noisy),
                   "blur sigma 2 (removes signal)": ndimage.gaussian_filter(noisy, 2.0)}
        for what, out in results.items():
            rep = [residual_report(noisy, out, threshold=t) for t in thresholds]
            shares = " / ".join(f"{100 * float(r.flagged.mean()):5.1f}" for r in rep)
            print(f"{name:34s} {what:30s} score {rep[0].score:+.3f}  flagged {shares}")


if __name__ == "__main__":
    main()
