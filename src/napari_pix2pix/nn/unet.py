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
LATER_DEFAULTS: dict[str, Any] = {"upsample": "transpose", "spatial_dims": 2, "z_levels": None,
                                  "z_kernel_levels": None}  # not in 0.1
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
    spatial_dims: int = 2  # 2: (Y, X) images; 3: (Z, Y, X) volumes, the same network with 3D layers
    z_levels: int | None = None  # 3D: how many of the levels (the finest ones) also halve Z; None = all. Z is
    # usually coarser and shorter than Y and X: its other levels keep Z (3x4x4 kernels, stride 1 in Z)
    z_kernel_levels: int | None = None  # 3D: how many of the finest levels read neighbouring planes; the coarser
    # ones (where most of the weights are) work plane by plane (1x4x4 and 1x3x3 kernels). None = all. Only for
    # levels that keep Z (z_levels); the full-resolution stem and tail always read neighbours

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
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 (images) or 3 (volumes), got {self.spatial_dims}")
        if self.z_levels is not None and (self.spatial_dims != 3 or not 0 <= self.z_levels <= self.levels):
            raise ValueError(f"z_levels ({self.z_levels}) is for 3D networks, between 0 and levels ({self.levels})")
        if self.z_kernel_levels is not None and (
                self.spatial_dims != 3 or not 0 <= self.z_kernel_levels <= self.levels
                or self.z_kernel_levels < (self.levels if self.z_levels is None else self.z_levels)):
            raise ValueError(f"z_kernel_levels ({self.z_kernel_levels}) is for 3D networks, between the levels that "
                             f"halve Z (z_levels) and levels ({self.levels})")
        if self.upsample not in UPSAMPLES:
            raise ValueError(f"upsample must be one of {UPSAMPLES}, got {self.upsample!r}")
        if self.residual and not (self.in_channels >= self.out_channels or self.in_channels == 1):
            raise ValueError(
                f"a residual generator adds its input to its output: it needs in_channels >= out_channels "
                f"or a single input channel, got {self.in_channels} -> {self.out_channels}"
            )

    # ---------------------------------------------------------------- geometry, per spatial axis ((Z,) Y, X)
    def halves(self, axis: int) -> list[bool]:
        """Per level, whether the level halves spatial `axis` (0 = Z of a 3D network)."""
        if self.spatial_dims == 3 and axis == 0:
            z = self.levels if self.z_levels is None else self.z_levels
            return [i < z for i in range(self.levels)]
        return [True] * self.levels

    def flat(self, axis: int) -> list[bool]:
        """Per level, whether its layers are 1 wide along spatial `axis` (Z levels beyond ``z_kernel_levels``)."""
        if self.spatial_dims == 3 and axis == 0 and self.z_kernel_levels is not None:
            return [i >= self.z_kernel_levels for i in range(self.levels)]
        return [False] * self.levels

    @property
    def size_multiple(self) -> tuple[int, ...]:
        """Per spatial axis, the multiple every input size must be (2 to the number of its halvings)."""
        return tuple(2 ** sum(self.halves(a)) for a in range(self.spatial_dims))

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
        return tuple(_receptive_field_1d(self.levels, self.block_convs, self.full_res_convs, m, self.upsample,
                                         self.halves(a), self.flat(a)) for a, m in enumerate(self.size_multiple))

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
        """Plain-JSON form for model files.

        Fields added after napari-pix2pix 0.1 are left out at their defaults, so that a 2D
        model file stays readable by 0.1 (which refuses keys it does not know).
        """
        d = asdict(self)
        for key, default in LATER_DEFAULTS.items():
            if d.get(key) == default:
                del d[key]
        return d

    @property
    def is_paper(self) -> bool:
        """True for the paper's topology (no extra convolutions, Tanh output)."""
        return self.block_convs == 0 and not self.residual and self.full_res_convs == 0 and self.upsample == "transpose"


def _receptive_field_1d(n: int, k: int, kf: int, multiple: int, upsample: str = "transpose",
                        halves: list[bool] | None = None, flat: list[bool] | None = None) -> int:
    """Receptive field along one axis of a U-Net with `n` levels, `k` extra convs per level, `kf` at full size.

    `halves[i]`: whether level i halves this axis (else its 4x4 stride-2 layers are 3-wide, stride 1 here);
    `flat[i]`: whether level i's layers are 1 wide along this axis (they add nothing to the field).
    """
    halves = halves if halves is not None else [True] * n
    flat = flat if flat is not None else [False] * n

    def stem(a: int, b: int) -> tuple[int, int]:  # full-resolution 3x3 convolutions before level 0
        return a - kf, b + kf

    def down(i: int, a: int, b: int) -> tuple[int, int]:  # encoder level i over [a, b] -> input pixels
        reach = 0 if flat[i] else 1
        if i < n - 1:
            a, b = a - k * reach, b + k * reach  # extra 3x3 convolutions
        # 4x4 stride-2 convolution, padding 1 (3-wide, stride 1, padding 1 where this axis is kept)
        a, b = (2 * a - 1, 2 * b + 2) if halves[i] else (a - reach, b + reach)
        return stem(a, b) if i == 0 else down(i - 1, a, b)

    def transposed(a: int, b: int, level: int = 0) -> tuple[int, int]:  # the upsampling layer undoing `level`
        if not halves[level]:  # 3-wide (1-wide where flat), stride 1: output [a, b] depends on [a - 1, b + 1]
            reach = 0 if flat[level] else 1
            return a - reach, b + reach
        if upsample == "resize":  # nearest 2x, then a 3x3 convolution (padding 1)
            return (a - 1) // 2, (b + 1) // 2
        return -((2 - a) // 2), (b + 1) // 2  # 4x4 stride-2 transposed convolution, padding 1

    def up(j: int, a: int, b: int) -> tuple[int, int]:  # decoder block j over [a, b] -> input pixels
        reach = 0 if flat[n - 1 - j] else 1  # every layer of the block that undoes level n - 1 - j
        a, b = transposed(a - k * reach, b + k * reach, n - 1 - j)
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
    # 3D (Z, Y, X): Z is halved at the finest z_levels levels only (stacks are short and coarse in Z)
    "unet3d_tiny": {"spatial_dims": 3, "levels": 4, "z_levels": 2, "ngf": 16},  # multiple (4, 16, 16)
    "unet3d_small": {"spatial_dims": 3, "levels": 5, "z_levels": 3, "ngf": 24},  # multiple (8, 32, 32)
}
PRESETS_3D = tuple(name for name, p in PRESETS.items() if p.get("spatial_dims") == 3)


def preset_config(name: str, **overrides: Any) -> UNetConfig:
    """Return the :class:`UNetConfig` of preset `name`, with `overrides` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return UNetConfig(**{**PRESETS[name], **overrides})


CONV = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _extra_convs(width: int, n: int, act: Callable[[], nn.Module], norm: Callable[[int], nn.Module],
                 bias: bool, dims: int = 2, flat: bool = False) -> list[nn.Module]:
    """`n` times (activation, 3x3 conv, norm) at constant width: more capacity per level (`flat`: 1x3x3)."""
    kernel: Any = (1, 3, 3) if flat else 3
    pad: Any = (0, 1, 1) if flat else 1
    layers: list[nn.Module] = []
    for _ in range(n):
        layers += [act(), CONV[dims](width, width, kernel, 1, pad, bias=bias), norm(width)]
    return layers


def norm_layer(name: str, dims: int = 2) -> Callable[[int], nn.Module]:
    """Map a norm name to a layer factory (2D or 3D); all of them use running statistics in eval."""
    if name == "batch":
        batch = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        return lambda c: batch(c)
    if name == "instance":
        # running statistics so that tiles of one image see identical normalization
        inst = nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d
        return lambda c: inst(c, affine=True, track_running_stats=True)
    if name == "none":
        return lambda c: nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {name!r}")


def _level_geometry(config: UNetConfig, level: int) -> tuple[Any, Any, Any]:
    """(kernel, stride, padding) of the layers that halve the size at `level` (and their transposes)."""
    if config.spatial_dims == 2:
        return 4, 2, 1
    if config.flat(0)[level]:  # plane by plane at this level
        return (1, 4, 4), (1, 2, 2), (0, 1, 1)
    z = config.halves(0)[level]
    return (4 if z else 3, 4, 4), (2 if z else 1, 2, 2), 1


class UNetGenerator(nn.Module):
    """Pix2Pix U-Net: ``levels`` encoder blocks, as many decoder blocks, a skip at each level.

    Parameters
    ----------
    config : UNetConfig
        Architecture; see :class:`UNetConfig`.

    Notes
    -----
    Inputs must have sizes that are multiples of ``config.size_multiple`` (per axis); the
    engine pads images to it (see :func:`napari_pix2pix.engine.predict.tiled`). With
    ``spatial_dims=3`` every layer is its 3D counterpart and the network maps volumes.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        config = config if config is not None else UNetConfig()
        self.config = config
        dims = config.spatial_dims
        norm = norm_layer(config.norm, dims)
        bias = config.norm != "batch"  # as in the reference: no bias before batch norm
        w = config.widths()
        n = config.levels
        conv = CONV[dims]

        k = config.block_convs

        def halve(cin: int, cout: int, level: int, with_bias: bool) -> nn.Module:  # halves the size at `level`
            kernel, stride, pad = _level_geometry(config, level)
            return conv(cin, cout, kernel, stride, pad, bias=with_bias)

        def extra(width: int, count: int, act: Callable[[], nn.Module], level: int | None = None) -> list[nn.Module]:
            return _extra_convs(width, count, act, norm, bias, dims, level is not None and config.flat(0)[level])

        def lrelu() -> nn.Module:
            return nn.LeakyReLU(0.2, True)

        def relu() -> nn.Module:
            return nn.ReLU(True)

        def up2x(cin: int, cout: int, level: int, with_bias: bool) -> list[nn.Module]:  # undoes `level`'s halving
            kernel, stride, pad = _level_geometry(config, level)
            if config.upsample == "resize":
                factor = stride if isinstance(stride, int) else tuple(float(s) for s in stride)
                narrow = dims == 3 and config.flat(0)[level]
                k3: Any = (1, 3, 3) if narrow else 3
                p3: Any = (0, 1, 1) if narrow else 1
                return [nn.Upsample(scale_factor=factor, mode="nearest"), conv(cin, cout, k3, 1, p3, bias=with_bias)]
            return [CONV_T[dims](cin, cout, kernel, stride, pad, bias=with_bias)]

        # encoder: down[i] halves the size and produces w[i] channels
        f, kf = config.ngf, config.full_res_convs
        # optional full-resolution stem: kf 3x3 convs before the first halving
        self.stem = nn.Sequential(conv(config.in_channels, f, 3, 1, 1, bias=bias), norm(f),
                                  *extra(f, kf - 1, lrelu)) if kf else None
        first = [lrelu(), halve(f, w[0], 0, bias)] if kf else [halve(config.in_channels, w[0], 0, bias)]
        down: list[nn.Module] = [nn.Sequential(*first, *extra(w[0], k, lrelu, 0))]
        for i in range(1, n - 1):
            down.append(nn.Sequential(nn.LeakyReLU(0.2, True), halve(w[i - 1], w[i], i, bias), norm(w[i]),
                                      *extra(w[i], k, lrelu, i)))
        down.append(nn.Sequential(nn.LeakyReLU(0.2, True), halve(w[n - 2], w[n - 1], n - 1, bias)))
        self.down = nn.ModuleList(down)

        # decoder, innermost first: up[j] turns level n-1-j features into level n-2-j ones
        up: list[nn.Module] = [
            nn.Sequential(nn.ReLU(True), *up2x(w[n - 1], w[n - 2], n - 1, bias), norm(w[n - 2]),
                          *extra(w[n - 2], k, relu, n - 1))
        ]
        for j in range(1, n - 1):
            lvl = n - 1 - j
            layers: list[nn.Module] = [nn.ReLU(True), *up2x(2 * w[lvl], w[lvl - 1], lvl, bias), norm(w[lvl - 1]),
                                       *extra(w[lvl - 1], k, relu, lvl)]
            if j <= config.n_dropout:
                layers.append(nn.Dropout(config.dropout))
            up.append(nn.Sequential(*layers))
        out_act: list[nn.Module] = [] if config.residual else [nn.Tanh()]
        self.tail = None
        if kf:  # back to full resolution, then kf 3x3 convs on [stem features, upsampled features]
            up.append(nn.Sequential(nn.ReLU(True), *up2x(2 * w[0], f, 0, bias), norm(f)))
            self.tail = nn.Sequential(nn.ReLU(True), conv(2 * f, f, 3, 1, 1, bias=bias), norm(f),
                                      *extra(f, kf - 1, relu), nn.ReLU(True),
                                      conv(f, config.out_channels, 1), *out_act)
        else:
            up.append(nn.Sequential(nn.ReLU(True), *up2x(2 * w[0], config.out_channels, 0, True), *out_act))
        self.up = nn.ModuleList(up)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, in_channels, [Z,] H, W) in [-1, 1] to (B, out_channels, [Z,] H, W) (in [-1, 1] unless residual)."""
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
            base = inp[:, :1].expand(-1, cout, *inp.shape[2:]) if inp.shape[1] < cout else inp[:, :cout]
            x = base + x
        return x


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """Initialise as the paper: conv weights N(0, gain), norm weights N(1, gain), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.BatchNorm3d, nn.InstanceNorm3d)) and m.weight \
                is not None:
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
