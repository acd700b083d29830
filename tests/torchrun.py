"""Run a script on 2 CPU processes under torchrun (gloo); each rank writes OUT/rank<r>.json."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

RANKS = 2


def run_on_two_ranks(tmp_path: Path, script: str, timeout: float = 180) -> list[dict]:
    """``script`` is formatted with ``tests`` (this folder, for imports) and ``out`` (tmp_path)."""
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    path = tmp_path / "script.py"
    path.write_text(script.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(RANKS),
                           "--master_addr", "127.0.0.1", "--master_port", str(port), str(path)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(RANKS)]
