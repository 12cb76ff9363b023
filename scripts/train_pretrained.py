"""Train the bundled generators (denoise, inpaint, colorize, colorize-he) from offline, redistributable data.

Data: scikit-image's bundled images that load without a download (public domain or
CC0/CC-BY, see the model cards) and procedural microscopy-like images
(``napari_pix2pix.engine.images.phantoms``). Pairs are synthesized per task. Each run writes a
model file, its checkpoints and a log under ``runs/pretrained/<name>/``; a finished model is
copied into ``src/napari_pix2pix/models/<name>.safetensors`` with its model card.

Usage: python scripts/train_pretrained.py denoise [--steps 3000] [--resume]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from skimage import color, data

import napari_pix2pix as p2p
from napari_pix2pix.engine import StepUpdate, TrainConfig, ValidationUpdate, describe, train_iter
from napari_pix2pix.engine.core.progress import run_to_end
from napari_pix2pix.engine.images import phantoms

ROOT = Path(__file__).resolve().parents[1]

# (loader name, licence note) — all load offline in scikit-image 0.26
GRAY_SOURCES = ["camera", "coins", "moon", "cell", "page", "text", "clock", "brick", "grass", "gravel",
                "hubble_deep_field", "astronaut", "coffee", "chelsea", "immunohistochemistry", "retina", "rocket",
                "cat", "microaneurysms"]
# where each scikit-image image comes from and under which terms (from its docstring in skimage.data;
# images without a notice of their own are covered by scikit-image's BSD-3-Clause licence)
SOURCES = {
    "camera": "photograph by Lav Varshney; CC0",
    "coins": "Greek coins from Pompeii, Brooklyn Museum collection; no known copyright restrictions",
    "moon": "surface of the moon; shipped with scikit-image (BSD-3-Clause), no separate notice",
    "cell": "quantitative phase image of an HL60 cell (Schürmann, Guck et al.); CC0",
    "page": "scanned page of text; shipped with scikit-image (BSD-3-Clause), no separate notice",
    "text": "Wikimedia File:Corner.png; public domain",
    "clock": "motion-blurred wall clock, photograph by Stefan van der Walt; public domain",
    "brick": "CC0Textures Bricks25; CC0",
    "grass": "DeviantArt linolafett Grass-01; CC0",
    "gravel": "CC0Textures Gravel04; CC0",
    "hubble_deep_field": "Hubble eXtreme Deep Field, NASA; public domain",
    "astronaut": "Eileen Collins, NASA; public domain",
    "coffee": "photograph by Rachel Michetti (Pikolo Espresso Bar); CC0",
    "chelsea": "photograph of a cat by Stefan van der Walt; CC0",
    "immunohistochemistry": "IHC (DAB + hematoxylin) of colonic glands, CMMI; no known copyright restrictions",
    "retina": "fundus photograph of a normal left eye, Wikimedia Commons; CC0",
    "rocket": "SpaceX Falcon 9 photograph; public domain",
    "cat": "photograph by Stefan van der Walt; CC0",
    "microaneurysms": "retinal fundus detail, FAU fundus image database (Andreas Maier); CC0",
}
# (not immunohistochemistry: its DAB brown taught the first colorizer to paint real H&E brown)
RGB_SOURCES = ["astronaut", "coffee", "chelsea", "retina", "rocket", "hubble_deep_field",
               "cat"]


def _load(name: str) -> np.ndarray:
    return np.asarray(getattr(data, name)())


N_PHANTOMS = 48  # procedural fluorescence-like images (nuclei, filaments, membranes mixed)
N_HISTOLOGY = 48  # procedural H&E sections with lab-to-lab variation (the first colorizer: 24 uniform ones)
N_LANDSCAPES = 24  # procedural landscapes and aerial views (sky, vegetation, soil, water, roads)
N_HE = 96  # procedural H&E sections with lab-to-lab variation (colorize-he)


def gray_images(n_phantoms: int = N_PHANTOMS) -> list[np.ndarray]:
    """Gray training images: skimage images (as gray and per channel) plus phantoms."""
    out = []
    for name in GRAY_SOURCES:
        im = _load(name).astype(np.float32)
        if im.ndim == 3:
            out.append(color.rgb2gray(im[..., :3] / 255.0).astype(np.float32))
            out += [im[..., c] for c in range(3)]
        else:
            out.append(im)
    rng = np.random.default_rng(7)
    for s in range(n_phantoms):
        side = int(rng.choice([256, 320, 384]))
        out.append(phantoms.fluorescence((side, side), 1000 + s))
    return [o for o in out if min(o.shape) >= 128]


N_VOLUMES = 24  # denoise3d: procedural fluorescence volumes and as many pseudo-volumes from gray images


def _pseudo_volume(img: np.ndarray, rng: np.random.Generator, depth: int = 32) -> np.ndarray:
    """A (Z, Y, X) volume from a 2D image: its content drifts and fades smoothly from plane to plane.

    A smooth random displacement field grows with the distance from the middle plane (structures
    move and deform through Z as in a real stack), intensity changes slowly in Z, and a Gaussian
    blur along Z of 0.5-3 planes stands in for the axial PSF.
    """
    from scipy import ndimage

    h, w = img.shape
    img = (img - img.min()) / max(float(np.ptp(img)), 1e-6)
    field = np.stack([ndimage.gaussian_filter(rng.normal(size=(h, w)), 24) for _ in range(2)])
    field /= max(float(np.abs(field).max()), 1e-6)
    reach = rng.uniform(0.3, 1.5)  # pixels of displacement per plane at the strongest point
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fade = 1 + rng.uniform(-0.4, 0.4) * np.sin(np.linspace(0, rng.uniform(1, 4), depth) + rng.uniform(0, 6))
    planes = [ndimage.map_coordinates(img, [yy + (z - depth / 2) * reach * field[0],
                                            xx + (z - depth / 2) * reach * field[1]], order=1, mode="reflect") * f
              for z, f in zip(range(depth), fade, strict=True)]
    vol = ndimage.gaussian_filter1d(np.stack(planes), rng.uniform(0.5, 3.0), axis=0)
    return np.clip(vol, 0, None).astype(np.float32)


def volumes_3d(n: int = N_VOLUMES) -> list[np.ndarray]:
    """Clean training volumes for denoise3d: fluorescence-like phantoms and pseudo-volumes of gray images."""
    from scipy import ndimage

    rng = np.random.default_rng(5)
    out = []
    for s in range(n):  # phantoms: Z steps of 1.5-5 px, an extra axial blur of 0-2 planes
        vol = phantoms.fluorescence_volume((32, 160, 160), 6000 + s, z_step=float(rng.uniform(1.5, 5)))
        out.append(ndimage.gaussian_filter1d(vol, rng.uniform(0.01, 2.0), axis=0).astype(np.float32))
    grays = [g for g in gray_images(n_phantoms=0) if min(g.shape) >= 160]
    for s in range(n):
        g = grays[s % len(grays)]
        y, x = (int(rng.integers(0, n_ - 160 + 1)) for n_ in g.shape)
        out.append(_pseudo_volume(g[y : y + 160, x : x + 160].astype(np.float32), rng))
    return out


def inflated_denoiser(run: Path) -> str:
    """The bundled 2D denoiser as a 3D network (its 2D kernels in the centre plane): denoise3d's start."""
    from napari_pix2pix.engine.training.warmstart import inflate

    path = run / "start-inflated-denoise.safetensors"
    if not path.exists():
        p2p.Pix2PixModel.from_network(inflate(p2p.load_model("denoise"))).save(path)
    return str(path)


def rgb_images(n_histology: int = N_HISTOLOGY, n_landscapes: int = N_LANDSCAPES) -> list[np.ndarray]:
    """RGB training images for colorize: photographs and histology from skimage, H&E-like and landscape phantoms."""
    out = [(_load(n)[..., :3] / 255.0).astype(np.float32) for n in RGB_SOURCES]
    out += [phantoms.histology((320, 320), 4000 + s, varied=True) for s in range(n_histology)]
    out += [phantoms.landscape((320, 320), 3000 + s) for s in range(n_landscapes)]
    return out


def he_images(n: int = N_HE) -> list[np.ndarray]:
    """RGB training images for colorize-he: varied procedural H&E sections (seeds 4000-)."""
    rng = np.random.default_rng(11)
    return [phantoms.histology((int(s), int(s)), 4000 + i, varied=True)
            for i, s in enumerate(rng.choice([256, 320, 384], n))]


# generator used by all the bundled models: 5 levels, widths 24-192, two extra 3x3 convs per level,
# a full-resolution stem and tail of two 3x3 convs each, residual output (input + correction): 4.2 M
# parameters, 8 MB in float16. The full-resolution convs gained 1.6 dB on held-out images in a 600-step
# A/B test (denoise, sigma 25/255: mean 29.39 vs 27.79 dB over 6 images, better on each).
GENERATOR = {"levels": 5, "ngf": 24, "block_convs": 2, "full_res_convs": 2, "residual": True, "dropout": 0.0}


# L1 only (gan_weight 0) where the result is judged by PSNR against a ground truth (denoise,
# inpaint): the adversarial term trades PSNR for texture. Colorize keeps the paper's loss.
RECIPES = {
    "denoise": dict(preset="unet_tiny", generator=GENERATOR, patch_size=96, batch_size=16, lr=1e-3, beta1=0.9,
                    gan_weight=0.0, lambda_l1=100.0, grad_clip=1.0,
                    noise={"gaussian_sigma": [0.0, 60 / 255], "photons": [3.0, 200.0], "read_noise": [0.0, 0.04],
                           "poisson_fraction": 0.5}),
    # Tried (inconclusive, stopped for time): holes pre-filled by push-pull interpolation inside the network, the
    # net learning a correction of that fill (scripts/pretrained_logs/inpaint_attempt_hole_fill.log). Validation
    # PSNR was flat at 28.4-28.5 dB from step 500 to 3000 at constant lr (this recipe: 25.79 dB at step 3000,
    # 30.15 dB at 8000); at step 3000 the net's mean |correction| in the holes of a test phantom was 0.006
    # against the fill's mean error 0.128 (network units): it had stopped learning.
    "inpaint": dict(preset="unet_tiny", generator=GENERATOR, patch_size=128, batch_size=12, lr=1e-3, beta1=0.9,
                    gan_weight=0.0, lambda_l1=100.0, grad_clip=1.0),
    # the paper's GAN term, on photographs, landscapes and varied H&E sections (no IHC image). Earlier versions
    # (benchmarks/results/): v1, the same loss with the IHC image and 24 uniform H&E phantoms, painted real H&E
    # brown (quality_colorize_v1_gan_ihc.log); L1 only on denser uniform phantoms was worse still
    # (quality_colorize_attempt_l1_dense_phantoms.log)
    "colorize": dict(preset="unet_tiny", generator=GENERATOR, patch_size=128, batch_size=12, ndf=32, lr=5e-4,
                     gan_weight=1.0, lambda_l1=100.0, grad_clip=1.0),
    # H&E only: a colorizer that has seen only H&E cannot paint a section in a photograph's colours, the
    # failure of the general model. L1 only: the colour error against the true stain is what counts.
    "colorize-he": dict(preset="unet_tiny", generator=GENERATOR, patch_size=128, batch_size=12, lr=1e-3,
                        beta1=0.9, gan_weight=0.0, lambda_l1=100.0, grad_clip=1.0),
}
# 3D: the bundled 2D denoiser inflated (it starts as itself, plane by plane) and taught what the neighbouring
# planes add, on volumes synthesized with the same noise
RECIPES["denoise3d"] = dict(patch_size=(16, 64, 64), batch_size=2, lr=1.5e-4, beta1=0.9, gan_weight=0.0,
                            lambda_l1=100.0, grad_clip=1.0, noise=RECIPES["denoise"]["noise"])
TASK_OF = {"colorize-he": "colorize", "denoise3d": "denoise"}  # bundled model name -> task, where they differ
CARDS = {  # one-line summaries: the model cards' first line (scripts/model_cards.py)
    "denoise3d": "Noise-level blind denoiser for grayscale volumes (Z, Y, X) with Gaussian or Poisson-Gaussian noise: "
                 "the bundled 2D denoiser as a 3D network that also reads the neighbouring planes.",
    "denoise": "Noise-level blind denoiser for grayscale images with Gaussian or Poisson-Gaussian (photon-limited) "
               "noise; applied per channel to multi-channel images.",
    "inpaint": "Fills masked regions (scratches, blobs, boxes, dead pixels) of grayscale images; applied per channel "
               "to RGB and multi-channel images. Pixels outside the mask are returned unchanged.",
    "colorize": "Grayscale to RGB, learnt from procedural H&E sections and landscapes and a few photographs. "
                "Not for photographs: on 14 held-out photographs its colours were further from the truth than the "
                "gray image itself (1.34x the colour error; better on 4 of 14). Experimental on histology (right "
                "on 2 of 3 real H&E sections); for H&E use colorize-he.",
    "colorize-he": "Grayscale to RGB for H&E-stained histology (brightfield): haematoxylin-purple nuclei, "
                   "eosin-pink stroma and cytoplasm, white background; learnt from procedural H&E sections with "
                   "lab-to-lab stain variation. Only for H&E: it paints anything in H&E colours.",
}


def install(task: str, model: p2p.Pix2PixModel, run: Path) -> None:
    """Ship the run's final model (float16) in the package, with its log and history.

    The final model, not the best validation checkpoint: the schedule ends with the learning
    rate decayed to 0, and the choice among late checkpoints by 16 validation patches is noise.
    """
    dest = ROOT / "src" / "napari_pix2pix" / "models" / f"{task}.safetensors"
    model.name = task
    model.save(dest, half=True)
    logs = ROOT / "scripts" / "pretrained_logs"
    logs.mkdir(exist_ok=True)
    shutil.copy(run / "train.log", logs / f"{task}.log")
    shutil.copy(run / "history.json", logs / f"{task}.history.json")
    print(f"installed {dest} ({dest.stat().st_size / 1e6:.1f} MB)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("task", choices=sorted(RECIPES))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--no-install", action="store_true", help="do not copy the result into the package")
    ap.add_argument("--reinstall", action="store_true", help="only copy the finished run's model into the package")
    args = ap.parse_args()
    run = ROOT / "runs" / "pretrained" / args.task
    run.mkdir(parents=True, exist_ok=True)
    if args.reinstall:
        install(args.task, p2p.load_model(run / "final.safetensors"), run)
        return 0
    recipe = dict(RECIPES[args.task])
    task = TASK_OF.get(args.task, args.task)
    if args.task == "denoise3d":
        recipe["start_from"] = inflated_denoiser(run)
    cfg = TrainConfig(task=task, steps=args.steps, val_every=args.val_every, checkpoint_every=100
                      if args.task == "denoise3d" else 250, val_fraction=0.1, val_patches=16, seed=0, **recipe)
    source = {"clean": {"colorize": rgb_images, "colorize-he": he_images, "denoise3d": volumes_3d}.get(
        args.task, gray_images)()}
    if task == "colorize":
        source["channel_axis"] = -1
    kwargs = dict(model_path=run / "model.safetensors", **source)
    ckpt = run / "model.checkpoints" / "checkpoint.safetensors"
    installed = ROOT / "src" / "napari_pix2pix" / "models" / f"{args.task}.safetensors"
    if args.resume and ckpt.exists() and installed.exists():
        from napari_pix2pix.engine import load_checkpoint

        meta = load_checkpoint(ckpt)[1]
        if meta.get("status") == "finished" and int(meta["step"]) >= args.steps:
            print(f"{args.task}: already trained ({meta['step']} steps) and installed; nothing to do")
            return 0
    if args.resume and ckpt.exists():
        kwargs["resume"] = ckpt
        kwargs["steps"] = args.steps
    else:
        kwargs["config"] = cfg
    log = open(run / "train.log", "a")
    t0 = time.time()

    def show(ev) -> None:
        if isinstance(ev, ValidationUpdate) or (isinstance(ev, StepUpdate) and ev.step % 50 == 0):
            line = describe(ev)
            print(line, flush=True)
            log.write(line + "\n")
            log.flush()

    model = run_to_end(train_iter(**kwargs), show)
    minutes = (time.time() - t0) / 60
    model.name = args.task
    model.card = {
        "summary": CARDS[args.task],
        "data": (f"{N_VOLUMES} procedural fluorescence-like volumes (napari_pix2pix.engine.images.phantoms."
                 f"fluorescence_volume) and {N_VOLUMES} pseudo-volumes from scikit-image gray images (content drifting "
                 "and fading through Z, axial blur); started from the bundled 2D denoiser inflated to 3D"
                 if args.task == "denoise3d" else
                 f"{N_HE} procedural H&E sections (napari_pix2pix.engine.images.phantoms.histology, varied=True)"
                 if args.task == "colorize-he" else "scikit-image bundled images "
                 + ", ".join(RGB_SOURCES if args.task == "colorize" else GRAY_SOURCES)
                 + (f", {N_HISTOLOGY} procedural H&E sections (napari_pix2pix.engine.images.phantoms.histology, "
                    "varied=True) and "
                    f"{N_LANDSCAPES} procedural landscapes (phantoms.landscape)"
                    if args.task == "colorize" else f" (gray and per channel) and {N_PHANTOMS} procedural "
                    "fluorescence-like images (napari_pix2pix.engine.images.phantoms.fluorescence)")),
        "licence": "phantoms: generated; weights: BSD-3-Clause" if args.task == "colorize-he" else
                   "scikit-image data: public domain / CC0 / CC-BY as listed in skimage/data/README.txt; "
                   "phantoms: generated; weights: BSD-3-Clause",
        "recipe": f"python scripts/train_pretrained.py {args.task} --steps {args.steps}; {recipe}",
        "training_minutes_this_run": round(minutes, 1),
        "limits": "Small network trained on a 2-core CPU from a few dozen images; see the measured quality in "
                  "benchmarks/results/quality.md before relying on it.",
    }
    final = model.save(run / "final.safetensors")
    json.dump(model.training_summary.get("history", []), open(run / "history.json", "w"), indent=1)
    if not args.no_install:
        install(args.task, model, run)
    print(f"done in {minutes:.1f} min: {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
