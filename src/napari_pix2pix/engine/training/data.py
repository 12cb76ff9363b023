"""Paired training data: arrays, folders, aligned A|B files, or pairs synthesized from clean images.

Images are split into 2D planes (C, H, W) with their own normalization, a validation part
is held out (whole images or a band of each image), and random patches with flips and
90° rotations are drawn identically from both sides.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.normalization import Normalization, plane_percentiles, safe_range, to_network
from ..core.tasks import Task, get_task
from ..images.io import list_images, read_image
from ..images.synthesis import NoiseConfig, add_noise, random_mask, random_mask_3d, to_gray
from ..predict.tiling import context_order


@dataclass
class Plane:
    """One 2D training image: input and target (C, H, W) float32 and their intensity ranges."""

    input: np.ndarray
    target: np.ndarray
    in_range: tuple[float, float]
    tgt_range: tuple[float, float]
    name: str = ""
    context: int = 0  # a held-out slab of a volume: its first planes (Z) are context for the network, not scored


def _planes(arr: np.ndarray, channel_axis: int | None, dims: int = 2) -> list[np.ndarray]:
    """Split an array into (C, H, W) planes (or (C, Z, H, W) volumes): the last `dims` non-channel axes."""
    a = np.asarray(arr)
    if a.size == 0:
        raise ValueError(f"an image is empty (shape {a.shape})")
    if channel_axis is None:
        a = np.expand_dims(a, a.ndim - dims)
    else:
        ca = channel_axis % a.ndim
        if a.ndim - 1 < dims:
            raise ValueError(f"image of shape {a.shape} has fewer than {dims} spatial axes besides channel_axis")
        a = np.moveaxis(a, ca, -dims - 1)
    if a.ndim < dims + 1:
        what = "2 spatial axes" if dims == 2 else "3 spatial axes (Z, Y, X): a 3D model trains on volumes"
        raise ValueError(f"image of shape {np.shape(arr)} has fewer than {what}")
    return list(a.reshape(-1, *a.shape[-dims - 1:]))


def _context_planes(arr: np.ndarray, channel_axis: int | None, k: int) -> list[np.ndarray]:
    """2.5D: (C * (2k+1), H, W) planes, each with its 2k neighbours along Z (the axis before Y) as channels.

    The plane itself comes first, then z-k ... z-1, z+1 ... z+k (reflected at the first and
    last planes): the first channels are the plane's own, as a residual generator needs them.
    """
    vols = _planes(arr, channel_axis, 3)  # (C, Z, H, W)
    out = []
    for v in vols:
        n = v.shape[1]
        for z in range(n):
            order = context_order(z, n, k)
            out.append(np.concatenate([v[:, q] for q in order], axis=0))
    return out


def _centre(arr: np.ndarray, channel_axis: int | None) -> list[np.ndarray]:
    """The targets of 2.5D training: every plane of the volumes, (C, H, W)."""
    return [p for v in _planes(arr, channel_axis, 3) for p in np.moveaxis(v, 1, 0)]


def _range(plane: np.ndarray, norm: Normalization, what: str) -> tuple[float, float]:
    flat = np.moveaxis(plane, 0, -1)  # (H, W, C) or (Z, H, W, C): rows first, the rest pooled
    try:
        lo, hi = plane_percentiles(lambda y0, y1: flat[y0:y1], flat.shape[0], plane.dtype, (norm.low, norm.high))
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from e
    return safe_range(lo, hi)


@dataclass
class PairedData:
    """Training pairs as planes, with the task's normalization; see :func:`make_data`."""

    task: Task
    planes: list[Plane]
    normalization: Normalization
    synth: NoiseConfig | None = None  # denoise: noise drawn per patch
    synthesize: bool = False  # pairs made on the fly from clean targets
    val: list[Plane] = field(default_factory=list)
    intensity: float = 0.0  # augmentation: random gains up to exp(±intensity) (and offsets) in network units
    dims: int = 2  # 2: planes (C, H, W); 3: volumes (C, Z, H, W)
    z_context: int = 0  # 2.5D: each input plane carries its 2k neighbours as channels (its own first)
    self_supervised: bool = False  # noisy images alone: each plane is its own target (noise2self)

    @property
    def channels(self) -> tuple[int, int]:
        """(image channels, target channels)."""
        p = self.planes[0]
        return p.input.shape[0], p.target.shape[0]

    def min_size(self) -> tuple[int, ...]:
        """Smallest plane size along each spatial axis ((Z,) H, W)."""
        return tuple(min(p.input.shape[1 + a] for p in self.planes) for a in range(self.dims))

    # ------------------------------------------------------------------ sampling
    def sample(self, rng: np.random.Generator, patch: int | tuple[int, ...], augment: bool = True,
               planes: list[Plane] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One random normalized pair (input (C, *patch), target (C', *patch), mask (*patch) or None)."""
        planes = planes if planes is not None else self.planes
        p = planes[int(rng.integers(len(planes)))]
        if self.dims == 3:
            return self._sample_3d(rng, patch_shape(patch, 3), augment, p)
        patch = patch_shape(patch, 2)[0]
        _, h, w = p.input.shape
        y, x = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
        a = p.input[:, y : y + patch, x : x + patch]
        b = p.target[:, y : y + patch, x : x + patch]
        a, b, m = self.degrade(a, b, p, rng)
        if augment and self.intensity > 0:
            a, b = self._intensity(a, b, rng)
        if augment:
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            a, b = np.rot90(a, k, (1, 2)), np.rot90(b, k, (1, 2))
            m = np.rot90(m, k) if m is not None else None
            if flip:
                a, b = a[:, :, ::-1], b[:, :, ::-1]
                m = m[:, ::-1] if m is not None else None
        a = np.ascontiguousarray(a, np.float32)
        b = np.ascontiguousarray(b, np.float32)
        m = np.ascontiguousarray(m) if m is not None else None
        return a, b, m

    def _sample_3d(self, rng: np.random.Generator, patch: tuple[int, ...], augment: bool, p: Plane
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A random 3D patch; flips of every axis and 90-degree turns in (Y, X) (Z is usually coarser)."""
        starts = [int(rng.integers(0, n - q + 1)) for n, q in zip(p.input.shape[1:], patch, strict=True)]
        box = (slice(None), *(slice(s, s + q) for s, q in zip(starts, patch, strict=True)))
        a, b, m = self.degrade(p.input[box], p.target[box], p, rng)
        if augment and self.intensity > 0:
            a, b = self._intensity(a, b, rng)
        if augment:
            k = int(rng.integers(4)) if patch[1] == patch[2] else 2 * int(rng.integers(2))
            a, b = np.rot90(a, k, (2, 3)), np.rot90(b, k, (2, 3))
            m = np.rot90(m, k, (1, 2)) if m is not None else None
            for axis in (1, 2, 3):
                if rng.integers(2):
                    a, b = np.flip(a, axis), np.flip(b, axis)
                    m = np.flip(m, axis - 1) if m is not None else None
        return (np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32),
                np.ascontiguousarray(m) if m is not None else None)

    def _intensity(self, a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random affine change of the network values, as another plane's percentiles would give.

        The same change applies to the target when outputs go back to the input's scale (its
        normalization is the input's); with a fixed output range only the input changes.
        """
        gain = np.float32(np.exp(rng.uniform(-self.intensity, self.intensity)))
        shift = np.float32(rng.uniform(-0.25, 0.25) * self.intensity)
        a = (a + np.float32(0.8)) * gain - np.float32(0.8) + shift
        if self.normalization.output != "fixed":
            b = (b + np.float32(0.8)) * gain - np.float32(0.8) + shift
        return a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)

    def degrade(self, a: np.ndarray, b: np.ndarray, p: Plane, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Normalize a raw crop pair (synthesizing the input if needed) and return its mask."""
        task = self.task.name
        mask = None
        if self.synthesize and task == "denoise":
            params = (self.synth or NoiseConfig()).draw(rng)
            noisy = add_noise(b, params, rng)
            # whole-plane percentiles of the noisy image, estimated on a pixel subsample
            flat = p.target.reshape(p.target.shape[0], -1)
            idx = rng.integers(0, flat.shape[1], min(flat.shape[1], 20000))
            sample = add_noise(flat[:, idx], params, rng)
            lo, hi = safe_range(*np.percentile(sample, (self.normalization.low, self.normalization.high)))
            return to_network(noisy, lo, hi), to_network(b, lo, hi), None
        if task == "inpaint":
            mask = (random_mask(a.shape[1:], rng) if a.ndim == 3 else random_mask_3d(a.shape[1:], rng)) \
                if self.synthesize else None
            if mask is None:
                raise ValueError("inpaint training needs synthesized masks (pairs from clean images)")
            lo, hi = p.in_range
            return to_network(b, lo, hi), to_network(b, lo, hi), mask
        if self.synthesize and task == "colorize":
            lo, hi = p.in_range
            return to_network(to_gray(b), lo, hi), to_network(b, lo, hi), None
        norm = self.normalization  # as prediction will normalize; targets on the scale outputs go back to
        lo, hi = (norm.in_lo, norm.in_hi) if norm.input == "fixed" else p.in_range
        tlo, thi = (norm.out_lo, norm.out_hi) if norm.output == "fixed" else (lo, hi)
        return to_network(a, lo, hi), to_network(b, tlo, thi), None


def _spatial_shape(x: np.ndarray, channel_axis: int | None) -> tuple[int, ...]:
    if channel_axis is None:
        return tuple(x.shape)
    ca = channel_axis % x.ndim
    return tuple(s for i, s in enumerate(x.shape) if i != ca)


def patch_shape(patch: int | tuple[int, ...] | list[int], dims: int) -> tuple[int, ...]:
    """A patch size per spatial axis: an int is a square (or cube); a tuple gives (z,) y, x."""
    if isinstance(patch, (tuple, list)):
        if len(patch) != dims:
            raise ValueError(f"patch_size {tuple(patch)} gives {len(patch)} sizes; {dims}D training needs {dims}")
        return tuple(int(v) for v in patch)
    return (int(patch),) * dims


def _check_pair(a: np.ndarray, b: np.ndarray, what: str, a_channels: int | None, b_channels: int | None,
                dims: int = 2) -> None:
    """Input and target must match pixel for pixel (their channels may differ); volumes in Z too."""
    if _spatial_shape(a, a_channels)[-dims:] != _spatial_shape(b, b_channels)[-dims:]:
        raise ValueError(
            f"{what}: input {a.shape} and target {b.shape} differ in shape; paired images must match"
        )


def pair_folders(input_dir: str | os.PathLike[str], target_dir: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """Pair files of two folders by name (suffix ignored); list every problem before failing.

    Raises
    ------
    ValueError
        Naming every unpaired file, or if a folder holds no images.
    """
    a = {p.stem: p for p in list_images(input_dir)}
    b = {p.stem: p for p in list_images(target_dir)}
    if not a:
        raise ValueError(f"input folder {str(input_dir)!r} holds no TIFF/PNG/JPEG images")
    if not b:
        raise ValueError(f"target folder {str(target_dir)!r} holds no TIFF/PNG/JPEG images")
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        lines = []
        if only_a:
            lines.append(f"in {input_dir} only: " + ", ".join(a[k].name for k in only_a))
        if only_b:
            lines.append(f"in {target_dir} only: " + ", ".join(b[k].name for k in only_b))
        raise ValueError("input and target folders are not paired by file name:\n  " + "\n  ".join(lines))
    return [(a[k], b[k]) for k in sorted(a)]


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def make_data(
    task: str | Task,
    *,
    input: Any = None,
    target: Any = None,
    clean: Any = None,
    input_dir: str | os.PathLike[str] | None = None,
    target_dir: str | os.PathLike[str] | None = None,
    clean_dir: str | os.PathLike[str] | None = None,
    aligned_dir: str | os.PathLike[str] | None = None,
    channel_axis: int | None = None,
    normalization: Normalization | None = None,
    noise: NoiseConfig | None = None,
    val_fraction: float = 0.1,
    val_split: str = "image",
    patch_size: int | tuple[int, ...] = 256,
    seed: int = 0,
    dims: int = 2,
    z_context: int = 0,
) -> PairedData:
    """Collect training pairs from exactly one kind of source and hold out a validation part.

    Parameters
    ----------
    task : str
        "denoise", "inpaint", "colorize" or "translate".
    input, target : array or list of arrays
        Paired arrays of equal shape (2D, stacks, channels via `channel_axis`); a denoiser's noisy
        `input` alone (no `target`): each image is its own target (self-supervised, noise2self).
    clean, clean_dir : array or list of arrays, or a folder
        Clean images (or a folder of them) to synthesize pairs from (denoise, inpaint, colorize).
    input_dir, target_dir : path
        Folders paired by file name (TIFF, 16-bit and multi-page too, PNG, JPEG); or `input_dir` alone.
    aligned_dir : path
        Folder of the reference implementation's aligned A|B images (side by side).
    channel_axis : int, optional
        Channel axis of the arrays/files (RGB files are read channel-last: use -1).
    normalization : Normalization, optional
        Percentiles (default 0.5 and 99.9).
    noise : NoiseConfig, optional
        Denoise synthesis: the noise to draw (default: Gaussian and Poisson-Gaussian ranges).
    val_fraction : float
        Share held out for validation (0 disables validation).
    val_split : {"image", "region"}
        Hold out whole images, or the last rows of every image (the last planes of a volume too
        short in Y for a patch-high strip; see :func:`_split_validation`).
    patch_size : int or tuple
        Training patch side (a square; for volumes a cube or (z, y, x)); every image must be at
        least this large.
    seed : int
        Seed for the split.
    dims : {2, 3}
        2: the data are split into planes (Y, X); 3: into volumes (Z, Y, X): the last three
        non-channel axes, the axis before Y being Z.
    z_context : int
        2.5D (with ``dims=2``): every plane carries its k neighbours on either side along Z as
        channels (reflected at the first and last planes).

    Returns
    -------
    PairedData
    """
    task = get_task(task)
    norm = normalization or Normalization()
    if val_split not in ("image", "region"):
        raise ValueError(f"val_split must be 'image' or 'region', got {val_split!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    alone = (input is not None and target is None) or (input_dir is not None and target_dir is None)
    if alone and task.name != "denoise":
        raise ValueError(f"{task.name} needs a target for every input (target= or target_dir=); only a denoiser "
                         "learns from noisy images alone")
    if alone:  # noisy images alone: each is its own target (the recipe masks or recorrupts it)
        target, target_dir = input, input_dir
    pairs, synthesize = _collect_pairs(task, input=input, target=target, clean=clean, input_dir=input_dir,
                                       target_dir=target_dir, clean_dir=clean_dir, aligned_dir=aligned_dir)
    if task.name == "inpaint" and not synthesize:
        raise ValueError("inpaint models are trained from clean images (clean= or clean_dir=): masks are synthesized")
    if dims not in (2, 3) or z_context < 0 or (z_context and dims != 2):
        raise ValueError(f"dims must be 2 or 3 and z_context (2.5D) >= 0 with 2D networks; got dims={dims}, "
                         f"z_context={z_context}")
    if z_context and synthesize:
        raise ValueError("2.5D (z_context) trains from real pairs of volumes (input= and target=, or folders)")
    from_file = clean_dir is not None or input_dir is not None or aligned_dir is not None
    if from_file and channel_axis is None and _hyperstack_channels(input_dir or clean_dir or aligned_dir):
        channel_axis = -1  # ImageJ/OME hyperstacks with a C axis are read with their channels last
    planes = [p for a, b, name in pairs for p in _pair_planes(task, a, b, name, channel_axis, norm, synthesize,
                                                              from_file, dims, z_context)]
    chans = {(p.input.shape[0], p.target.shape[0]) for p in planes}
    if len(chans) > 1:
        raise ValueError(f"all images must have the same channels; found (input, target) channels {sorted(chans)}")
    patch = patch_shape(patch_size, dims)
    check_patch(planes, patch, "")
    # 2.5D: a held-out plane's neighbours are other planes' targets; hold out rows of every plane instead
    planes, val = _split_validation(planes, val_fraction, "region" if z_context else val_split, patch, seed)
    data = PairedData(task, planes, norm, noise, synthesize, val, dims=dims, z_context=z_context,
                      self_supervised=alone)
    check_patch(data.planes, patch, " after the validation split")
    return data


Pairs = list[tuple[np.ndarray, np.ndarray, str]]


def _collect_pairs(task: Task, *, input: Any, target: Any, clean: Any, input_dir: Any, target_dir: Any,
                   clean_dir: Any, aligned_dir: Any) -> tuple[Pairs, bool]:
    """(input, target, name) pairs from exactly one source, and whether inputs are to be synthesized."""
    sources = [input is not None or target is not None, clean is not None,
               input_dir is not None or target_dir is not None, clean_dir is not None, aligned_dir is not None]
    if sum(sources) != 1:
        raise ValueError(
            "give exactly one data source: input= and target= arrays, clean= arrays, "
            "input_dir= and target_dir=, clean_dir=, or aligned_dir="
        )
    if clean is not None or clean_dir is not None:
        if task.name == "translate":
            raise ValueError("pairs cannot be synthesized for translate: give input and target images")
        imgs = [(c, f"clean image {i + 1}") for i, c in enumerate(_as_list(clean))] if clean is not None else [
            (read_image(p), p.name) for p in list_images(clean_dir)]
        if not imgs:
            raise ValueError(f"clean folder {str(clean_dir)!r} holds no TIFF/PNG/JPEG images")
        return [(c, c, n) for c, n in imgs], True
    if input_dir is not None or target_dir is not None:
        if input_dir is None or target_dir is None:
            raise ValueError("folder training needs both input_dir and target_dir")
        pairs = []
        for a, b in pair_folders(input_dir, target_dir):
            x = read_image(a)
            pairs.append((x, x if a == b else read_image(b), a.name))  # one folder alone: each file read once
        return pairs, False
    if aligned_dir is not None:
        return _aligned_pairs(aligned_dir), False
    ins, tgs = _as_list(input), _as_list(target)
    if len(ins) != len(tgs) or not ins:
        raise ValueError(f"give as many input as target arrays (got {len(ins)} inputs, {len(tgs)} targets)")
    return [(a, b, f"image pair {i + 1}" if len(ins) > 1 else "the image pair")
            for i, (a, b) in enumerate(zip(ins, tgs, strict=True))], False


def _aligned_pairs(aligned_dir: str | os.PathLike[str]) -> Pairs:
    """The reference implementation's A|B images, split down the middle."""
    files = list_images(aligned_dir)
    if not files:
        raise ValueError(f"aligned folder {str(aligned_dir)!r} holds no TIFF/PNG/JPEG images")
    pairs = []
    for f in files:
        ab = read_image(f)
        x_axis = 1 if ab.ndim == 3 and ab.shape[-1] in (3, 4) else ab.ndim - 1  # RGB: (H, W, 3)
        w = ab.shape[x_axis]
        if w % 2:
            raise ValueError(f"{f.name}: an aligned A|B image needs an even width, got {w}")
        left, right = np.split(ab, 2, axis=x_axis)
        pairs.append((left, right, f.name))
    return pairs


def _pair_planes(task: Task, a: Any, b: Any, name: str, channel_axis: int | None, norm: Normalization,
                 synthesize: bool, from_file: bool, dims: int = 2, z_context: int = 0) -> list[Plane]:
    """The planes (or volumes) of one pair, with their intensity ranges (clean images: scaled to about [0, 1])."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind not in "uif" or b.dtype.kind not in "uif":
        raise TypeError(f"{name}: images must be numeric arrays, got {a.dtype} and {b.dtype}")
    ca = channel_axis
    if ca is None and b.ndim == 3 and b.shape[-1] in (3, 4) and (task.name == "colorize" or from_file):
        ca = -1  # RGB (PNG/JPEG/RGB TIFF files are read colour-last)
    _check_pair(a, b, name, ca if a.ndim == b.ndim else None, ca, 3 if dims == 3 or z_context else 2)
    if z_context:  # 2.5D: inputs with their Z neighbours as channels, targets the planes themselves
        pa = _context_planes(a, ca if a.ndim == b.ndim else None, z_context)
        pb = _centre(b, ca)
    else:
        pa = _planes(a, ca if a.ndim == b.ndim else None, dims)
        pb = _planes(b, ca, dims)
    if len(pa) != len(pb):
        raise ValueError(f"{name}: input and target hold different numbers of planes ({len(pa)}, {len(pb)})")
    out = []
    for k, (x, y) in enumerate(zip(pa, pb, strict=True)):
        label = f"{name}, plane {k + 1} of {len(pa)}" if len(pa) > 1 else name
        if synthesize:
            if task.name == "colorize" and y.shape[0] not in (3, 4):
                raise ValueError(f"{label}: colorize needs RGB clean images (channel_axis=-1), "
                                 f"got {y.shape[0]} channel(s)")
            y = _clean01(y[:3] if task.name == "colorize" else y, norm, label)
            x = to_gray(y) if task.name == "colorize" else y
            r = _range(x, norm, label)
            out.append(Plane(x, y, r, r, label))
        else:  # 2.5D: the plane's own channels (first) set its range, as prediction reads it
            own = x[: x.shape[0] // (2 * z_context + 1)]
            out.append(Plane(x.astype(np.float32), y.astype(np.float32), _range(own, norm, f"{label} input"),
                             _range(y, norm, f"{label} target"), label))
    return out


def check_patch(planes: list[Plane], patch: tuple[int, ...], when: str) -> None:
    """Raise ValueError unless every plane holds a patch of `patch` (`when`: said in the message)."""
    for p in planes:
        size = p.input.shape[1:]
        if any(q > n for q, n in zip(patch, size, strict=True)):
            largest = tuple(min(q, n) for q, n in zip(patch, size, strict=True))
            shown = patch[0] if len(set(patch)) == 1 else patch
            fit = min(size) if len(set(patch)) == 1 else largest
            raise ValueError(f"patch size {shown} is larger than {p.name} ({'x'.join(map(str, size))}{when}); "
                             f"use a patch of at most {fit}")


def _hyperstack_channels(folder: Any) -> bool:
    """Whether the folder's first image is an ImageJ/OME hyperstack with a channel axis (read last)."""
    from ..images.io import image_axes

    files = list_images(folder) if folder is not None else []
    return bool(files) and (image_axes(files[0]) or "").endswith("C")


def _split_validation(planes: list[Plane], val_fraction: float, val_split: str, patch: tuple[int, ...], seed: int
                      ) -> tuple[list[Plane], list[Plane]]:
    """(training planes, validation planes): whole images held out, or a part of every image.

    The part is the last rows (Y): `val_fraction` of the height and, where the image is tall
    enough for that and a training patch, at least min(patch, height / 2) rows. A short image
    keeps a training patch and holds out only the fraction of its rows, a thin strip at the edge
    that is often background; a volume that is deep enough holds out its last planes (Z)
    instead: the whole field of view, scored with the planes before it as the network's context.
    """
    if val_fraction <= 0:
        return planes, []
    if val_split == "image" and len(planes) >= 2:
        n_val = max(1, int(round(len(planes) * val_fraction)))
        order = np.random.default_rng(seed).permutation(len(planes))
        return [planes[i] for i in sorted(order[n_val:])], [planes[i] for i in sorted(order[:n_val])]
    train, val = [], []
    for p in planes:
        h = p.input.shape[-2]
        cut = min(int(round(h * (1 - val_fraction))), h - min(patch[-2], h // 2))
        z_cut = _slab_cut(p, val_fraction, patch) if cut < patch[-2] else None
        if z_cut is not None:  # the last planes of a volume too short in Y for a patch-high strip
            ctx = min(z_cut, VAL_Z_CONTEXT)
            train.append(replace(p, input=p.input[:, :z_cut], target=p.target[:, :z_cut]))
            val.append(replace(p, input=p.input[:, z_cut - ctx :], target=p.target[:, z_cut - ctx :],
                               name=p.name + " (validation)", context=ctx))
            continue
        if cut < patch[-2]:  # too short for a patch-high validation region: hold out the fraction only
            cut = min(max(patch[-2], int(round(h * (1 - val_fraction)))), h - 1)
        if cut < patch[-2]:
            raise ValueError(
                f"{p.name}: height {h} is too small to hold out {val_fraction:.0%} for validation and "
                f"still draw {patch[-2]}-pixel patches; use val_fraction=0, a smaller patch or more images"
            )
        train.append(replace(p, input=p.input[..., :cut, :], target=p.target[..., :cut, :]))
        val.append(replace(p, input=p.input[..., cut:, :], target=p.target[..., cut:, :],
                           name=p.name + " (validation)"))
    return train, val


VAL_Z_CONTEXT = 8  # planes before a held-out slab that validation shows the network (not scored)
VAL_Z_KEEP = 8  # a volume holds out its last planes only where at least this many (and a patch) stay for training


def _slab_cut(p: Plane, val_fraction: float, patch: tuple[int, ...]) -> int | None:
    """Where a volume's held-out last planes start, or None (a plane, or too few planes to spare)."""
    if p.input.ndim != 4:
        return None
    z = p.input.shape[1]
    cut = min(int(round(z * (1 - val_fraction))), z - 1)
    return cut if cut >= max(patch[0], VAL_Z_KEEP) else None


def _clean01(y: np.ndarray, norm: Normalization, label: str) -> np.ndarray:
    """A clean image scaled by its percentiles to about [0, 1] (synthesis works in these units)."""
    lo, hi = _range(y, norm, label)
    return np.clip((y.astype(np.float32) - lo) / (hi - lo), 0, 1.25)


def stack_batch(samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]], task: Task
                ) -> tuple[np.ndarray, np.ndarray]:
    """Batch samples into network input (B, Cin, p, p) and target (B, Cout, p, p)."""
    a = np.stack([s[0] for s in samples])
    b = np.stack([s[1] for s in samples])
    if task.needs_mask:
        m = np.stack([s[2] for s in samples])  # type: ignore[misc]
        a = task.compose_input(a, m)
    return a, b
