"""Training benchmark: our loop vs a plain loop that follows the paper exactly.

Both train the same networks (generator preset + 70x70 PatchGAN, ndf 64) with the same
batch on the same synthesized denoising pairs. The plain loop is the paper's recipe in
fp32, NCHW, with nothing else; ours is ``train_iter`` with its defaults (bf16 autocast where
the CPU has native bf16, channels_last). Prints iterations/s and images/s per setting,
then the validation L1 of both after the same number of steps (unet_tiny).

Usage: python benchmarks/training.py [--presets unet_256 unet_small unet_tiny] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from torch import nn

from napari_pix2pix.engine import StepUpdate, TrainConfig, ValidationUpdate, train_iter
from napari_pix2pix.engine.core.progress import run_to_end
from napari_pix2pix.engine.images import phantoms
from napari_pix2pix.engine.training.data import make_data, stack_batch
from napari_pix2pix.engine.training.validation import make_valset, validate
from napari_pix2pix.nn import GANLoss, PatchGANConfig, PatchGANDiscriminator, UNetGenerator, preset_config

CLEAN = [phantoms.fluorescence((384, 384), s) for s in range(4)]


def plain_loop(preset: str, patch: int, batch: int, steps: int, seed: int = 0, data=None, levels=None):
    """The paper's loop, fp32, nothing else. Returns (it/s after warm-up, generator)."""
    torch.manual_seed(seed)
    over = {"levels": levels} if levels else {}
    g = UNetGenerator(preset_config(preset, in_channels=1, out_channels=1, **over)).train()
    d = PatchGANDiscriminator(PatchGANConfig(in_channels=2)).train()
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    gan, l1 = GANLoss("vanilla"), nn.L1Loss()
    rng = np.random.default_rng(seed)
    data = data or make_data("denoise", clean=CLEAN, patch_size=patch, val_fraction=0)
    t0 = None
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        a, b = (torch.from_numpy(x) for x in stack_batch([data.sample(rng, patch) for _ in range(batch)], data.task))
        fake = g(a)
        loss_d = 0.5 * (gan(d(a, b), True) + gan(d(a, fake.detach()), False))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        for p in d.parameters():
            p.requires_grad_(False)
        loss_g = gan(d(a, fake), True) + 100 * l1(fake, b)
        for p in d.parameters():
            p.requires_grad_(True)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
    return steps / (time.perf_counter() - t0), g


def our_loop(preset: str, patch: int, batch: int, steps: int, levels=None, **kw):
    gen = {"levels": levels} if levels else {}
    cfg = TrainConfig(task="denoise", preset=preset, generator=gen, patch_size=patch, batch_size=batch,
                      steps=steps + 2, val_fraction=0, checkpoint_every=10**6, **kw)
    times: list[float] = []
    model = run_to_end(train_iter(clean=CLEAN, config=cfg),
                       lambda ev: times.append(time.perf_counter()) if isinstance(ev, StepUpdate) else None)
    return steps / (times[-1] - times[1]), model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["unet_256", "unet_small", "unet_tiny"])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--patches", nargs="+", type=int, default=[256, 128])
    ap.add_argument("--l1-steps", type=int, default=200, help="0 skips the equal-quality check")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for preset in args.presets:
        for patch in args.patches:
            levels = 7 if (preset == "unet_256" and patch == 128) else None  # 8 halvings need 256²
            for batch in args.batches:
                plain, _ = plain_loop(preset, patch, batch, args.steps, levels=levels)
                ours, _ = our_loop(preset, patch, batch, args.steps, levels=levels)
                row = {"preset": preset + (f" (levels {levels})" if levels else ""), "patch": patch, "batch": batch,
                       "plain_it_s": plain, "ours_it_s": ours, "plain_img_s": plain * batch,
                       "ours_img_s": ours * batch, "speedup": ours / plain}
                rows.append(row)
                print(json.dumps(row), flush=True)
    # equal quality after the same number of steps (small preset so that it runs in minutes)
    n = args.l1_steps
    if n == 0:
        quality = {}
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"rows": rows, "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "loadavg_at_end": os.getloadavg()[0]}, f, indent=1)
        return
    data = make_data("denoise", clean=CLEAN, patch_size=128, val_fraction=0.25, seed=0)
    cfg = TrainConfig(task="denoise", preset="unet_tiny", patch_size=128, batch_size=4, steps=n, val_every=n,
                      checkpoint_every=10**6, val_fraction=0.25)
    vs = make_valset(data, cfg.patch_size, cfg.val_patches, 0)
    _, g_plain = plain_loop("unet_tiny", 128, 4, n - 2, data=data)
    vals = [e for e in train_iter(data=data, config=cfg) if isinstance(e, ValidationUpdate)]
    from napari_pix2pix import Pix2PixModel

    pm = Pix2PixModel("denoise", "unet_tiny")
    pm.generator.load_state_dict(g_plain.state_dict())
    v_plain = validate(pm, vs, torch.device("cpu"), n, "denoise")
    quality = {"steps": n, "val_l1_plain": v_plain.l1, "val_l1_ours": vals[-1].l1,
               "val_psnr_plain": v_plain.psnr, "val_psnr_ours": vals[-1].psnr}
    print(json.dumps(quality))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "quality": quality, "torch": torch.__version__,
                       "threads": torch.get_num_threads(),
                       "loadavg_at_end": os.getloadavg()[0]}, f, indent=1)


if __name__ == "__main__":
    main()
