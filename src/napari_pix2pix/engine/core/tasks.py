"""Tasks: how raw images become network input and how the output is composed.

======== ===================================== ============================================
task     network input                         output
======== ===================================== ============================================
denoise  the image (C channels)                the restored image (C channels)
inpaint  image with holes set to 0, + the mask the image; only masked pixels replaced
colorize grayscale (1 channel)                 RGB (3 channels, last axis)
translate any C_in channels                    any C_out channels
======== ===================================== ============================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TASKS = ("denoise", "inpaint", "colorize", "translate")


@dataclass(frozen=True)
class Task:
    """A task's rules for channels and composition."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in TASKS:
            raise ValueError(f"unknown task {self.name!r}; choose one of {TASKS}")

    @property
    def needs_mask(self) -> bool:
        """Inpainting takes a mask of the pixels to fill."""
        return self.name == "inpaint"

    def network_channels(self, image_channels: int, output_channels: int | None = None) -> tuple[int, int]:
        """(in, out) channels of a generator for images with `image_channels` channels."""
        if self.name == "colorize":
            return 1, 3
        if self.name == "inpaint":
            return image_channels + 1, image_channels
        if self.name == "denoise":
            return image_channels, image_channels
        return image_channels, output_channels if output_channels is not None else image_channels

    def image_channels(self, in_channels: int) -> int:
        """Channels of the image a generator with `in_channels` inputs takes."""
        return in_channels - 1 if self.name == "inpaint" else in_channels

    def compose_input(self, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """Network input from a normalized batch (B, C, H, W) and mask (B, H, W) (inpaint)."""
        if self.name != "inpaint":
            return x
        if mask is None:
            raise ValueError("inpainting needs a mask: non-zero where pixels are to be filled")
        m = mask.astype(np.float32)[:, None]
        holes = np.where(m > 0, np.float32(0), x)  # NaN and garbage in holes never reach the net
        return np.concatenate([holes, m * 2 - 1], axis=1).astype(np.float32, copy=False)


def get_task(name: str | Task) -> Task:
    """Return the :class:`Task` called `name`."""
    return name if isinstance(name, Task) else Task(str(name))
