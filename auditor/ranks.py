"""torch.distributed helpers for the tracker: this process's rank, the world size, exact sums."""
from __future__ import annotations

import torch

_LIMB = 31  # bits: int64 sums of 31-bit limbs cannot overflow below 2**32 ranks


def sum_across_ranks(values: list[int]) -> list[int]:
    """Exact all-rank sums of Python ints: int64 wraps at 9.2e18, far below the 1e25 a run can reach.

    Each value travels as 31-bit limbs in an int64 tensor on the device the process group's
    backend serves (NCCL: the current accelerator; gloo: the CPU)."""
    import torch.distributed as dist

    limbs = 4  # 124 bits
    for v in values:
        if v < 0 or v >= 1 << (_LIMB * limbs):
            raise ValueError(f"cannot reduce {v}: out of range")
    flat = [(v >> (_LIMB * i)) & ((1 << _LIMB) - 1) for v in values for i in range(limbs)]
    t = torch.tensor(flat, dtype=torch.int64, device=collective_device())
    dist.all_reduce(t)
    sums = [int(x) for x in t.cpu().tolist()]
    return [sum(sums[j * limbs + i] << (_LIMB * i) for i in range(limbs)) for j in range(len(values))]


def max_across_ranks(values: list[int]) -> list[int]:
    """Each value's maximum over all ranks (int64: steps and counts of intervals, not FLOPs)."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.int64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [int(x) for x in t.cpu().tolist()]


def collective_device() -> torch.device | str:
    """Where the default process group's backend takes tensors (NCCL: the current accelerator)."""
    import torch.distributed as dist

    if "nccl" in str(dist.get_backend()).lower() and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return "cpu"


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
