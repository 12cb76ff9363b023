"""Shared tiny models and images for the engine tests."""

from __future__ import annotations

import numpy as np
import torch

from napari_pix2pix import Pix2PixModel
from napari_pix2pix.nn.unet import init_weights


def tiny_model(task: str = "denoise", channels: int = 1, levels: int = 3, ngf: int = 4, seed: int = 0,
               gain: float = 0.05, **kw) -> Pix2PixModel:
    """A tiny generator whose output depends visibly on its input (gain > paper's 0.02)."""
    torch.manual_seed(seed)
    m = Pix2PixModel(task, "unet_tiny", channels=channels, levels=levels, ngf=ngf, **kw)
    init_weights(m.generator, gain)
    return m


def smooth_image(shape=(300, 400), dtype=np.float32, seed=0) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / 100.0
    im = np.sin(yy * 2 + seed) + np.cos(xx * 3)
    im = (im - im.min()) / np.ptp(im)
    if np.dtype(dtype).kind == "u":
        return (im * (np.iinfo(dtype).max * 0.8) + 10).astype(dtype)
    return im.astype(dtype)
