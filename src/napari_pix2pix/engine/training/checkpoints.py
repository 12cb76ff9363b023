"""Training checkpoints: everything needed to resume a run, in one safetensors file (no pickle).

``<model>.checkpoints/checkpoint.safetensors`` is written periodically, when a run is
stopped and when it fails; ``best.safetensors`` is the model file of the best validation
PSNR so far.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.network import Network
from ..formats.modelfile import ModelFileError, read_model_file, write_model_file

CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"


def flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's state as named tensors (``<prefix>.<param>.<name>``) and JSON scalars."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`: a state dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[name] = v
    for key, v in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: Path, model: Network, disc: nn.Module | None, opt_g: torch.optim.Optimizer,
                    opt_d: torch.optim.Optimizer | None, step: int, rng: np.random.Generator, torch_rng: torch.Tensor,
                    extra: dict[str, Any], more: dict[str, torch.Tensor] | None = None) -> Path:
    """Write everything needed to resume (atomic, no pickle).

    Tensors: the generator (``G.*``), the discriminator (``D.*``), both optimizers' state
    (``optG.*``, ``optD.*``; no ``D.*``/``optD.*`` when the recipe has no discriminator),
    the run's torch random state (`torch_rng`) and `more` (the EMA weights ``E.*``); metadata: the step, the
    model's metadata, the optimizers' scalars, numpy's random state and `extra` (config,
    best validation PSNR, history, status, gradient-scaler state).
    """
    tensors = {f"G.{k}": v for k, v in model.generator.state_dict().items()}
    tg, mg = flatten_optimizer("optG", opt_g)
    tensors.update(tg)
    md = None
    if disc is not None and opt_d is not None:
        tensors.update({f"D.{k}": v for k, v in disc.state_dict().items()})
        td, md = flatten_optimizer("optD", opt_d)
        tensors.update(td)
    tensors.update(more or {})
    tensors["torch_rng"] = torch_rng
    meta = {"kind": "training-checkpoint", "step": step, "model": model.metadata, "optG": mg, "optD": md,
            "numpy_rng": rng.bit_generator.state, **extra}
    return write_model_file(path, tensors, meta)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a training checkpoint written by :func:`save_checkpoint`."""
    tensors, meta = read_model_file(path)
    if meta.get("kind") != "training-checkpoint":
        raise ModelFileError(f"{Path(path).name} is a model file, not a training checkpoint; resume from "
                             f"the {CHECKPOINT} in the run's checkpoint folder")
    return tensors, meta
