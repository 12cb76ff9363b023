"""70x70 PatchGAN discriminator: judges (input, output) pairs patch by patch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .unet import NORMS, init_weights, norm_layer


@dataclass(frozen=True)
class PatchGANConfig:
    """Architecture of a PatchGAN discriminator (n_layers 3 gives the paper's 70x70 patches)."""

    in_channels: int = 2  # input channels + output channels: it sees the pair concatenated
    ndf: int = 64
    n_layers: int = 3
    norm: str = "batch"

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.ndf < 1 or self.n_layers < 1:
            raise ValueError(
                f"PatchGAN needs positive in_channels, ndf and n_layers, got {self.to_dict()}"
            )
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @property
    def receptive_field(self) -> int:
        """Side in pixels of the input patch that one output logit judges (70 for n_layers 3)."""
        rf = 1
        for stride in [1, 1] + [2] * self.n_layers:  # from the output back to the input
            rf = rf * stride + (4 - stride)
        return rf


class PatchGANDiscriminator(nn.Module):
    """Convolutional discriminator returning a map of real/fake logits, one per patch."""

    def __init__(self, config: PatchGANConfig | None = None) -> None:
        super().__init__()
        config = config if config is not None else PatchGANConfig()
        self.config = config
        norm = norm_layer(config.norm)
        bias = config.norm != "batch"
        ndf = config.ndf
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, config.n_layers):  # stride-2 blocks
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=bias), norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**config.n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=bias), norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 1)]  # one logit per patch
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, h, w) for pairs of input `x` (B, Cx, H, W) and output `y` (B, Cy, H, W)."""
        return self.model(torch.cat([x, y], dim=1))
