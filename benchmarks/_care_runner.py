"""Run a CAREamics peer (CARE, Noise2Noise or Noise2Void) on arrays, for side-by-side benchmarks.

Standalone: run it with the CAREamics venv made by ../shared/peers/care_env.sh, e.g.

    /work/peers/venv/bin/python benchmarks/_care_runner.py --mode care \
        --train-input A.npy --train-target B.npy --test-input C.npy --out pred.npy --seconds 60

It never imports napari_pix2pix. Inputs are float32 arrays (S, Y, X) or (Y, X), passed to
CAREamics as data_type="array" with axes "YX" (both 2-D) or "SYX". CAREamics normalises the data itself
(mean/std of the training input and target) and denormalises its predictions, so the
saved prediction is in the intensity units of the target, with the test input's shape.

--mode n2v   Noise2Void on the noisy training input alone (no --train-target), as CAREamics' users run it
             on one noisy image.
--defaults   CAREamics as a new user runs it: `create_care_config` / `create_n2n_config` / `create_n2v_config`
             with only the mandatory arguments (patch 64x64 or the largest power of two
             that fits, batch_size 16), so its default num_epochs (30 in 0.3.5) and, for
             CARE, its default EarlyStopping on val_loss (Lightning patience 3).
--seconds S  The same defaults (model, optimiser, LR schedule, augmentations, patches),
             but via `create_advanced_care_config` (with early_stopping_params={}:
             CAREamics only adds EarlyStopping when that dict is truthy) or
             `create_advanced_n2n_config` (N2N never stops early), num_epochs=10**6 and
             trainer_params={"max_time": "DD:HH:MM:SS"}: Lightning's Timer stops fit()
             after about S seconds (it checks after every batch).

Prediction uses CAREamics' default checkpoint choice ("best" on val_loss for CARE, "last"
for N2N); images with more than 1024*1024 pixels per plane are predicted in 256x256 tiles,
and Y, X are reflect-padded to multiples of 2**depth (4 for the default U-Net) and cropped back.
Prints one JSON line at the end: {"mode", "train_seconds", "predict_seconds", "epochs", ...}.
"""

from __future__ import annotations

import os
import sys

# This file's folder holds modules (training.py, inference.py, ...) that must not shadow
# anything CAREamics, Lightning or torch import.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _here]

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402


def _axes(a: np.ndarray) -> str:
    if a.ndim == 2:
        return "YX"
    if a.ndim == 3:
        return "SYX"
    raise SystemExit(f"expected (S, Y, X) or (Y, X), got shape {a.shape}")


def _patch_size(*arrays: np.ndarray) -> list[int]:
    side = min(min(a.shape[-2:]) for a in arrays)
    p = 64
    while p > side and p > 8:
        p //= 2
    if p > side:
        raise SystemExit(f"images of {side} px are too small for a CAREamics patch (>= 8)")
    return [p, p]


def _max_time(seconds: float) -> str:
    s = max(1, int(round(seconds)))
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"  # DD:HH:MM:SS


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["care", "n2n", "n2v"], required=True)
    ap.add_argument("--train-input", required=True)
    ap.add_argument("--train-target", help="not for n2v (it learns from the noisy input alone)")
    ap.add_argument("--test-input", required=True)
    ap.add_argument("--out", required=True)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--seconds", type=float, help="train for about this many wall-clock seconds")
    g.add_argument("--defaults", action="store_true", help="CAREamics' own defaults (epochs, early stopping)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=None, help="only with --seconds, >= 1 (the basic factories take none)")
    args = ap.parse_args(argv)
    if args.seed is not None and args.seed < 1:
        ap.error("--seed must be >= 1 (CAREamics' DataConfig requires seed > 0)")

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)

    from careamics import CAREamist
    from careamics.config import (
        create_advanced_care_config,
        create_advanced_n2n_config,
        create_care_config,
        create_n2n_config,
        create_n2v_config,
    )

    n2v = args.mode == "n2v"
    if n2v == (args.train_target is not None):
        ap.error("--train-target is needed for care and n2n, and not given for n2v")
    x = np.load(args.train_input).astype(np.float32, copy=False)
    y = x if n2v else np.load(args.train_target).astype(np.float32, copy=False)
    t = np.load(args.test_input).astype(np.float32, copy=False)
    if x.shape != y.shape:
        raise SystemExit(f"train input {x.shape} and target {y.shape} differ")
    _axes(x), _axes(t)  # shape checks
    # CAREamics wants the same sample axes at train and predict time: "YX" when both are
    # single 2-D images, else "SYX" for both (a 2-D array then gets a leading S of 1).
    axes = "YX" if x.ndim == t.ndim == 2 else "SYX"
    if axes == "SYX":
        x, y = (a if a.ndim == 3 else a[None] for a in (x, y))
    tt = t if axes == "YX" or t.ndim == 3 else t[None]
    patch = _patch_size(x, t)
    n_patches = sum((h // patch[0]) * (w // patch[1]) for h, w in ([x.shape[-2:]] if x.ndim == 2 else
                                                                [a.shape[-2:] for a in x]))
    # CAREamics holds out 8 validation patches by default: fewer when the training image is small
    common = dict(experiment_name=f"peer_{args.mode}", data_type="array", axes=axes, patch_size=patch,
                  batch_size=args.batch_size, n_val_patches=max(1, min(8, n_patches // 4)))
    if args.defaults:
        make = {"care": create_care_config, "n2n": create_n2n_config, "n2v": create_n2v_config}[args.mode]
        cfg = make(**common)
    else:
        if n2v:
            raise SystemExit("--mode n2v runs at CAREamics' defaults only (--defaults)")
        extra = dict(num_epochs=10**6, trainer_params={"max_time": _max_time(args.seconds)})
        if args.seed is not None:
            extra["seed"] = args.seed
        if args.mode == "care":  # N2N has no early stopping by default (nor this argument)
            cfg = create_advanced_care_config(**common, **extra, early_stopping_params={})
        else:
            cfg = create_advanced_n2n_config(**common, **extra)
        assert not cfg.training_config.early_stopping_params, cfg.training_config

    with tempfile.TemporaryDirectory(prefix="care_runner_") as work_dir:
        care = CAREamist(cfg, work_dir=work_dir, enable_progress_bar=False)
        t0 = time.perf_counter()
        care.train(train_data=x) if n2v else care.train(train_data=x, train_data_target=y)
        train_s = time.perf_counter() - t0
        epochs, steps = int(care.trainer.current_epoch), int(care.trainer.global_step)
        early = any(type(c).__name__ == "EarlyStopping" and getattr(c, "stopped_epoch", 0) > 0
                    for c in care.trainer.callbacks)

        # The U-Net needs Y and X to be multiples of 2**depth: reflect-pad, crop back after.
        m = 2 ** cfg.algorithm_config.model.depth
        h, w = tt.shape[-2:]
        pad = [(0, 0)] * (tt.ndim - 2) + [(0, -h % m), (0, -w % m)]
        tp = np.pad(tt, pad, mode="reflect") if (h % m or w % m) else tt
        big = h * w > 1024 * 1024
        kw = dict(tile_size=(256, 256), tile_overlap=(48, 48)) if big else {}
        t0 = time.perf_counter()
        pred, _ = care.predict(tp, data_type="array", axes=axes, **kw)
        predict_s = time.perf_counter() - t0

    p = np.stack([np.asarray(a) for a in pred]) if len(pred) > 1 else np.asarray(pred[0])
    p = p.reshape(tp.shape)[..., :h, :w]  # drops CAREamics' singleton S/C axes, then the padding
    p = np.ascontiguousarray(p, dtype=np.float32).reshape(t.shape)
    np.save(args.out, p)
    print(json.dumps({
        "mode": args.mode, "train_seconds": round(train_s, 2), "predict_seconds": round(predict_s, 2),
        "epochs": epochs, "steps": steps, "early_stopped": early,
        "budget": "defaults" if args.defaults else args.seconds, "patch_size": common["patch_size"],
        "max_epochs": cfg.training_config.trainer_params.get("max_epochs"),
    }), flush=True)


if __name__ == "__main__":
    main()
