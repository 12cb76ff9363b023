"""Data-parallel training under ``torchrun``: the process group, this rank's device, decisions rank 0 makes.

With ``WORLD_SIZE`` > 1 the run trains with DistributedDataParallel: NCCL on GPUs, gloo on
CPUs; each rank draws from its own shard with its own seed and only rank 0 writes files.
Timing-based decisions (a time budget's steps) are rank 0's, broadcast to every rank.
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist

from ..core.device import resolve_device

_OWN_GROUP: list[bool] = []  # non-empty once this module has started the process group


def dist_info() -> tuple[int, int]:
    """(rank, world size); starts the process group under torchrun (torn down by :func:`close_process_group`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        _OWN_GROUP.append(True)
        atexit.register(close_process_group)  # a failed run: still torn down before the interpreter exits
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def close_process_group(synchronize: bool = False) -> None:
    """Tear down the process group this module started, once every rank is done with it.

    A rank that leaves while another still talks to it (rank 1 exits while rank 0 saves) can
    abort in gloo's threads at interpreter exit: a barrier first, then the group is destroyed.
    """
    if _OWN_GROUP and dist.is_initialized():
        _OWN_GROUP.clear()
        try:
            if synchronize:
                dist.barrier()
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - exiting anyway; never mask the run's own outcome
            pass


def broadcast_int(value: int, world: int, device: torch.device) -> int:
    """Rank 0's `value` on every rank (a no-op without DDP)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device if device.type == "cuda" else "cpu")
    dist.broadcast(t, src=0)
    return int(t.item())


def agreed(flag: bool, world: int, device: torch.device) -> bool:
    """Rank 0's decision on every rank (timing-based decisions must not differ between ranks)."""
    return bool(broadcast_int(int(flag), world, device))


def device_for(device: str, world: int) -> torch.device:
    """The run's device; under DDP on GPUs, this rank's GPU."""
    name = device if world == 1 or not torch.cuda.is_available() else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    dev = resolve_device(name)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def broadcast_from_rank0(module: torch.nn.Module, buffers_only: bool = False) -> None:
    """Rank 0's weights (or only its buffers: BatchNorm statistics) on every rank."""
    if not dist.is_initialized():
        return
    for t in (module.buffers() if buffers_only else module.state_dict().values()):
        dist.broadcast(t.data if buffers_only else t, src=0)
