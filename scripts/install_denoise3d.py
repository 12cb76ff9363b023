"""Install the bundled 3D denoiser (``denoise3d``) from its training run, with its model card.

Run after ``python scripts/train_pretrained.py denoise3d --steps 1600 --val-every 200 --no-install``
and ``python benchmarks/volumes.py ... --methods bundled,bundled3d,... --out
benchmarks/results/volumes_denoise3d.json`` (the card quotes that file's numbers when it exists).

The run trains the bundled 2D denoiser inflated to 3D (every kernel reads the neighbouring
planes). What ships keeps the neighbouring planes only in the three finest levels, the stem and
the tail (``z_kernel_levels=3``, :func:`napari_pix2pix.engine.training.warmstart.narrow_z`): the two
coarse levels hold most of the weights (12.5 M parameters in all, 5.3 M narrowed) and their
side planes measured 0.01 dB on the Purkinje volume (39.74 vs 39.73 dB at step 600), so the file
is 10.7 MB in float16 instead of 25 MB.

Usage: python scripts/install_denoise3d.py [--run runs/pretrained/denoise3d]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import napari_pix2pix as p2p
from napari_pix2pix.engine.training.warmstart import narrow_z

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import train_pretrained as tp  # noqa: E402

Z_KERNEL_LEVELS = 3
LIMITS = (
    "Learnt on synthesized noise (as the 2D denoiser: Gaussian sigma 0-60/255, Poisson-Gaussian 3-200 photons, read "
    "noise 0-0.04), independent per voxel, on procedural fluorescence volumes and pseudo-volumes made from 2D images "
    "(content drifting through Z), in 81 CPU minutes (1 000 steps, then resumed with longer schedules to 2 200 and "
    "4 000). It helps where neighbouring planes are alike (a Z step no "
    "coarser than the structures: widefield and confocal stacks); on a coarsely sliced MR volume (dipy aniso_vox, "
    "24 x 58 x 58) it was worse than the 2D denoiser plane by plane. It needs a (Z, Y, X) volume: for single images "
    "use denoise. See benchmarks/results/volumes_denoise3d.log before relying on it.")


def quality() -> tuple[str, str]:
    path = ROOT / "benchmarks" / "results" / "volumes_denoise3d.json"
    if not path.exists():
        return "not measured yet (benchmarks/volumes.py)", "Not measured yet.\n"
    rows = json.loads(path.read_text())["rows"]
    table = ["| volume | noisy | BM4D (true σ) | bundled 2D, plane by plane | bundled 3D |", "|---|---|---|---|---|"]
    line = []
    for vol in dict.fromkeys(r["volume"] for r in rows):
        got = {r["method"]: r["psnr"] for r in rows if r["volume"] == vol and "psnr" in r}
        cells = [f"{got[m]:.2f}" if m in got else "–" for m in ("input", "bm4d", "bundled 2D", "bundled 3D")]
        table.append(f"| {vol} | " + " | ".join(cells) + " |")
        if "bundled 3D" in got and "bundled 2D" in got:
            line.append(f"{vol}: {got['bundled 3D']:.2f} dB vs 2D {got['bundled 2D']:.2f} dB")
    return ("PSNR on the held-out half of real volumes, Gaussian sigma 0.1: " + "; ".join(line)
            + " — benchmarks/results/volumes_denoise3d.log"), "\n".join(table) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(ROOT / "runs" / "pretrained" / "denoise3d"))
    args = ap.parse_args()
    run = Path(args.run)
    model = p2p.Pix2PixModel.from_network(narrow_z(p2p.load_model(run / "final.safetensors"), Z_KERNEL_LEVELS))
    model.name = "denoise3d"
    line, table = quality()
    provenance = {"phantoms.fluorescence_volume": f"{tp.N_VOLUMES} procedural fluorescence-like volumes "
                  f"32 x 160 x 160 (seeds 6000-{6000 + tp.N_VOLUMES - 1}, Z steps 1.5-5 px); generated"}
    provenance.update({f"skimage.data.{n}": tp.SOURCES[n] + " (crops made into pseudo-volumes)"
                       for n in tp.GRAY_SOURCES})
    model.card = {**model.card, "summary": tp.CARDS["denoise3d"], "provenance": provenance,
                  "licence": "scikit-image data: public domain / CC0 / CC-BY as listed in skimage/data/README.txt; "
                             "phantoms: generated; weights: BSD-3-Clause",
                  "quality": line, "limits": LIMITS, "card": "docs/models/denoise3d.md",
                  "narrowed": f"z_kernel_levels={Z_KERNEL_LEVELS} (scripts/install_denoise3d.py)"}
    dest = ROOT / "src" / "napari_pix2pix" / "models" / "denoise3d.safetensors"
    model.save(dest, half=True)
    logs = ROOT / "scripts" / "pretrained_logs"
    shutil.copy(run / "train.log", logs / "denoise3d.log")
    shutil.copy(run / "history.json", logs / "denoise3d.history.json")
    c, tr = model.config, model.training_summary
    cfg = model.training_settings
    prov = "\n".join(f"| `{k}` | {v} |" for k, v in provenance.items())
    (ROOT / "docs" / "models" / "denoise3d.md").write_text(f"""# Bundled model `denoise3d`

{tp.CARDS["denoise3d"]}

```python
import napari_pix2pix as p2p
result = p2p.load_model("denoise3d").predict(volume)   # (Z, Y, X), or (T, Z, Y, X); napari: Denoise, model denoise3d
model = p2p.train(input=noisy_vol, target=clean_vol, spatial_dims=3, minutes=3)  # 3D runs start from it
```

## Network

The bundled 2D denoiser's U-Net ({c.levels} levels, widths {c.widths()}, {c.block_convs} extra convolutions per
level, full-resolution stem and tail, residual output) as a 3D network: no Z halvings (`z_levels=0`, any number
of planes), 3×3×3 and 3×4×4 kernels in the stem, the tail and the {Z_KERNEL_LEVELS} finest levels, plane-by-plane
1×3×3 and 1×4×4 kernels in the coarser ones (`z_kernel_levels={Z_KERNEL_LEVELS}`);
{sum(p.numel() for p in model.generator.parameters()) / 1e6:.2f} M parameters, float16
({dest.stat().st_size / 1e6:.1f} MB). Each volume is normalized by its own 0.5/99.9 percentiles.

## Training

Started from the bundled 2D denoiser inflated to 3D (`napari_pix2pix.engine.training.warmstart.inflate`: each 2D kernel
in the centre plane, the others zero, so it starts out as the 2D denoiser plane by plane), then
`python scripts/train_pretrained.py denoise3d --steps {cfg.get("steps")} --val-every 200`: L1 only, Adam lr
{cfg.get("lr")} (β1 {cfg.get("beta1")}), decay over the last half, batch {cfg.get("batch_size")} of
{cfg.get("patch_size")} (z, y, x) patches with flips, noise synthesized per patch as for the 2D denoiser; fp32 on a
2-core CPU; {tr.get("steps_done")} steps ({tr.get("status")}), in three runs: 1 000 steps, then `--resume --steps
2200` and `--resume --steps 4000` (each resume stretches the schedule, so the learning rate rose again to where the
longer decay puts it: 1.5e-4 at step 1 000, 1.35e-4 at step 2 200); validation PSNR on synthetic volumes 44.75 dB
after the first run, 45.00 after the second, 45.20 after the third. Then narrowed by `scripts/install_denoise3d.py`.
Log: `scripts/pretrained_logs/denoise3d.log`.

| data | source and licence |
|---|---|
{prov}

Pseudo-volumes: a 160² crop of each gray image, its content displaced by a smooth random field that grows with
the distance from the middle plane, a slow intensity change through Z and a Gaussian blur of 0.5-3 planes along Z
(`scripts/train_pretrained.py: _pseudo_volume`).

## Measured quality (held-out real volumes, never seen in training; Gaussian σ 0.1, second half of the planes)

{table}
## Limits

{LIMITS}
""")
    print(f"installed {dest} ({dest.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
