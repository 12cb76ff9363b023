"""Command line: ``napari-pix2pix {predict,train,export,models,info,demo}``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ._version import __version__
from .engine.core.device import DEVICES, PRECISIONS
from .engine.core.tasks import TASKS
from .engine.training.config import OPTIONS, Option
from .nn.unet import UPSAMPLES


def _progress_bar(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tile", dynamic_ncols=True, file=sys.stderr, leave=False)


# ---------------------------------------------------------------------- predict
def _sizes(text: str, what: str) -> int | tuple[int, ...]:
    """A size in pixels, or one per axis ("16,64,64": z, y, x)."""
    try:
        values = tuple(int(t) for t in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a number of pixels, or one per axis as z,y,x "
                                         f"(e.g. 16,64,64), got {text!r}") from None
    if len(values) not in (1, 2, 3) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{what} must be at least 1 pixel (one size, or 2-3 of them), got {text!r}")
    return values[0] if len(values) == 1 else values


def _tile_size(text: str) -> int | tuple[int, ...] | str:
    if text == "auto":
        return text
    return _sizes(text, "tile size")


def _patch_size(text: str) -> int | tuple[int, ...]:
    return _sizes(text, "patch size")


def _number(kind: type, low: float, inclusive: bool) -> Any:
    word = "at least" if inclusive else "more than"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {word} {low:g}, got {text}")
        return value

    return parse


def _positive(kind: type) -> Any:
    return _number(kind, 0, inclusive=False)


def _non_negative(kind: type) -> Any:
    return _number(kind, 0, inclusive=True)


def cmd_predict(args: argparse.Namespace) -> int:
    """Apply a model to files and folders."""
    from .engine.images.io import IMAGE_SUFFIXES, image_axes, is_zarr, list_images, read_image, write_image
    from .engine.registry import load_model

    model = load_model(args.model)
    if args.tta:
        from .engine.predict.tiled import tta_transforms

        tta_transforms(args.tta, model.spatial_dims)  # 16 for a 2D model: refused before any file is read
    files: list[Path] = []
    for item in args.inputs:
        p = Path(item)
        if is_zarr(p):
            files.append(p)
        elif p.is_dir():
            files += list_images(p)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"input {item!r} is neither a file nor a folder")
    if not files:
        raise ValueError(f"no TIFF/PNG/JPEG images or zarr stores found in {args.inputs}")
    cluster = {"client": args.scheduler} if args.scheduler else {"workers": args.workers} if args.workers else {}
    store = Path(args.output) if Path(args.output).suffix.lower() == ".zarr" else None  # -o result.zarr: that store
    if store is not None and len(files) != 1:
        raise ValueError(f"-o {args.output} names one zarr store: give one input (or an output folder for several)")
    if (cluster or args.resume) and store is None and not all(is_zarr(f) for f in files):
        raise ValueError("--scheduler, --workers and --resume write zarr stores: give zarr inputs, or one input and "
                         "-o NAME.zarr")
    out_dir = store.parent if store is not None else Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    masks = {p.stem: p for p in list_images(args.mask_dir)} if args.mask_dir else {}
    if args.noise is not None and model.task.name != "denoise":  # refused before any file is read
        raise ValueError(f"--noise is for denoisers; {args.model} does {model.task.name}")
    if model.task.needs_mask and not masks:
        print("note: no --mask-dir given; NaN pixels of float images are inpainted", file=sys.stderr)
    for f in files:
        zarr_out = store if store is not None else (
            out_dir / (f.stem + args.suffix + ".zarr") if is_zarr(f) else None)  # lazy in, lazy out
        hyperstack = (image_axes(f) or "").endswith("C")  # read_image moves its channels last
        lazy = zarr_out is not None and (is_zarr(f) or (f.suffix.lower() in (".tif", ".tiff") and not hyperstack))
        if lazy:  # read where it is needed (on a cluster: by the workers), TIFF through tifffile's zarr interface
            from .engine.images.io import open_lazy

            array: Any = open_lazy(f)  # a file that cannot be opened is named here, before any work
        else:
            array = read_image(f)
        image: Any = str(f) if lazy else array
        ca = args.channel_axis
        is_rgb_file = array.ndim == 3 and array.shape[-1] in (3, 4) and f.suffix.lower() != ".tif"
        if ca is None and (is_rgb_file or hyperstack):
            ca = -1  # RGB files, and hyperstacks (read with their channels last)
        mask = read_image(masks[f.stem]) != 0 if f.stem in masks else None
        bar = _progress_bar(0, f.name)
        t = time.perf_counter()

        def on_progress(p: Any, bar: Any = bar) -> None:
            bar.unit = " " + p.unit
            bar.total = p.total
            bar.n = p.done
            bar.refresh()

        big = {"resume": args.resume, "pyramid": args.pyramid, **cluster} if zarr_out is not None else {}
        try:
            result = model.predict(image, mask, channel_axis=ca, tile_size=args.tile_size, overlap=args.overlap,
                                   batch_size=args.batch_size, device=args.device, precision=args.precision,
                                   progress=on_progress, out=zarr_out, tta=args.tta, noise=args.noise, **big)
        except KeyboardInterrupt:
            bar.close()
            from .engine.images.zarrstore import partial_path

            if zarr_out is not None and partial_path(zarr_out).exists():
                print(f"\ninterrupted: the finished blocks are kept in {partial_path(zarr_out)}; continue with "
                      "the same command and --resume", file=sys.stderr)
            return 130
        bar.close()
        if zarr_out is not None:
            print(f"{f.name} -> {zarr_out} ({result.shape}, {result.dtype}, {time.perf_counter() - t:.1f} s)")
            continue
        suffix = f.suffix.lower()
        if suffix in (".jpg", ".jpeg") and result.dtype.name != "uint8":
            suffix = ".tif"
        if suffix == ".png" and result.dtype.name not in ("uint8", "uint16"):
            suffix = ".tif"
        dest = out_dir / (f.stem + args.suffix + (suffix if suffix in IMAGE_SUFFIXES else ".tif"))
        write_image(dest, result)
        print(f"{f.name} -> {dest} ({result.shape}, {result.dtype}, {time.perf_counter() - t:.1f} s)")
    return 0


# ---------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    """Export a model as a bioimage.io package, ONNX or TorchScript, checked against our prediction."""
    import numpy as np

    from .engine.formats.export import guess_format
    from .engine.images.io import read_image
    from .engine.registry import load_model

    model = load_model(args.model)
    fmt = args.format or guess_format(args.out)
    options: dict[str, Any] = {}
    if fmt == "bioimageio":
        if args.test_image:
            image = np.asarray(read_image(args.test_image), np.float32)
            c = model.task.image_channels(model.config.in_channels)
            if image.ndim == 3 and image.shape[-1] == c and image.shape[0] != c:
                image = np.moveaxis(image, -1, 0)  # colour last (RGB files) -> (C, H, W)
            options["image"] = image
        if args.test_mask:
            options["mask"] = read_image(args.test_mask) != 0
        if args.author:
            options["authors"] = args.author
        if args.license:
            options["license"] = args.license
    elif args.test_image or args.test_mask or args.author or args.license:
        raise ValueError("--test-image, --test-mask, --author and --license apply to bioimage.io packages only")
    t = time.perf_counter()
    report = model.export(args.out, fmt, check=not args.no_check, **options)
    print(f"{report} in {time.perf_counter() - t:.1f} s")
    if fmt == "bioimageio":
        print(f"test it with: bioimageio test {report.path}")
    return 0


# ---------------------------------------------------------------------- models / info
def cmd_models(args: argparse.Namespace) -> int:
    """List bundled models or describe a model file."""
    from .engine.formats.bioimageio.read import is_package, package_metadata
    from .engine.formats.modelfile import read_model_file
    from .engine.registry import list_models

    if args.file:
        if Path(args.file).exists() and is_package(args.file):
            meta = package_metadata(args.file)
        else:
            _, meta = read_model_file(args.file)
        meta = {k: v for k, v in meta.items() if k != "training"} | {
            "training": {k: v for k, v in meta.get("training", {}).items() if k != "history"}}
        print(json.dumps(meta, indent=2))
        return 0
    models = list_models()
    if not models:
        print("no pretrained models are bundled with this version; train one with 'napari-pix2pix train'")
    for name, info in models.items():
        print(f"{name:24s} {info['task']:10s} {info['preset']:12s} {info['description']}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print versions and the device that would be used."""
    import numpy
    import torch

    from .engine.core.device import cpu_has_fast_bf16, resolve_device, resolve_precision

    dev = resolve_device("auto")
    print(f"napari-pix2pix {__version__}")
    print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, torch {torch.__version__}")
    print(f"device (auto): {dev}" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    print(f"CUDA available: {torch.cuda.is_available()}; MPS available: "
          f"{bool(getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available())}")
    print(f"CPU native bf16: {cpu_has_fast_bf16()}; threads: {torch.get_num_threads()}")
    print(f"inference precision (auto): {str(resolve_precision('auto', dev)).replace('torch.', '')}")
    try:
        import napari

        print(f"napari {napari.__version__}")
    except ImportError:
        print("napari: not installed (pip install 'napari-pix2pix[all]')")
    return 0


# ---------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    """Train a model with a progress bar and per-N-step logs."""
    from .engine import StatusUpdate, StepUpdate, TrainConfig, ValidationUpdate, describe, train_iter

    options: dict[str, Any] = {}
    if args.config:
        options.update(json.loads(Path(args.config).read_text()))
    for name in ("task", *(n for n, o in OPTIONS.items() if o.cli)):  # the options on the command line (the table)
        v = getattr(args, name)
        if v is not None:
            options[name] = v
    gen_opts = {k: getattr(args, k) for k in ("ngf", "levels", "upsample") if getattr(args, k) is not None}
    if gen_opts:
        options["generator"] = {**options.get("generator", {}), **gen_opts}
    if args.noise_sigma is not None:
        options["noise"] = {"gaussian_sigma": [args.noise_sigma / 255] * 2, "photons": [0, 0], "poisson_fraction": 0}
    sources = {k: getattr(args, k) for k in ("input_dir", "target_dir", "clean_dir", "aligned_dir")
               if getattr(args, k) is not None}
    if args.channel_axis is not None:
        sources["channel_axis"] = args.channel_axis
    train_kwargs: dict[str, Any] = dict(model_path=args.out, checkpoint_dir=args.checkpoint_dir, **sources)
    if args.resume:  # the checkpoint's settings; only the resumable ones may differ (engine.train_config)
        train_kwargs["resume"] = args.resume
        train_kwargs.update(options)
    else:
        train_kwargs["config"] = TrainConfig(**options)
    from tqdm import tqdm

    from .engine.core.progress import run_to_end

    gen = train_iter(**train_kwargs)
    talks = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 prints (and writes files)
    bar = None

    def show(ev: Any) -> None:
        nonlocal bar
        if not talks:
            return
        if isinstance(ev, StepUpdate):
            total = ev.total or None  # 0: a time budget's warm-up (the steps are fixed after it)
            if bar is None or bar.total != total:
                if bar is not None:
                    bar.close()
                bar = tqdm(total=total, initial=ev.step - 1, desc="training" if total else "measuring the speed",
                           unit="step", dynamic_ncols=True, file=sys.stderr)
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in ev.losses.items()}, refresh=False)
            if ev.step % args.log_every == 0 or ev.step == ev.total:
                tqdm.write(describe(ev), file=sys.stdout)
        elif isinstance(ev, (ValidationUpdate, StatusUpdate)) or args.verbose:
            if not isinstance(ev, StatusUpdate) or ev.message:
                tqdm.write(describe(ev), file=sys.stdout)

    try:
        model = run_to_end(gen, show)
    except KeyboardInterrupt:
        gen.close()  # saves the checkpoint and the model (if the interrupt came between steps)
        if talks:
            print("\ninterrupted: checkpoint and model saved; continue with --resume", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    if talks:
        print(f"model saved to {args.out} ({model.training_summary.get('steps_done')} steps, "
              f"best validation PSNR {model.training_summary.get('best_val_psnr', float('nan')):.2f} dB)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Open napari with a sample and the widgets, or run the demo headless."""
    from ._demo import run_demo

    return run_demo(headless=args.headless, out=args.out)


# ---------------------------------------------------------------------- parser
def _tta(text: str) -> int:
    from .engine.predict.tiled import TTA_COUNTS

    if text.strip().isdigit() and int(text) in (0, *TTA_COUNTS):
        return int(text)
    raise argparse.ArgumentTypeError(f"the number of transforms to average is one of {TTA_COUNTS}, got {text!r}")


def _noise(text: str) -> Any:
    if text in ("auto", "gaussian", "poisson"):
        return text
    try:
        gain, offset, read = (float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a noise model is auto, gaussian, poisson or gain,offset,read "
                                         f"(e.g. 2.1,100,3.5), got {text!r}") from None
    return {"gain": gain, "offset": offset, "read": read}


def _predict_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help="apply a model to image files or folders")
    p.add_argument("model", help="bundled model name or model file (.safetensors)")
    p.add_argument("inputs", nargs="+", help="TIFF/PNG/JPEG files, zarr stores (.zarr, written back as zarr) or "
                                             "folders of them; multi-page TIFF stacks and volumes")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--mask-dir", help="inpaint: folder of masks named like the inputs (non-zero = fill)")
    p.add_argument("--channel-axis", type=int, default=None, help="channel axis of the inputs")
    p.add_argument("--tile-size", type=_tile_size, default="auto",
                   help="largest tile side in pixels (rounded to the network multiple), z,y,x for volumes, or "
                        "'auto' (default: the largest that fits ~512 MB of activations)")
    p.add_argument("--overlap", type=_non_negative(int), default=64, help="smallest overlap of neighbouring tiles")
    p.add_argument("--batch-size", type=_positive(int), default=None,
                   help="tiles per forward pass (default: by memory)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--tta", type=_tta, nargs="?", const=True, default=False, metavar="N",
                   help="average the predictions of flipped/rotated copies (test-time augmentation): all 8 "
                        "(16 for 3D models) without N, or N of them (2, 4, 8, 16); N times slower. Give it after "
                        "the inputs (or as --tta=N): a bare --tta before them would read the model name as N")
    p.add_argument("--noise", type=_noise, default=None, metavar="MODEL",
                   help="denoisers: predict in the variance-stabilized domain of this noise: auto (estimated from each "
                        "image), poisson, gaussian, or gain,offset,read (e.g. 2.1,100,3.5); default: none")
    p.add_argument("--suffix", default="", help="appended to output file names")
    big = p.add_argument_group("zarr outputs (zarr inputs, or one input with -o NAME.zarr)")
    where = big.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="compute the blocks on this dask cluster (e.g. tcp://host:8786); needs "
                            "napari-pix2pix[cluster]")
    where.add_argument("--workers", type=_positive(int), metavar="N",
                       help="compute the blocks on a local dask cluster of N worker processes (1 thread each)")
    big.add_argument("--resume", action="store_true",
                     help="continue an interrupted prediction into the same store: only its missing blocks")
    big.add_argument("--pyramid", action="store_true", help="also write downsampled levels (a multiscale OME-Zarr)")
    p.set_defaults(func=cmd_predict)


def _train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model on paired folders or clean images")
    src = p.add_argument_group("data (one source)")
    src.add_argument("--input-dir", help="input images, paired with --target-dir by file name; a denoiser's noisy "
                                          "images alone (no --target-dir): learns from them (noise2self)")
    src.add_argument("--target-dir")
    src.add_argument("--clean-dir", help="clean images: pairs are synthesized for the task")
    src.add_argument("--aligned-dir", help="reference-implementation A|B side-by-side images")
    src.add_argument("--channel-axis", type=int, default=None)
    p.add_argument("-o", "--out", required=True, help="model file to write (.safetensors)")
    p.add_argument("--checkpoint-dir", help="default: <out>.checkpoints beside the model")
    p.add_argument("--resume", help="checkpoint.safetensors to continue from")
    p.add_argument("--config", help="JSON file of training options (command-line options override it)")
    p.add_argument("--task", choices=TASKS)
    budget = p.add_mutually_exclusive_group()
    parts = {name: p.add_argument_group(f"{name} options") for name in ("network", "recipe", "schedule", "data",
                                                                        "runtime")}
    for opt in OPTIONS.values():  # the table of options (engine.training.config): one source for every front end
        if opt.cli:
            _add_option(budget if opt.name in ("steps", "minutes") else parts[opt.part], opt)
    net = parts["network"]
    net.add_argument("--ngf", type=_positive(int), help="generator width (into the network's UNetConfig overrides)")
    net.add_argument("--levels", type=_positive(int), help="generator depth (halvings)")
    net.add_argument("--upsample", choices=UPSAMPLES, help="generator upsampling (resize: no checkerboard artefacts)")
    parts["data"].add_argument("--noise-sigma", type=_non_negative(float),
                               help="denoise synthesis: fixed Gaussian sigma (0-255)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("-v", "--verbose", action="store_true", help="also log every saved file")
    p.set_defaults(func=cmd_train)


_KINDS: dict[str, Any] = {"int+": _positive(int), "int0": _non_negative(int), "int": int, "float+": _positive(float),
                          "float0": _non_negative(float), "patch": _patch_size, "str": str}


def _add_option(group: Any, opt: Option) -> None:
    """A command-line option of the training table: ``--name-with-dashes``, parsed by its kind."""
    flag = "--" + opt.name.replace("_", "-")
    if opt.cli == "flag":
        group.add_argument(flag, action="store_const", const=True, default=None, help=opt.help)
    elif opt.cli == "choice":
        kind = type(opt.choices[0])
        group.add_argument(flag, type=kind, choices=list(opt.choices), help=opt.help)
    else:
        group.add_argument(flag, type=_KINDS[opt.cli], help=opt.help)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``napari-pix2pix``."""
    ap = argparse.ArgumentParser(prog="napari-pix2pix", description="Pix2Pix image restoration and translation.")
    ap.add_argument("--version", action="version", version=f"napari-pix2pix {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    _predict_parser(sub)
    _train_parser(sub)

    p = sub.add_parser("export", help="export a model: bioimage.io package (.zip), ONNX or TorchScript")
    p.add_argument("model", help="bundled model name, model file or bioimage.io package")
    p.add_argument("out", help="file to write (.zip: bioimage.io package, .onnx, .pt: TorchScript)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--bioimageio", dest="format", action="store_const", const="bioimageio",
                     help="bioimage.io model package (needs: pip install \"napari-pix2pix[bioimageio]\")")
    fmt.add_argument("--onnx", dest="format", action="store_const", const="onnx",
                     help="ONNX (network units in and out; needs onnx and onnxruntime)")
    fmt.add_argument("--torchscript", dest="format", action="store_const", const="torchscript",
                     help="TorchScript (network units in and out)")
    p.add_argument("--no-check", action="store_true", help="do not compare the export with our own prediction")
    p.add_argument("--test-image", help="bioimage.io: test image file (default: the task's sample image)")
    p.add_argument("--test-mask", help="bioimage.io, inpaint: test mask file (non-zero = fill)")
    p.add_argument("--author", action="append", help="bioimage.io: author name (repeat for several)")
    p.add_argument("--license", help="bioimage.io: SPDX licence of the weights (default BSD-3-Clause)")
    p.set_defaults(func=cmd_export, format=None)

    p = sub.add_parser("models", help="list bundled models, or describe a model file")
    p.add_argument("file", nargs="?", help="a model file (or bioimage.io package) to describe")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("info", help="versions and the device that would be used")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="open napari with a sample and the widgets (headless: a figure + metrics)")
    p.add_argument("--headless", action="store_true", help="no window: write a comparison figure and metrics")
    p.add_argument("--out", default="pix2pix-demo", help="folder for the headless figure and metrics")
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors are printed as one line, not a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, LookupError, RuntimeError, ImportError) as e:
        print(f"napari-pix2pix {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
