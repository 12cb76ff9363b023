"""PatchGAN discriminators: the paper's 70x70 one, and pix2pixHD's multi-scale variant.

``scales=1`` is the paper's discriminator (its state-dict keys are ``model.*``, as in
napari-pix2pix 0.1.0). ``scales=k`` adds k-1 copies that judge the pair downsampled by 2,
4, ... (``extra.*``); ``spectral_norm`` constrains every convolution (Miyato et al. 2018;
the norm layers are then left out). :meth:`PatchGANDiscriminator.judge` returns each scale's
logits with the features of its hidden layers, for a feature-matching loss (pix2pixHD).
"""

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
    scales: int = 1  # 1: the paper's; k: k discriminators on the pair at 1, 1/2, ... 1/2**(k-1) resolution
    spectral_norm: bool = False  # spectral normalisation of every convolution (no norm layers then)
    spatial_dims: int = 2  # 3: judges (Z, Y, X) volumes; Z (short, often coarse) is halved once, by the first layer

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.ndf < 1 or self.n_layers < 1:
            raise ValueError(
                f"PatchGAN needs positive in_channels, ndf and n_layers, got {self.to_dict()}"
            )
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if not 1 <= self.scales <= 4:
            raise ValueError(f"scales must be between 1 and 4, got {self.scales}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @property
    def receptive_field(self) -> int:
        """Side in pixels of the input patch that one output logit of the first scale judges (70 for n_layers 3)."""
        rf = 1
        for stride in [1, 1] + [2] * self.n_layers:  # from the output back to the input
            rf = rf * stride + (4 - stride)
        return rf


def _layers(config: PatchGANConfig) -> nn.Sequential:
    """conv-lrelu, then (conv-norm-lrelu) blocks of doubling width, then a 1-channel conv: one logit per patch."""
    sn = config.spectral_norm
    dims = config.spatial_dims
    norm = norm_layer("none" if sn else config.norm, dims)
    bias = config.norm != "batch" or sn
    first = [True]

    def conv(cin: int, cout: int, stride: int, with_bias: bool = True) -> nn.Module:
        if dims == 2:
            return nn.Conv2d(cin, cout, 4, stride, 1, bias=with_bias)
        z_stride = 2 if first[0] else 1  # Z: 3-wide kernels keep it, but the first layer halves it
        first[0] = False
        return nn.Conv3d(cin, cout, (3, 4, 4), (z_stride, stride, stride), 1, bias=with_bias)

    ndf = config.ndf
    layers: list[nn.Module] = [conv(config.in_channels, ndf, 2), nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, config.n_layers):  # stride-2 blocks
        prev, mult = mult, min(2**n, 8)
        layers += [conv(ndf * prev, ndf * mult, 2, bias), norm(ndf * mult), nn.LeakyReLU(0.2, True)]
    prev, mult = mult, min(2**config.n_layers, 8)
    layers += [conv(ndf * prev, ndf * mult, 1, bias), norm(ndf * mult), nn.LeakyReLU(0.2, True)]
    layers += [conv(ndf * mult, 1, 1)]  # one logit per patch
    return nn.Sequential(*layers)


class PatchGANDiscriminator(nn.Module):
    """Convolutional discriminator returning a map of real/fake logits, one per patch (per scale)."""

    def __init__(self, config: PatchGANConfig | None = None) -> None:
        super().__init__()
        config = config if config is not None else PatchGANConfig()
        self.config = config
        self.model = _layers(config)
        self.extra = nn.ModuleList([_layers(config) for _ in range(config.scales - 1)]) if config.scales > 1 else None
        init_weights(self)
        if config.spectral_norm:  # after the initialisation, which sets the weights it normalises
            for seq in [self.model, *(self.extra or [])]:
                for i, layer in enumerate(seq):
                    if isinstance(layer, (nn.Conv2d, nn.Conv3d)):
                        seq[i] = nn.utils.parametrizations.spectral_norm(layer)

    def forward(self, x: torch.Tensor, y: torch.Tensor, judge: bool = False) -> Any:
        """Logits (B, 1, h, w) of the first scale for pairs of input `x` (B, Cx, H, W) and output `y`.

        With ``judge=True``: :meth:`judge`'s list (every scale, with features), through
        ``forward`` so that DistributedDataParallel sees the call.
        """
        if judge:
            return self.judge(x, y)
        return self.model(torch.cat([x, y], dim=1))

    def judge(self, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """For every scale: (logits, features of the hidden layers), the pair downsampled 2x per scale."""
        pair = torch.cat([x, y], dim=1)
        pool = nn.functional.avg_pool2d if self.config.spatial_dims == 2 else nn.functional.avg_pool3d
        out = []
        for i, net in enumerate([self.model, *(self.extra or [])]):
            if i:
                pair = pool(pair, 3, stride=2, padding=1, count_include_pad=False)
            feats: list[torch.Tensor] = []
            h = pair
            for layer in net:
                h = layer(h)
                if isinstance(layer, nn.LeakyReLU):
                    feats.append(h)
            out.append((h, feats))
        return out
