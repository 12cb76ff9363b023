"""Networks and losses: pure PyTorch, no numpy I/O, no napari."""

from .losses import GANLoss
from .patchgan import PatchGANConfig, PatchGANDiscriminator
from .unet import PRESETS, UNetConfig, UNetGenerator, preset_config, reference_key_map

__all__ = [
    "PRESETS",
    "GANLoss",
    "PatchGANConfig",
    "PatchGANDiscriminator",
    "UNetConfig",
    "UNetGenerator",
    "preset_config",
    "reference_key_map",
]
