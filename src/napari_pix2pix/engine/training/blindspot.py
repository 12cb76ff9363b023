"""Blind spots: a network that cannot see a pixel's own noisy value learns its clean value from noisy images alone.

Noise2Void (Krull et al. 2019) and Noise2Self (Batson & Royer 2019): a few pixels of each
patch are replaced by the mean of their neighbours, and the loss is taken at those pixels
only. Where the noise of neighbouring pixels is independent, predicting the noisy value from
the neighbours is, in expectation, predicting the clean one.
"""

from __future__ import annotations

import torch
from torch import nn

BLIND_SPOT_FRACTION = 0.02  # share of pixels masked per step (Noise2Void: 0.2-2 %)


def neighbour_mean(x: torch.Tensor) -> torch.Tensor:
    """Each pixel replaced by the mean of its neighbours (3 x 3, or 3 x 3 x 3 for volumes), itself left out."""
    dims = x.dim() - 2
    k = torch.ones((1, 1) + (3,) * dims, dtype=x.dtype, device=x.device)
    k[(0, 0) + (1,) * dims] = 0
    k /= k.sum()
    conv = nn.functional.conv2d if dims == 2 else nn.functional.conv3d
    pad = nn.functional.pad(x.reshape(-1, 1, *x.shape[2:]), (1, 1) * dims, mode="replicate")
    return conv(pad, k).reshape(x.shape)


def blind_spot(a: torch.Tensor, fraction: float = BLIND_SPOT_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """(input with a random `fraction` of pixels replaced by their neighbours' mean, the mask of those pixels).

    The network cannot see a masked pixel's own (noisy) value, so predicting it from its
    neighbours learns the clean signal when the noise of neighbouring pixels is independent
    (Noise2Void, Noise2Self). Draws from torch's current random state (the run's own).
    """
    mask = (torch.rand((a.shape[0], 1, *a.shape[2:]), device=a.device) < fraction).to(a.dtype)
    return a * (1 - mask) + neighbour_mean(a) * mask, mask
