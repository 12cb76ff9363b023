"""Write the model cards of the bundled models (docs/models/<name>.md and each file's metadata).

Run after ``scripts/train_all_pretrained.sh`` and ``benchmarks/quality.py``: the card takes the
training configuration and history from the model file, the provenance and licence of every
training image from ``scripts/train_pretrained.py`` and the measured quality from
``benchmarks/results/quality.json``. The weights are not touched (they are re-saved in float16,
as shipped, which is lossless for weights that were loaded from float16).

Usage: python scripts/model_cards.py [name ...]      (default: every bundled model)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import napari_pix2pix as p2p
from napari_pix2pix.engine.registry import bundled_paths

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import train_pretrained as tp  # noqa: E402

LIMITS = {
    "denoise": "Trained on synthetic noise (Gaussian sigma 0-60/255, Poisson-Gaussian 3-200 photons at full scale "
               "with read noise 0-0.04), independent per pixel: it does not remove structured noise (stripes, "
               "correlated camera noise, JPEG artefacts) and is not a deconvolution. Small network trained for about "
               "an hour on a 2-core CPU from a few dozen images: see the measured comparison with BM3D and NL-means "
               "below before relying on it for quantitative work; train your own on your data for best results.",
    "inpaint": "Holes are filled with plausible content, not measured data: never quantify inside an inpainted region. "
               "Large holes (more than ~1/4 of the 128-px training patch) come out blurry. Large holes that touch the "
               "image border in a flat, dark background can be filled too bright (the network sees mid-gray there): on "
               "the benchmark's MR brain slice this cost 26 dB against biharmonic inpainting, which is near-perfect in "
               "flat regions; for such holes use skimage.restoration.inpaint_biharmonic. On smooth, sparse "
               "fluorescence (mahotas nuclei) biharmonic is also better (-5.7 dB). RGB images are filled one "
               "channel at a time. Tried for the border failure and not shipped: pre-filling the holes by push-pull "
               "interpolation inside the network, so that it corrects a smooth fill. Its validation PSNR stayed flat "
               "at 28.4-28.5 dB from step 500 to 3000 (the shipped recipe: 25.8 dB at 3000, 30.15 dB at 8000) with "
               "a near-zero correction; stopped at 3000 steps for lack of time, so inconclusive "
               "(scripts/pretrained_logs/inpaint_attempt_hole_fill.log).",
    "colorize": "Colours are a guess from gray levels and texture learnt from few images (7 photographs/scans and "
                "procedural H&E sections and landscapes). On the 3 held-out real H&E images: right on 2 (0.38x and "
                "0.36x the gray image's colour error), wrong on the third (slideflow, 1.80x: painted yellow-brown); "
                "for H&E use colorize-he, which is right on all 3. On photographs it is worse than the gray image "
                "on average (1.34x its mean colour error; better on 4 of 14: flowers, fruit, a room, plants): "
                "colourizing photographs from a handful of training photographs is not solved here. The first "
                "version (GAN with the IHC image, benchmarks/results/quality_colorize_v1_gan_ihc.log) painted real "
                "H&E DAB-brown (1.54x) and was 1.18x on photographs. For your stain or scenes, train your own on a "
                "few RGB images (Train widget, task colorize). Not for diagnosis or any use where the true colour "
                "matters.",
    "colorize-he": "Only for H&E: it has seen nothing else and paints any image in haematoxylin purple and eosin "
                   "pink (on the benchmark's 14 photographs its mean colour error is 2.2x the gray image's). It "
                   "learnt from procedural sections only; on the 3 held-out real H&E images its mean colour is "
                   "less red (a* 4-10 lower) and bluer (b* 4-12 lower) than the true stain's: more purple, less "
                   "pink. Other stains (IHC/DAB, PAS, trichrome) need a "
                   "model of their own (Train widget, task colorize, on a few RGB images of that stain). The "
                   "colours are a prediction from gray levels and texture, not a measurement: not for diagnosis.",
}


def _quality(task: str) -> tuple[str, str]:
    """(one-line summary, markdown section) of the measured quality of `task`."""
    qpath = ROOT / "benchmarks" / "results" / "quality.json"
    if not qpath.exists():
        return "not measured yet (run benchmarks/quality.py)", "Not measured yet.\n"
    res = json.loads(qpath.read_text())
    import quality

    md = quality.markdown({k: v for k, v in res.items() if k in (task, "machine", "machine_" + task)})
    section = md.split("\n", 2)[2].replace("\n## ", "\n### ")
    rows = res.get(task, [])
    if not rows:
        return "not measured yet", section
    m = lambda key, rs=rows: float(np.mean([r[key] for r in rs]))  # noqa: E731
    if task == "denoise":
        parts = []
        for noise in ("gaussian", "poisson"):
            rs = [r for r in rows if r["noise"] == noise]
            parts.append(f"{noise}: mean PSNR {m('psnr_ours', rs):.2f} dB (noisy {m('psnr_noisy', rs):.2f}, best "
                         f"classical per image {np.mean([r['psnr_' + r['best_classical']] for r in rs]):.2f}) on "
                         f"{len(rs)} held-out real images")
        line = "; ".join(parts)
    elif task == "inpaint":
        line = (f"mean PSNR inside ~15% masks {m('psnr_ours'):.2f} dB vs biharmonic {m('psnr_biharmonic'):.2f} dB on "
                f"{len(rows)} held-out real images")
    else:
        parts = []
        for grp, label in (("histo/", "histology"), ("nat/", "photographs")):
            rs = [r for r in rows if r["image"].startswith(grp)]
            if rs:
                parts.append(f"{label}: mean CIEDE2000 {m('deltaE_ours', rs):.2f} vs gray {m('deltaE_gray', rs):.2f}")
        line = "; ".join(parts) + f" ({len(rows)} held-out real images)"
    return line + " — benchmarks/results/quality.md", section


def _provenance(task: str) -> dict[str, str]:
    if task == "colorize-he":
        return {"phantoms.histology (varied=True)": f"{tp.N_HE} procedural H&E sections with lab-to-lab stain, "
                f"magnification and focus variation (seeds 4000-{4000 + tp.N_HE - 1}); generated"}
    names = tp.RGB_SOURCES if task == "colorize" else tp.GRAY_SOURCES
    out = {f"skimage.data.{n}": tp.SOURCES[n] for n in names}
    if task == "colorize":
        out["phantoms.histology (varied=True)"] = f"{tp.N_HISTOLOGY} procedural H&E sections (seeds 4000-" \
                                                  f"{4000 + tp.N_HISTOLOGY - 1})"
        out["phantoms.landscape"] = f"{tp.N_LANDSCAPES} procedural landscapes/aerial views (seeds 3000-" \
                                    f"{3000 + tp.N_LANDSCAPES - 1})"
    else:
        out["phantoms.fluorescence"] = f"{tp.N_PHANTOMS} procedural fluorescence-like images (seeds 1000-" \
                                       f"{1000 + tp.N_PHANTOMS - 1})"
    return out


def card_markdown(task: str, model: p2p.Pix2PixModel, quality_md: str, size_mb: float) -> str:
    tr = model.training_summary
    cfg = model.training_settings
    c = model.config
    n_params = sum(p.numel() for p in model.generator.parameters())
    hist = tr.get("history", [])
    last = hist[-1] if hist else {}
    prov = "\n".join(f"| `{k}` | {v} |" for k, v in _provenance(task).items())
    call = {"denoise": "p2p.denoise(image)", "inpaint": "p2p.inpaint(image, mask)",
            "colorize": "p2p.colorize(gray_image)",
            "colorize-he": 'p2p.colorize(gray_image, model="colorize-he")'}[task]
    widget = "Colorize, model colorize-he" if task == "colorize-he" else task.capitalize()
    loss = ("L1 only (adversarial weight 0: the PatchGAN term trades PSNR for texture, and this model is judged "
            "against ground truth)" if cfg.get("gan_weight", 1.0) == 0 else
            f"the paper's: vanilla GAN with a 70×70 PatchGAN (ndf {cfg.get('ndf')}) + {cfg.get('lambda_l1')}·L1")
    return f"""# Bundled model `{task}`

{tp.CARDS[task]}

```python
import napari_pix2pix as p2p
result = {call}          # or: Plugins ▸ Pix2Pix ▸ {widget} in napari
```

## Network

U-Net generator (`napari_pix2pix.nn.UNetGenerator`): {c.levels} levels of 4×4 stride-2 convolutions with skip
connections (widths {c.widths()}), {c.block_convs} extra 3×3 convolutions per level, a full-resolution stem and
tail of {c.full_res_convs} 3×3 convolutions each (joined by a skip), batch norm (running statistics at inference,
folded into the convolutions), {"residual output (input + learnt correction)" if c.residual else "Tanh output"};
{n_params / 1e6:.2f} M parameters, stored in float16 ({size_mb:.1f} MB). Inputs are normalized by the 0.5/99.9
percentiles of each whole plane; outputs return to the input's intensity scale and dtype.

## Training data

{"Procedural H&E sections generated by `napari_pix2pix.engine.images.phantoms.histology(varied=True)` only." if
 task == "colorize-he" else "Only redistributable images that are available offline: scikit-image's bundled "
 "images (as gray and per channel for the gray models) and procedural images generated by "
 "`napari_pix2pix.engine.images.phantoms`."}
{"Pairs are synthesized on the fly: noise drawn per patch." if task == "denoise" else
 "Pairs are synthesized on the fly: random masks (strokes, blobs, boxes, dead pixels; 5-30 % of a patch)."
 if task == "inpaint" else "Pairs are synthesized on the fly: the input is the luminance of the RGB target."}
A tenth of the images is held out for validation.

| image | source and licence |
|---|---|
{prov}

The weights are released under the package's BSD-3-Clause licence.

## Recipe

`bash scripts/train_all_pretrained.sh` (which runs `python scripts/train_pretrained.py {task} --steps
{cfg.get("steps")}`), on a 2-core CPU with bf16 autocast. Loss: {loss}. Adam lr {cfg.get("lr")}, betas
({cfg.get("beta1")}, {cfg.get("beta2")}), constant then linear decay over the last half; batch
{cfg.get("batch_size")} of {cfg.get("patch_size")}² patches with flips and 90° rotations; gradient clipping
{cfg.get("grad_clip")}. Full configuration: the `training.config` entry of the model file's metadata
(`napari-pix2pix models src/napari_pix2pix/models/{task}.safetensors`).

Steps done: {tr.get("steps_done")} ({tr.get("status")}; the final model is shipped); last validation (held-out
images, synthesized pairs):
PSNR {last.get("val_psnr", float("nan")):.2f} dB (input {last.get("val_psnr_input") or float("nan"):.2f} dB), SSIM
{last.get("val_ssim", float("nan")):.3f}. Log: `scripts/pretrained_logs/{task}.log`, history:
`scripts/pretrained_logs/{task}.history.json`.

## Measured quality (held-out real images, never seen in training)

{quality_md}
## Limits

{LIMITS[task]}
"""


def main() -> int:
    paths = bundled_paths()
    docs = ROOT / "docs" / "models"
    docs.mkdir(parents=True, exist_ok=True)
    for task in sys.argv[1:] or ("denoise", "inpaint", "colorize", "colorize-he"):
        if task not in paths:
            print(f"no bundled {task} model", file=sys.stderr)
            continue
        model = p2p.load_model(task)
        line, section = _quality(task)
        model.card = {
            **model.card,
            "summary": tp.CARDS[task],
            "data": model.card.get("data", ""),
            "provenance": _provenance(task),
            "licence": "procedural images generated; weights BSD-3-Clause" if task == "colorize-he" else
                       "training images: public domain / CC0 / no known copyright restrictions / scikit-image's "
                       "BSD-3-Clause (per image in 'provenance'); procedural images generated; weights BSD-3-Clause",
            "quality": line,
            "limits": LIMITS[task],
            "card": f"docs/models/{task}.md",
        }
        model.save(paths[task], half=True)
        size = paths[task].stat().st_size / 1e6
        (docs / f"{task}.md").write_text(card_markdown(task, model, section, size))
        print(f"{task}: {paths[task]} ({size:.1f} MB), docs/models/{task}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
