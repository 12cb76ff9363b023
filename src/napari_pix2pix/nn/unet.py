"""U-Net generator of Pix2Pix (Isola et al., CVPR 2017), with every skip visible.

The network follows the paper and its reference implementation: 4x4 stride-2
convolutions, LeakyReLU(0.2) on the way down, ReLU + transposed convolution on
the way up, a skip connection at every level, Tanh at the output, dropout 0.5 in
the innermost decoder blocks and weights drawn from N(0, 0.02).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

NORMS = ("batch", "instance", "none")
UPSAMPLES = ("transpose", "resize")


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a U-Net generator; stored in model files so they rebuild themselves."""

    in_channels: int = 1
    out_channels: int = 1
    levels: int = 8  # number of stride-2 halvings; inputs must be a multiple of 2**levels
    ngf: int = 64  # width of the first level; level i has ngf * min(2**i, 8) channels
    norm: str = "batch"  # "batch" | "instance" | "none"; both norms use running stats in eval
    dropout: float = 0.5  # dropout probability in the innermost decoder blocks (0 disables)
    dropout_blocks: int | None = None  # decoder blocks with dropout; None = paper (levels - 5)
    block_convs: int = 0  # extra 3x3 conv + norm layers at every level, down and up; 0 = paper
    residual: bool = False  # output = input image + correction (no Tanh); 0/False = paper. The input's
    # first out_channels channels are the base (or its one channel, repeated, when in_channels is 1)
    full_res_convs: int = 0  # 3x3 conv + norm layers at full resolution before the first halving and after
    # the last doubling (a stem and a tail joined by a skip); 0 = paper
    upsample: str = "transpose"  # "transpose": 4x4 stride-2 transposed convolutions (paper); "resize": nearest
    # 2x upsampling + 3x3 convolution (no checkerboard artefacts; Odena et al. 2016)

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError(
                f"in_channels ({self.in_channels}) and out_channels ({self.out_channels}) "
                "must be at least 1"
            )
        if not 2 <= self.levels <= 10:
            raise ValueError(f"levels must be between 2 and 10, got {self.levels}")
        if self.ngf < 1:
            raise ValueError(f"ngf must be a positive width, got {self.ngf}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.block_convs < 0 or self.full_res_convs < 0:
            raise ValueError(f"block_convs and full_res_convs must be >= 0, got {self.block_convs}, "
                             f"{self.full_res_convs}")
        if self.upsample not in UPSAMPLES:
            raise ValueError(f"upsample must be one of {UPSAMPLES}, got {self.upsample!r}")
        if self.residual and not (self.in_channels >= self.out_channels or self.in_channels == 1):
            raise ValueError(
                f"a residual generator adds its input to its output: it needs in_channels >= out_channels "
                f"or a single input channel, got {self.in_channels} -> {self.out_channels}"
            )

    # ---------------------------------------------------------------- geometry, per spatial axis (Y, X)
    @property
    def spatial_dims(self) -> int:
        """Number of spatial axes the network convolves (2: Y, X)."""
        return 2

    @property
    def size_multiple(self) -> tuple[int, ...]:
        """Per spatial axis, the multiple every input size must be (the network halves it `levels` times)."""
        return (2**self.levels,) * self.spatial_dims

    @property
    def multiple(self) -> int:
        """The largest of :attr:`size_multiple` (every axis of a 2D network: ``2**levels``)."""
        return max(self.size_multiple)

    @property
    def halo(self) -> tuple[int, ...]:
        """Per axis, pixels to crop from each side of an output tile: half the size multiple.

        bioimage.io consumers pad an input by the halo on each side before running the network,
        so twice the halo must be a multiple of the size multiple for padded sizes to stay on
        the network's grid; the smallest tile is then twice the size multiple. The theoretical
        :attr:`receptive_field` is far larger than what matters in practice.
        """
        return tuple(m // 2 for m in self.size_multiple)

    @property
    def receptive_field(self) -> tuple[int, ...]:
        """Per axis, the theoretical receptive field (pixels) of the output pixels.

        The input interval each output pixel depends on, traced back through every layer and
        skip connection (4x4 stride-2 convolutions, their transposes, extra 3x3 convolutions,
        the full-resolution stem and tail); the widest over the output positions of one size
        multiple.
        """
        return tuple(_receptive_field_1d(self.levels, self.block_convs, self.full_res_convs, m, self.upsample)
                     for m in self.size_multiple)

    @property
    def n_dropout(self) -> int:
        """Number of decoder blocks (from the innermost outwards) that use dropout."""
        if self.dropout == 0:
            return 0
        if self.dropout_blocks is not None:
            return max(0, min(self.dropout_blocks, self.levels - 2))
        return max(0, self.levels - 5)

    def widths(self) -> list[int]:
        """Channels produced by each encoder level, outermost first."""
        return [self.ngf * min(2**i, 8) for i in range(self.levels)]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for model files."""
        return asdict(self)

    @property
    def is_paper(self) -> bool:
        """True for the paper's topology (no extra convolutions, Tanh output)."""
        return self.block_convs == 0 and not self.residual and self.full_res_convs == 0 and self.upsample == "transpose"


def _receptive_field_1d(n: int, k: int, kf: int, multiple: int, upsample: str = "transpose") -> int:
    """Receptive field along one axis of a U-Net with `n` levels, `k` extra convs per level, `kf` at full size."""

    def stem(a: int, b: int) -> tuple[int, int]:  # full-resolution 3x3 convolutions before level 0
        return a - kf, b + kf

    def down(i: int, a: int, b: int) -> tuple[int, int]:  # encoder level i over [a, b] -> input pixels
        if i < n - 1:
            a, b = a - k, b + k  # extra 3x3 convolutions
        a, b = 2 * a - 1, 2 * b + 2  # 4x4 stride-2 convolution, padding 1
        return stem(a, b) if i == 0 else down(i - 1, a, b)

    def transposed(a: int, b: int) -> tuple[int, int]:  # the 2x upsampling layer: output [a, b] -> input
        if upsample == "resize":  # nearest 2x, then a 3x3 convolution (padding 1)
            return (a - 1) // 2, (b + 1) // 2
        return -((2 - a) // 2), (b + 1) // 2  # 4x4 stride-2 transposed convolution, padding 1

    def up(j: int, a: int, b: int) -> tuple[int, int]:  # decoder block j over [a, b] -> input pixels
        a, b = transposed(a - k, b + k)
        if j == 0:
            return down(n - 1, a, b)
        d, u = down(n - 1 - j, a, b), up(j - 1, a, b)  # skip and deeper path
        return min(d[0], u[0]), max(d[1], u[1])

    widest = 0
    for o in range(multiple):
        lo, hi = o - kf, o + kf  # the tail's 3x3 convolutions (none without a full-resolution tail)
        a, b = transposed(lo, hi)  # the head, from the concatenation of level 0 and the decoder
        d, u = down(0, a, b), up(n - 2, a, b)
        ends = [d, u, stem(lo, hi)] if kf else [d, u]  # with a tail: also the stem's skip
        widest = max(widest, max(e[1] for e in ends) - min(e[0] for e in ends) + 1)
    return widest


# Presets: one tiny factory each. `unet_256` and `unet_128` are the paper's networks; the
# others trade depth and width for speed on CPUs (numbers measured in benchmarks/).
PRESETS: dict[str, dict[str, Any]] = {
    "unet_256": {"levels": 8, "ngf": 64},  # paper, 54.4 M parameters, input multiple 256
    "unet_128": {"levels": 7, "ngf": 64},  # paper, 41.8 M parameters, input multiple 128
    "unet_small": {"levels": 7, "ngf": 32},  # CPU: ~10 M parameters, multiple 128
    "unet_tiny": {"levels": 6, "ngf": 16},  # CPU: ~2 M parameters, multiple 64
}


def preset_config(name: str, **overrides: Any) -> UNetConfig:
    """Return the :class:`UNetConfig` of preset `name`, with `overrides` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return UNetConfig(**{**PRESETS[name], **overrides})


def _extra_convs(width: int, n: int, act: Callable[[], nn.Module], norm: Callable[[int], nn.Module],
                 bias: bool) -> list[nn.Module]:
    """`n` times (activation, 3x3 conv, norm) at constant width: more capacity per level."""
    layers: list[nn.Module] = []
    for _ in range(n):
        layers += [act(), nn.Conv2d(width, width, 3, 1, 1, bias=bias), norm(width)]
    return layers


def norm_layer(name: str) -> Callable[[int], nn.Module]:
    """Map a norm name to a layer factory; all of them use running statistics in eval."""
    if name == "batch":
        return lambda c: nn.BatchNorm2d(c)
    if name == "instance":
        # running statistics so that tiles of one image see identical normalization
        return lambda c: nn.InstanceNorm2d(c, affine=True, track_running_stats=True)
    if name == "none":
        return lambda c: nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {name!r}")


class UNetGenerator(nn.Module):
    """Pix2Pix U-Net: ``levels`` encoder blocks, as many decoder blocks, a skip at each level.

    Parameters
    ----------
    config : UNetConfig
        Architecture; see :class:`UNetConfig`.

    Notes
    -----
    Inputs must have a height and width that are multiples of ``config.multiple``; the
    engine pads images to it (see :func:`napari_pix2pix.engine.predict`).
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        config = config if config is not None else UNetConfig()
        self.config = config
        norm = norm_layer(config.norm)
        bias = config.norm != "batch"  # as in the reference: no bias before batch norm
        w = config.widths()
        n = config.levels

        k = config.block_convs

        def lrelu() -> nn.Module:
            return nn.LeakyReLU(0.2, True)

        def relu() -> nn.Module:
            return nn.ReLU(True)

        def up2x(cin: int, cout: int, with_bias: bool) -> list[nn.Module]:  # doubles the size
            if config.upsample == "resize":
                return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=with_bias)]
            return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=with_bias)]

        # encoder: down[i] halves the size and produces w[i] channels
        f, kf = config.ngf, config.full_res_convs
        # optional full-resolution stem: kf 3x3 convs before the first halving
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, f, 3, 1, 1, bias=bias), norm(f),
                                  *_extra_convs(f, kf - 1, lrelu, norm, bias)) if kf else None
        first = [lrelu(), nn.Conv2d(f, w[0], 4, 2, 1, bias=bias)] if kf else [
            nn.Conv2d(config.in_channels, w[0], 4, 2, 1, bias=bias)]
        down: list[nn.Module] = [nn.Sequential(*first, *_extra_convs(w[0], k, lrelu, norm, bias))]
        for i in range(1, n - 1):
            down.append(
                nn.Sequential(
                    nn.LeakyReLU(0.2, True),
                    nn.Conv2d(w[i - 1], w[i], 4, 2, 1, bias=bias),
                    norm(w[i]),
                    *_extra_convs(w[i], k, lrelu, norm, bias),
                )
            )
        down.append(nn.Sequential(nn.LeakyReLU(0.2, True), nn.Conv2d(w[n - 2], w[n - 1], 4, 2, 1, bias=bias)))
        self.down = nn.ModuleList(down)

        # decoder, innermost first: up[j] turns level n-1-j features into level n-2-j ones
        up: list[nn.Module] = [
            nn.Sequential(nn.ReLU(True), *up2x(w[n - 1], w[n - 2], bias), norm(w[n - 2]),
                          *_extra_convs(w[n - 2], k, relu, norm, bias))
        ]
        for j in range(1, n - 1):
            lvl = n - 1 - j
            layers: list[nn.Module] = [
                nn.ReLU(True),
                *up2x(2 * w[lvl], w[lvl - 1], bias),
                norm(w[lvl - 1]),
                *_extra_convs(w[lvl - 1], k, relu, norm, bias),
            ]
            if j <= config.n_dropout:
                layers.append(nn.Dropout(config.dropout))
            up.append(nn.Sequential(*layers))
        out_act: list[nn.Module] = [] if config.residual else [nn.Tanh()]
        self.tail = None
        if kf:  # back to full resolution, then kf 3x3 convs on [stem features, upsampled features]
            up.append(nn.Sequential(nn.ReLU(True), *up2x(2 * w[0], f, bias), norm(f)))
            self.tail = nn.Sequential(nn.ReLU(True), nn.Conv2d(2 * f, f, 3, 1, 1, bias=bias), norm(f),
                                      *_extra_convs(f, kf - 1, relu, norm, bias), nn.ReLU(True),
                                      nn.Conv2d(f, config.out_channels, 1), *out_act)
        else:
            up.append(nn.Sequential(nn.ReLU(True), *up2x(2 * w[0], config.out_channels, True),
                                    *out_act))
        self.up = nn.ModuleList(up)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, in_channels, H, W) in [-1, 1] to (B, out_channels, H, W) (in [-1, 1] unless residual)."""
        inp = x
        if self.stem is not None:  # full-resolution features, (B, ngf, H, W)
            x = top = self.stem(x)
        skips = []
        for block in self.down:  # (B, w[i], H / 2**(i+1), W / 2**(i+1))
            x = block(x)
            skips.append(x)
        x = self.up[0](skips.pop())  # innermost: no concatenation
        for block in self.up[1:]:
            x = block(torch.cat([skips.pop(), x], dim=1))  # skip from the mirrored encoder level
        if self.tail is not None:
            x = self.tail(torch.cat([top, x], dim=1))  # full-resolution skip from the stem
        if self.config.residual:  # input image + learnt correction: (B, out_channels, H, W)
            cout = self.config.out_channels
            base = inp[:, :1].expand(-1, cout, -1, -1) if inp.shape[1] < cout else inp[:, :cout]
            x = base + x
        return x


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """Initialise as the paper: conv weights N(0, gain), norm weights N(1, gain), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


def reference_key_map(config: UNetConfig) -> dict[str, str]:
    """Map parameter prefixes of the reference implementation's UnetGenerator to ours.

    The reference (junyanz/pytorch-CycleGAN-and-pix2pix) nests one block in the next; its
    keys look like ``model.model.1.model.3.model.1.weight``. Returns ``{ref_prefix: our_prefix}``
    for every conv and norm layer.
    """
    n = config.levels

    def prefix(depth: int) -> str:
        if depth == 0:
            return "model.model."
        return "model.model.1.model." + "3.model." * (depth - 1)

    out = {prefix(0) + "0.": "down.0.0.", prefix(0) + "3.": f"up.{n - 1}.1."}
    for d in range(1, n - 1):  # middle blocks
        out[prefix(d) + "1."] = f"down.{d}.1."
        out[prefix(d) + "2."] = f"down.{d}.2."
        out[prefix(d) + "5."] = f"up.{n - 1 - d}.1."
        out[prefix(d) + "6."] = f"up.{n - 1 - d}.2."
    inner = prefix(n - 1)
    out[inner + "1."] = f"down.{n - 1}.1."
    out[inner + "3."] = "up.0.1."
    out[inner + "4."] = "up.0.2."
    return out


class ExportGenerator(UNetGenerator):
    """The generator as exported (bioimage.io, ONNX, TorchScript): built from plain JSON keyword arguments.

    Its parameters are those of :class:`UNetGenerator` (same state-dict keys). For inpainting
    it takes the image and the mask as two inputs and composes the network input itself, as
    the engine does: holes set to 0, plus a ``mask * 2 - 1`` channel; pixels outside the
    mask are returned unchanged. This file imports nothing but torch and the standard
    library, so a bioimage.io package can ship it as its architecture source.

    Parameters
    ----------
    inpaint : bool
        Take ``(image, mask)`` and keep the unmasked pixels.
    **config
        :class:`UNetConfig` fields (``in_channels``, ``out_channels``, ``levels``, ``ngf``, ...).
    """

    def __init__(self, inpaint: bool = False, **config: Any) -> None:
        super().__init__(UNetConfig(**config))
        self.inpaint = inpaint

    def forward(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) network-range image (and (B, 1, H, W) mask, non-zero = fill) to (B, C_out, H, W)."""
        if not self.inpaint:
            return super().forward(image)
        if mask is None:
            raise ValueError("this inpainting generator takes two inputs: the image and the mask (non-zero = fill)")
        fill = mask != 0  # (B, 1, H, W)
        holes = torch.where(fill, torch.zeros_like(image), image)
        out = super().forward(torch.cat([holes, fill.to(image.dtype) * 2 - 1], dim=1))
        return torch.where(fill, out, image)  # every pixel outside the mask unchanged
