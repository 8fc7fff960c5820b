"""Data-parallel training with PyTorch's own DDP, started by torchrun:

    torchrun --nproc_per_node 2 -m models.train --dataset mnist --variant fp
    torchrun --nproc_per_node 8 -m models.train_detector --variant fp

Each process takes an equal share of every global batch (``rank_batches``: the order of
torch's DistributedSampler, so the union of the shares at step k is the batch one process
would take at step k), DDP averages the gradients, and the result equals one process's in
expectation (the only difference: BatchNorm's batch statistics are computed per share).
Rank 0 alone writes checkpoints, logs, progress bars and exports; every rank resumes from
the same checkpoint.  Backend: nccl on CUDA, gloo on CPU.  Without torchrun (no
WORLD_SIZE in the environment) everything runs in one process as before.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


def start(device: torch.device):
    """Joins the torchrun process group (when there is one); returns (rank, world size) and,
    on CUDA, the device of this process (cuda:LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier():
    if dist.is_initialized():
        dist.barrier()


def stop():
    """Leaves the process group, all ranks together, and ends a torchrun process at once.
    Measured with torch 2.13 on CPU (gloo): about one torchrun in 8 had a rank abort while
    the interpreter shut down after its work was done and written ("terminate called
    without an active exception", SIGABRT, no Python frame: a C++ thread still joinable in a
    static destructor), so torchrun reported the whole run failed.  os._exit skips those
    destructors; one process (no process group) returns as usual."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on one (a decision all ranks must share, such
    as stopping at a time limit)"""
    if not dist.is_initialized():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def wrap(model: torch.nn.Module, device: torch.device):
    """DDP around `model` when there are several processes (else the model itself)."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def share(n_global: int) -> int:
    """this rank's share of a global batch of n_global samples"""
    w = world_size()
    if n_global % w:
        raise ValueError("the batch (%d) must be a multiple of the number of processes (%d)" % (n_global, w))
    return n_global // w


def rank_batches(n: int, batch: int, seed: int, epoch: int, steps: int):
    """The sample indices this rank trains on at each of `steps` steps of an epoch over n
    samples with global batch `batch`: DistributedSampler's shuffled order (seeded by seed
    and epoch), so with one process the batches are that permutation in slices of `batch`
    and with W processes rank r takes every W-th index of each slice."""
    s = DistributedSampler(range(n), num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed,
                           drop_last=True)
    s.set_epoch(epoch)
    idx = list(s)
    b = share(batch)
    if steps * b > len(idx):
        raise ValueError("%d steps of %d samples need more than the %d samples of this rank" % (steps, b, len(idx)))
    return [idx[k * b:(k + 1) * b] for k in range(steps)]
