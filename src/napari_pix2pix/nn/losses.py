"""GAN losses as modules: vanilla (BCE with logits, the paper's) and least squares."""

from __future__ import annotations

import torch
from torch import nn

GAN_MODES = ("vanilla", "lsgan")


class GANLoss(nn.Module):
    """Adversarial loss against a constant real (1) or fake (0) target.

    Parameters
    ----------
    mode : {"vanilla", "lsgan"}
        "vanilla" is binary cross-entropy on logits (the paper); "lsgan" is mean squared error.
    """

    def __init__(self, mode: str = "vanilla") -> None:
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"GAN loss mode must be one of {GAN_MODES}, got {mode!r}")
        self.mode = mode
        self.loss: nn.Module = nn.BCEWithLogitsLoss() if mode == "vanilla" else nn.MSELoss()

    def forward(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        """Loss of discriminator `logits` if the pair is `real` (True) or generated (False)."""
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return self.loss(logits.float(), target.float())
