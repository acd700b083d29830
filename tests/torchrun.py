"""Run a script on 2 CPU processes under torchrun (gloo); each rank writes OUT/rank<r>.json.
Or spawn a function on N processes, as torchrun would set them up (``spawn_ranks``)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

RANKS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(worker, world: int, args: tuple, tmp: Path, timeout: float) -> list[dict]:
    """``worker(rank, *args)`` on ``world`` spawned processes; each writes tmp/rank<r>.json. Their
    results, in rank order; a process still running at ``timeout`` is ended and it fails."""
    import torch.multiprocessing as mp

    ctx = mp.start_processes(worker, args=args, nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {world} ranks did not finish in {timeout:.0f} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(world)]


def run_on_two_ranks(tmp_path: Path, script: str, timeout: float = 180) -> list[dict]:
    """``script`` is formatted with ``tests`` (this folder, for imports) and ``out`` (tmp_path)."""
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    path = tmp_path / "script.py"
    path.write_text(script.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(RANKS),
                           "--master_addr", "127.0.0.1", "--master_port", str(port), str(path)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(RANKS)]
