"""`Network`: a generator with its task, normalization and provenance — what every room of the engine works on.

Prediction, uncertainty, validation, exports and training take a :class:`Network` (the
generator and the few facts needed to feed it and read its output); they never see the
front door, :class:`~napari_pix2pix.engine.model.Pix2PixModel`, which adds files and
one-line hand-offs (``predict``, ``export``, ``uncertainty``) on top of it.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import torch

from ..._version import __version__
from ...nn import UNetConfig, UNetGenerator, preset_config
from ...nn.unet import PRESETS
from .normalization import Normalization
from .tasks import Task, get_task


class Network:
    """A Pix2Pix generator that knows its task, its normalization and where it came from.

    Parameters
    ----------
    task : {"denoise", "inpaint", "colorize", "translate"}
        What the model does; decides how inputs and outputs are composed.
    preset : str
        Architecture preset: ``"unet_256"`` (the paper's), ``"unet_128"``, or the CPU
        presets ``"unet_small"`` and ``"unet_tiny"`` (3D: ``"unet3d_tiny"``, ``"unet3d_small"``).
    channels : int
        Channels of the images the model takes (colorize: always 1).
    out_channels : int, optional
        Output channels for ``translate`` (default: `channels`).
    config : UNetConfig, optional
        Full architecture; overrides `preset`, `channels` and `out_channels`.
    normalization : Normalization, optional
        Intensity normalization (percentiles; outputs on the input's scale by default).
    name : str, optional
        Human-readable name stored in the file.
    z_context : int
        2.5D: the network sees each plane with this many neighbours on either side (as channels).
    generator : UNetGenerator, optional
        An existing generator to hold (not copied); its config is the architecture.
    **overrides
        UNetConfig fields applied on top of the preset (``ngf=32``, ``levels=6``, ...).
    """

    def __init__(
        self,
        task: str = "denoise",
        preset: str = "unet_256",
        *,
        channels: int = 1,
        out_channels: int | None = None,
        config: UNetConfig | None = None,
        normalization: Normalization | None = None,
        name: str | None = None,
        z_context: int = 0,
        generator: UNetGenerator | None = None,
        **overrides: Any,
    ) -> None:
        self.task: Task = get_task(task)
        if generator is not None:  # an existing network (its own config), not a new one
            config = generator.config
        if z_context < 0:
            raise ValueError(f"z_context must be >= 0, got {z_context}")
        if config is None:
            cin, cout = self.task.network_channels(channels, out_channels)
            cin += 2 * z_context * self.task.image_channels(cin)  # the neighbouring planes, as channels
            config = preset_config(preset, in_channels=cin, out_channels=cout, **overrides)
        elif not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}")
        self.config: UNetConfig = config
        if z_context and config.spatial_dims != 2:
            raise ValueError("z_context (2.5D) is for 2D networks; a 3D network convolves Z itself")
        self.z_context = int(z_context)  # 2.5D: the network sees each plane with k neighbours on either side
        self.preset = preset if preset in PRESETS else "custom"
        self.generator: UNetGenerator = generator if generator is not None else UNetGenerator(config).eval()
        self.normalization = normalization or Normalization()
        self.name = name or f"{self.task.name}-{self.preset}"
        self.training_summary: dict[str, Any] = {}  # written by the trainer; the file's "training" entry
        self.card: dict[str, Any] = {}  # free-form model card (data, licence, limits)
        self.source: str | None = None  # where it was loaded from

    @property
    def metadata(self) -> dict[str, Any]:
        """Everything stored beside the weights (JSON-serialisable)."""
        return {
            "name": self.name,
            "task": self.task.name,
            "preset": self.preset,
            "architecture": {"type": "unet", **self.config.to_dict()},
            **({"z_context": self.z_context} if self.z_context else {}),  # 2D files as 0.1 wrote them
            "normalization": self.normalization.to_dict(),
            "training": self.training_summary,
            "card": self.card,
            "package_version": __version__,
            "torch_version": torch.__version__,
            "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    @property
    def spatial_dims(self) -> int:
        """2: the model restores images (a stack plane by plane, or 2.5D with `z_context`); 3: volumes."""
        return self.config.spatial_dims

    @property
    def training_settings(self) -> dict[str, Any]:
        """The options the network was trained with, by name: as given, overlaid with what the run decided.

        Its training summary keeps them apart (``config``: as given, None meaning "auto" or "from
        the recipe"; ``plan``: what the run decided); files written before 0.3 keep only the
        decided ``config``. Empty for a network that was not trained by napari-pix2pix.
        """
        tr = self.training_summary or {}
        given, plan = tr.get("config"), tr.get("plan")
        return {**(given if isinstance(given, dict) else {}), **(plan if isinstance(plan, dict) else {})}

    def own_channels(self) -> int:
        """Image channels of one plane the network reads (2.5D: without its neighbours; no mask)."""
        return self.task.image_channels(self.config.in_channels) // (2 * self.z_context + 1)

    def __repr__(self) -> str:
        c = self.config
        dims = ", spatial_dims=3" if c.spatial_dims == 3 else ""
        dims += f", z_context={self.z_context}" if self.z_context else ""
        return (
            f"{type(self).__name__}(task={self.task.name!r}, preset={self.preset!r}, in={c.in_channels}, "
            f"out={c.out_channels}, levels={c.levels}, ngf={c.ngf}{dims}, name={self.name!r})"
        )

    def copy_as(self, config: UNetConfig | None = None, *, normalization: Normalization | None = None,
                z_context: int | None = None) -> Network:
        """A new network of this task and provenance (card, source, summary copied), with another architecture.

        The weights are not copied (the caller fills them); with no changes given the architecture,
        normalization and z context are this network's.
        """
        out = Network(self.task.name, self.preset, config=config or self.config,
                      normalization=normalization or self.normalization, name=self.name,
                      z_context=self.z_context if z_context is None else z_context)
        out.card, out.source, out.training_summary = dict(self.card), self.source, dict(self.training_summary)
        return out
