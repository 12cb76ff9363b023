"""Layers to arrays and back: what the widgets hand to the engine and how results come back.

Nothing here runs in a worker thread: these functions read layers (main thread), return
plain numpy/dask arrays for the engine, and put results into layers.

Examples
--------
From napari's console, with a model file trained by the Train widget:

>>> from napari_pix2pix import denoise  # doctest: +SKIP
>>> from napari_pix2pix._napari.layers import add_result  # doctest: +SKIP
>>> src = viewer.layers["noisy"]  # doctest: +SKIP
>>> add_result(viewer, src, denoise(src.data, model="denoise.safetensors"), "denoised")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari
    import napari.layers

METADATA_KEY = "napari_pix2pix"  # layer.metadata entry that marks (and describes) our output layers
_SPATIAL = ("scale", "translate", "rotate", "shear", "affine", "units", "axis_labels")


# ---------------------------------------------------------------------- layers -> arrays
def image_array(layer: napari.layers.Image) -> tuple[Any, int | None]:
    """The layer's full-resolution data (not copied) and its channel axis (-1 for RGB, else None)."""
    data = layer.data[0] if layer.multiscale else layer.data
    return data, (-1 if layer.rgb else None)


def stack_shape(layer: napari.layers.Image) -> tuple[int, ...]:
    """Sizes of the leading (plane) axes: everything except Y, X and an RGB axis."""
    data, channel_axis = image_array(layer)
    n = 3 if channel_axis is not None else 2
    return tuple(int(s) for s in data.shape[:-n])


def current_plane(viewer: napari.Viewer, layer: napari.layers.Image) -> tuple[int, ...]:
    """Index along the layer's leading axes of the plane shown in the viewer (``()`` for 2D)."""
    stack = stack_shape(layer)
    if not stack:
        return ()
    pos = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)
    return tuple(int(np.clip(np.round(p), 0, n - 1)) for p, n in zip(pos[: len(stack)], stack, strict=True))


def plane_label(plane: tuple[int, ...], stack: tuple[int, ...]) -> str:
    """A plane index for people: ``(3,)`` of 6 planes is "4 of 6"; ``(1, 2)`` of (2, 5): "axis 0: 2/2, axis 1: 3/5"."""
    if len(plane) == 1 and len(stack) == 1:
        return f"{plane[0] + 1} of {stack[0]}"
    return ", ".join(f"axis {a}: {i + 1}/{n}" for a, (i, n) in enumerate(zip(plane, stack, strict=False)))


def mask_array(mask_layer: napari.layers.Layer, image_layer: napari.layers.Image) -> np.ndarray:
    """Boolean mask (True = fill) from a Labels layer (non-zero) or a Shapes layer (inside a shape).

    A Shapes layer is rasterized onto the image's pixel grid (through world coordinates, so
    the two layers may have different scales or offsets): to the image's shape without
    channels, or to (Y, X) for a 2D Shapes layer over a stack.

    Raises
    ------
    ValueError
        If the Shapes layer is empty.
    TypeError
        If the layer is neither Labels nor Shapes.
    """
    from napari.layers import Labels, Shapes

    if isinstance(mask_layer, Labels):
        data = mask_layer.data[0] if mask_layer.multiscale else mask_layer.data
        return np.asarray(data) != 0
    if not isinstance(mask_layer, Shapes):
        raise TypeError(f"the mask must be a Labels or Shapes layer; {mask_layer.name!r} is a "
                        f"{type(mask_layer).__name__} layer")
    if len(mask_layer.data) == 0:
        raise ValueError(f"the Shapes layer {mask_layer.name!r} holds no shapes: draw the regions to fill first")
    data, channel_axis = image_array(image_layer)
    full = tuple(s for a, s in enumerate(data.shape) if channel_axis is None or a != data.ndim - 1)
    mshape = full if mask_layer.ndim == len(full) else full[-2:]
    d = len(mshape)
    moved = []
    for verts in mask_layer.data:  # vertices: shapes-layer data -> world -> image data coordinates
        world = [mask_layer.data_to_world(v) for v in verts]
        moved.append(np.array([image_layer.world_to_data(w)[-d:] for w in world]))
    grid = Shapes(moved, shape_type=list(mask_layer.shape_type), ndim=d)
    return np.asarray(np.asarray(grid.to_masks(mask_shape=mshape)).any(axis=0))


# ---------------------------------------------------------------------- arrays -> layers
def spatial_kwargs(layer: napari.layers.Layer) -> dict[str, Any]:
    """The layer's placement in the world (scale, translate, rotate, shear, affine, units, axis labels)."""
    out: dict[str, Any] = {}
    for key in _SPATIAL:
        if not hasattr(layer, key):  # units / axis_labels are recent napari additions
            continue
        value = getattr(layer, key)
        if key == "affine":
            value = np.asarray(value.affine_matrix)
        elif key == "units":
            value = tuple(str(u) for u in value)
        out[key] = value
    return out


def _extra_axis_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Spatial kwargs for data with one more leading axis (channels moved first)."""
    out = {"scale": (1.0, *kwargs["scale"]), "translate": (0.0, *kwargs["translate"])}
    if "units" in kwargs:
        out["units"] = ("pixel", *kwargs["units"])
    if "axis_labels" in kwargs:
        out["axis_labels"] = ("channel", *kwargs["axis_labels"])
    return out


def find_result(viewer: napari.Viewer, source: napari.layers.Layer, suffix: str, kind: type | None = None) -> Any:
    """The output layer (an Image, or of type `kind`) made from `source` by an earlier run, if it is still there."""
    from napari.layers import Image

    name = f"{source.name} {suffix}"
    if name in viewer.layers:
        layer = viewer.layers[name]
        if isinstance(layer, kind or Image) and _source_name(layer) == source.name:
            return layer
    return None


def _source_name(layer: Any) -> Any:
    """The name of the layer `layer` was computed from (None for layers that are not ours)."""
    return layer.metadata.get(METADATA_KEY, {}).get("source")


def _into_plane(existing: Any, source: napari.layers.Image, data: Any, plane: tuple[int, ...]) -> np.ndarray:
    """`data` (one plane) written at `plane` of the existing layer's data, or of zeros of the source's size."""
    full_shape = tuple(stack_shape(source)) + tuple(data.shape)
    base = existing.data if existing is not None else None
    if base is None or tuple(base.shape) != full_shape or base.dtype != data.dtype or not isinstance(
            base, np.ndarray) or not base.flags.writeable:
        base = np.zeros(full_shape, data.dtype)
    base[plane] = np.asarray(data)
    return base


def add_result(
    viewer: napari.Viewer,
    source: napari.layers.Image,
    data: Any,
    suffix: str = "result",
    *,
    plane: tuple[int, ...] | None = None,
    keep_contrast: bool = True,
    info: dict[str, Any] | None = None,
) -> napari.layers.Image:
    """Show `data`, computed from layer `source`, as the layer ``"<source name> <suffix>"``.

    The new layer carries the source's scale, translate, rotation, shear, affine, units and
    axis labels. If an earlier run made that layer, its data are replaced (no second layer);
    the source layer is never modified.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    source : napari.layers.Image
        The layer the result was computed from.
    data : array, or list of arrays
        The result: the source's shape, or with an RGB (3/4) axis last (colorize). Any other
        extra last axis is shown as a leading channel axis. A list: the levels of a result
        stored as zarr (full resolution first), shown as a lazy multiscale layer.
    suffix : str
        Appended to the source's name, e.g. ``"denoised"``.
    plane : tuple of int, optional
        `data` is one plane, at this index of the source's leading axes: it is written into
        the output layer (created the source's full size, zero elsewhere, if needed).
    keep_contrast : bool
        Use the source's contrast limits, colormap and gamma (for results on the source's
        intensity scale); otherwise contrast is computed from the result.
    info : dict, optional
        Stored in ``layer.metadata["napari_pix2pix"]`` (model, settings).

    Returns
    -------
    napari.layers.Image
        The output layer.

    Examples
    --------
    >>> out = denoise(viewer.layers["noisy"].data, model="my-denoiser.safetensors")  # doctest: +SKIP
    >>> add_result(viewer, viewer.layers["noisy"], out, "denoised")  # doctest: +SKIP
    """
    existing = find_result(viewer, source, suffix)
    multiscale = isinstance(data, list)  # levels of a result stored as zarr, full resolution first
    if not multiscale:
        data = data if hasattr(data, "shape") and hasattr(data, "dtype") else np.asarray(data)
    if plane:
        data = _into_plane(existing, source, data, plane)

    kwargs = spatial_kwargs(source)
    top = data[0] if multiscale else data
    extra = top.ndim - source.ndim  # source.ndim excludes an RGB axis
    rgb = extra == 1 and top.shape[-1] in (3, 4)
    if extra == 1 and not rgb:  # channels: show them along a new leading axis
        if multiscale:
            import dask.array as da

            data = [da.moveaxis(da.from_zarr(level), -1, 0) for level in data]
        else:
            data = np.moveaxis(np.asarray(data), -1, 0)
        kwargs = _extra_axis_kwargs(kwargs)
    top = data[0] if multiscale else data
    ndim = top.ndim - (1 if rgb else 0)
    meta = {METADATA_KEY: {"source": source.name, **(info or {})}}
    name = f"{source.name} {suffix}"

    if existing is not None and existing.rgb == rgb and existing.ndim == ndim and not multiscale and (
            not existing.multiscale):
        existing.data = data
        for key, value in kwargs.items():
            setattr(existing, key, value)
        existing.metadata = {**existing.metadata, **meta}
        layer = existing
        if existing is not None and plane:
            layer.refresh()
    else:
        index = None
        if existing is not None:  # incompatible with the new result: replace it where it was
            index = viewer.layers.index(existing)
            viewer.layers.remove(existing)
        layer = viewer.add_image(data, name=name, rgb=rgb, metadata=meta, multiscale=multiscale, **kwargs)
        if index is not None:
            viewer.layers.move(viewer.layers.index(layer), index)
    if not rgb:
        if keep_contrast and not getattr(source, "rgb", False) and extra == 0:
            layer.colormap = source.colormap
            layer.gamma = source.gamma
            layer.contrast_limits = source.contrast_limits
        else:
            layer.reset_contrast_limits()
    return layer


def add_overlay(
    viewer: napari.Viewer,
    source: napari.layers.Image,
    data: Any,
    suffix: str,
    *,
    colormap: str = "magma",
    blending: str = "additive",
    opacity: float = 0.6,
    centered: bool = False,
    visible: bool = True,
    plane: tuple[int, ...] | None = None,
    info: dict[str, Any] | None = None,
) -> napari.layers.Image:
    """Show a map about a result (uncertainty, residual) as ``"<source name> <suffix>"``, over the result.

    Like :func:`add_result` (same spatial metadata, updated in place by a rerun), with its own
    contrast: ``(0, high)``, or ``(-high, high)`` when `centered`, `high` being the 99.5th
    percentile of ``abs(data)``. Colormap, blending, opacity and visibility are set when the
    layer is made; a rerun keeps the user's changes to them.

    Parameters
    ----------
    viewer, source, data, suffix, plane, info
        As for :func:`add_result`; `data` has the source's shape without channels.
    colormap : str
        napari colormap name (e.g. ``"magma"`` for spreads, ``"PiYG"`` for signed maps).
    blending : str
        napari blending: ``"additive"`` adds the map's colour over the layers below.
    opacity : float
        Layer opacity.
    centered : bool
        Contrast symmetric around 0 (for signed maps).
    visible : bool
        Whether a new layer is shown.

    Returns
    -------
    napari.layers.Image
        The map's layer.
    """
    before = find_result(viewer, source, suffix)
    layer = add_result(viewer, source, data, suffix, plane=plane, keep_contrast=False, info=info)
    if layer is not before:  # a new layer
        layer.colormap = colormap
        layer.blending = blending
        layer.opacity = opacity
        layer.visible = visible
    high = _robust_max(np.asarray(data))
    layer.contrast_limits = (-high, high) if centered else (0.0, high)
    return layer


def _robust_max(data: np.ndarray, q: float = 99.5) -> float:
    """The `q`-th percentile of ``abs(data)`` (finite values, at most ~1 M of them); 1 if that is 0."""
    flat = np.abs(data.reshape(-1)[:: max(1, data.size // 1_000_000)].astype(np.float64))
    flat = flat[np.isfinite(flat)]
    high = float(np.percentile(flat, q)) if flat.size else 0.0
    return high if high > 0 else 1.0


def add_labels_result(
    viewer: napari.Viewer,
    source: napari.layers.Image,
    data: Any,
    suffix: str,
    *,
    plane: tuple[int, ...] | None = None,
    info: dict[str, Any] | None = None,
) -> napari.layers.Labels:
    """Show a mask about a result (regions to check) as the Labels layer ``"<source name> <suffix>"``.

    The source's spatial metadata; drawn as outlines; a rerun updates the layer in place.
    `data` is boolean (or labels), of the source's shape without channels; with `plane`,
    one plane of it (as for :func:`add_result`).
    """
    from napari.layers import Labels

    existing = find_result(viewer, source, suffix, Labels)
    data = np.asarray(data).astype(np.uint8)
    if plane:
        data = _into_plane(existing, source, data, plane)
    kwargs = spatial_kwargs(source)
    meta = {METADATA_KEY: {"source": source.name, **(info or {})}}
    if existing is not None and existing.ndim == data.ndim:
        existing.data = data
        for key, value in kwargs.items():
            setattr(existing, key, value)
        existing.metadata = {**existing.metadata, **meta}
        return existing
    index = None
    if existing is not None:
        index = viewer.layers.index(existing)
        viewer.layers.remove(existing)
    layer = viewer.add_labels(data, name=f"{source.name} {suffix}", metadata=meta, opacity=0.8, **kwargs)
    layer.contour = 1
    if index is not None:
        viewer.layers.move(viewer.layers.index(layer), index)
    return layer
