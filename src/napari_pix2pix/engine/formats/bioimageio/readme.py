"""The package's README: what it takes and returns, its tiling, the model card, training and citation."""

from __future__ import annotations

import math

from ...core.network import Network
from .facts import PIX2PIX_CITATION, PIX2PIX_DOI, Geometry


def tiling_lines(model: Network, geometry: Geometry) -> list[str]:
    """The README's tiling facts: the size grid, the halo, Z for volumes, the channels of 2.5D models."""
    multiple, halo_px, rf, c = geometry.multiple, geometry.halo, geometry.receptive_field, model.config
    return [
        "## Tiling",
        "",
        f"- y and x must be multiples of {multiple} (the U-Net halves them {c.levels} times). Tiles are at "
        f"least {2 * multiple} px: {multiple} px plus the halo on each side.",
        f"- Halo: {halo_px} px per side of an output tile (half the size multiple, so that a tile padded by "
        "the halo stays a multiple of the size multiple). The theoretical "
        f"receptive field is {rf} px; a strided U-Net is not shift-invariant, so tiles that start on multiples "
        f"of {multiple} agree best with a prediction of the whole image.",
        *([f"- z must be a multiple of {geometry.multiples[0]} (the U-Net halves Z at its "
           f"{sum(c.halves(0))} finest levels only: Z is usually shorter and coarser than y and x); halo "
           f"{geometry.halos[0]} planes."] if len(geometry.axes) == 3 else []),
        *([f"- 2.5D: the channels are the plane to restore with its {model.z_context} neighbours on either side "
           "along Z (reflected at the first and last planes), in the order: the plane z itself, then "
           "z-k ... z-1, z+1 ... z+k"]
          if model.z_context else []),
    ]


def documentation(model: Network, geometry: Geometry, *, ids: dict[str, str]) -> str:
    """The package's README.md (Markdown)."""
    axes = ", ".join(geometry.axes)
    norm = model.normalization
    task = model.task.name
    card = model.card or {}
    tr = {k: v for k, v in (model.training_summary or {}).items() if k != "history"}
    c = model.config
    lines = [
        f"# {model.name}",
        "",
        str(card.get("summary") or f"A napari-pix2pix {task} model."),
        "",
        f"A Pix2Pix U-Net generator (Isola et al., CVPR 2017) for **{task}**, exported by napari-pix2pix. "
        f"Architecture: {c.levels} levels, width {c.ngf}, {c.norm} norm"
        + (f", {c.block_convs} extra 3x3 convolutions per level" if c.block_convs else "")
        + (f", {c.full_res_convs} 3x3 convolutions at full resolution before and after the U-Net"
           if c.full_res_convs else "")
        + (", residual output (input + correction)" if c.residual else ", Tanh output")
        + f"; {c.in_channels} network input channel(s), {c.out_channels} output channel(s).",
        "",
        "## Inputs and outputs",
        "",
        (f"- `{ids['image']}` (batch, channel, {axes}): intensities; {norm.in_lo:g} and {norm.in_hi:g} (the training "
         "data's typical percentiles, used for every image) are mapped to -0.8 and +0.8, the network's range "
         "(`scale_linear`)." if norm.input == "fixed" else
         f"- `{ids['image']}` (batch, channel, {axes}): any intensities. Preprocessing: the {norm.low} and "
         f"{norm.high} percentiles of the whole sample (all channels pooled) are mapped to 0 and 1 "
         "(`scale_range`), then to -0.8 and +0.8 (`scale_linear`): the network's range."),
    ]
    if model.task.needs_mask:
        lines.append(f"- `{ids['mask']}` (batch, 1, {axes}): non-zero where pixels are to be filled. The network "
                     "sees the image with the holes set to 0 plus the mask; every pixel outside the mask is "
                     "returned unchanged.")
    if norm.output == "fixed":
        lines.append(f"- `{ids['output']}`: intensities on the training targets' scale "
                     f"({norm.out_lo:g} to {norm.out_hi:g} map to the network's -0.8 and +0.8), as napari-pix2pix "
                     "outputs them.")
    elif norm.input == "fixed":
        lines.append(f"- `{ids['output']}`: intensities on the input's scale (the network's -0.8 and +0.8 map back "
                     f"to {norm.in_lo:g} and {norm.in_hi:g}), as napari-pix2pix outputs them.")
    else:
        lines += [
            f"- `{ids['output']}`: **in normalized units of the input**: 0 and 1 are the input's {norm.low} and "
            f"{norm.high} percentiles. For intensities on the input's scale compute "
            "`output * (p_high - p_low) + p_low` with those percentiles of the input "
            "(bioimage.io post-processing cannot refer back to the input's range; napari-pix2pix does this "
            "itself when it loads this package).",
        ]
    lines += [
        "",
        *tiling_lines(model, geometry),
        "- Percentiles are statistics of the whole sample, never of a tile.",
        "",
        "## Exact use in napari-pix2pix",
        "",
        "`napari_pix2pix.load_model('package.zip')`, `napari-pix2pix predict package.zip ...` and the napari "
        "widgets read this package (checksums verified, weights loaded without running code) and predict "
        "exactly as with the original model file: percentiles of each whole plane (inpainting: outside the "
        "holes), outputs on the input's intensity scale, grid-aligned tiles blended without seams.",
        "",
        "## Model card",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in card.items()] or ["- (no card)"]
    lines += ["", "## Training", ""]
    cfg = model.training_settings
    facts = {"steps": tr.get("steps_done"), "status": tr.get("status"), "preset": model.preset,
             "patch size": cfg.get("patch_size"), "batch size": cfg.get("batch_size"), "lr": cfg.get("lr"),
             "lambda L1": cfg.get("lambda_l1"), "training planes": tr.get("n_train_planes"),
             "validation planes": tr.get("n_val_planes")}
    lines += [f"- {k}: {v}" for k, v in facts.items() if v is not None] or ["- not recorded"]
    lines += [
        "",
        "## Validation",
        "",
    ]
    best = tr.get("best_val_psnr")
    if isinstance(best, (int, float)) and math.isfinite(best):
        lines.append(f"Best validation PSNR during training: {best:.2f} dB on held-out data of the training "
                     "source (napari-pix2pix validation: eval mode, the same normalization as prediction).")
    lines += [
        "To validate on your own data, predict held-out images that have a reference (clean, intact, colour "
        "or target image) and compare output and reference with PSNR and SSIM (e.g. "
        "`skimage.metrics.peak_signal_noise_ratio`, `structural_similarity`) after mapping both to the same "
        "intensity scale; inspect the uncertainty map napari-pix2pix computes (`uncertainty=True`).",
        "",
        "## Citation",
        "",
        f"{PIX2PIX_CITATION} doi:{PIX2PIX_DOI}",
        "",
    ]
    return "\n".join(lines)
