"""Tensor parallelism on gloo ranks (CPU): the model's compute once per replica, local work apart.

A transformer-like block: q, k, v and the MLP's up projection column-parallel, the attention
output and the MLP's down projection row-parallel (torch's ColwiseParallel / RowwiseParallel),
attention over each rank's own heads on plain tensors, and a head left unparallelized, which
every rank of the tensor-parallel group runs whole on the same replicated activations.

Closed form, for B sequences of S tokens (T = B S tokens), width D, H heads, MLP width F, head
width O, a multiply-add 2 FLOPs. The block's input is data (no gradient), so q, k and v have
their weight gradient only; every other matmul has its weight and input gradients (the residual
carries a gradient into the MLP and the head):

  q, k, v:    3 x 2 T D D x 2       (forward, weight gradient)
  o:          2 T D D x 3
  up, down:   2 x 2 T D F x 3
  head:       2 T D O x 3
  attention:  2 x 2 B S S D x 3     (Q K^T and A V over all heads; backward twice the forward)

torch's FlopCounterMode sees the parallel layers' DTensor ops at their global shapes on every
rank, the attention on each rank's heads and the head whole on each rank: summed over a group of
P ranks it gives P x (the parallel layers and the head) + the attention once.
"""
from __future__ import annotations

import json
import os
import traceback
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

D, H, F, O = 16, 4, 32, 8  # noqa: E741 - the widths as the closed form above names them
SEQ = [6, 6, 10]                 # three steps: the second repeats the first's key, the third is new


def closed_form(batch: int, seq: int) -> dict[str, int]:
    t = batch * seq
    parts = {"qkv": 3 * 2 * t * D * D * 2, "o": 2 * t * D * D * 3, "mlp": 2 * 2 * t * D * F * 3,
             "head": 2 * t * D * O * 3, "attention": 2 * 2 * batch * seq * seq * D * 3}
    return parts


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (torch.nn.Linear(D, D) for _ in range(4))
        self.up, self.down = torch.nn.Linear(D, F), torch.nn.Linear(F, D)
        self.head = torch.nn.Linear(D, O)  # not parallelized: replicated on every tensor-parallel rank

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = (p(x).view(b, s, -1, D // H).transpose(1, 2) for p in (self.q, self.k, self.v))  # local heads
        a = ((q @ k.transpose(-1, -2)) / (D // H) ** 0.5).softmax(-1) @ v
        x = x + self.o(a.transpose(1, 2).reshape(b, s, -1))
        x = x + self.down(torch.relu(self.up(x)))
        return self.head(x)


def _parallel_block(tp_mesh, dp_mesh=None):
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    torch.manual_seed(0)
    block = Block()
    parallelize_module(block, tp_mesh, {"q": ColwiseParallel(), "k": ColwiseParallel(), "v": ColwiseParallel(),
                                        "o": RowwiseParallel(), "up": ColwiseParallel(), "down": RowwiseParallel()})
    if dp_mesh is not None:
        from torch.distributed.fsdp import fully_shard

        fully_shard(block, mesh=dp_mesh)
    return block, torch.optim.SGD(block.parameters(), lr=0.01)


def _train(block, opt, batch, seed):
    g = torch.Generator().manual_seed(seed)   # every rank of a tensor-parallel group the same batch
    for s in SEQ:
        block(torch.randn(batch, s, D, generator=g)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()


def _scenario(tp_mesh, dp_mesh, batch, seed, tmp):
    from torch.utils.flop_counter import FlopCounterMode

    from auditor.record.ledger import read_ledger
    from auditor.tracking import ComputeAudit

    block, opt = _parallel_block(tp_mesh, dp_mesh)
    run_dir = Path(tmp) / "tp-run"
    with ComputeAudit(run_dir, block, opt, flush_every_steps=1, flush_every_seconds=None) as run:
        local_before_stop = run.total_flops
        _train(block, opt, batch, seed)
        local = run.total_flops
        local_hardware = run.hardware_flops
    block, opt = _parallel_block(tp_mesh, dp_mesh)
    with FlopCounterMode(display=False) as torch_counter:
        _train(block, opt, batch, seed)
    out = {"local": local, "local_hardware": local_hardware, "total": run.total_flops,
           "hardware": run.hardware_flops, "torch": torch_counter.get_total_flops(), "steps": run.steps,
           "before": local_before_stop, "uncovered": sorted(run.uncovered),
           "assumptions": run.estimate.assumptions, "counted": run.counted_signatures}
    dist.barrier()
    if dist.get_rank() == 0:
        state = read_ledger(run_dir)
        out["ledger_total"] = state.total
        out["ledger_hardware"] = sum(r.get("hardware_flops", r["flops"]) for r in state.records)
        data = json.loads((run_dir / "dossier.json").read_text())
        out["dossier"] = {"total": data["total_flops"], "hardware": data["tracked"]["hardware_flops"]}
        from auditor.record.verify import verify_target

        out["verify"] = verify_target(run_dir)[0]
    return out


def _worker(rank, world, port, tmp, two_d):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    from torch.distributed.device_mesh import init_device_mesh

    result = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if two_d:
                mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
                dp = mesh["dp"].get_local_rank()
                result = _scenario(mesh["tp"], mesh["dp"], batch=2 + dp, seed=dp, tmp=tmp)
                result["dp"] = dp
            else:
                result = _scenario(init_device_mesh("cpu", (world,)), None, batch=2, seed=0, tmp=tmp)
    except Exception:
        result = {"error": traceback.format_exc()}
    finally:
        dist.destroy_process_group()
        Path(tmp, f"rank{rank}.json").write_text(json.dumps(result))


def _spawn(tmp: Path, world: int, two_d: bool, timeout: float = 300.0) -> list[dict]:
    from torchrun import free_port, spawn_ranks

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available")
    out = spawn_ranks(_worker, world, (world, free_port(), str(tmp), two_d), tmp, timeout)
    for rank, r in enumerate(out):
        assert "error" not in r, f"rank {rank}:\n{r['error']}"
    return out


def _step_sum(batch: int) -> dict[str, int]:
    parts: dict[str, int] = {}
    for s in SEQ:
        for k, v in closed_form(batch, s).items():
            parts[k] = parts.get(k, 0) + v
    return parts


def test_tensor_parallel_counts_the_model_once_and_the_replicated_head_on_every_rank(tmp_path):
    r0, r1 = _spawn(tmp_path, 2, two_d=False)
    parts = _step_sum(2)
    model = sum(parts.values())
    assert r0["local"] + r1["local"] == model      # each rank its share; the group the model once
    assert r0["total"] == r1["total"] == model     # after stop: the run's, on every rank
    assert r0["ledger_total"] == r0["dossier"]["total"] == model and r0["verify"] == 0
    # Hardware: the parallel layers and the attention split between the ranks, the head whole on each.
    assert r0["hardware"] == r1["hardware"] == model + parts["head"]
    assert r0["local_hardware"] + r1["local_hardware"] == model + parts["head"]
    assert r0["ledger_hardware"] == r0["dossier"]["hardware"] == model + parts["head"]
    # torch's counter, summed over the two ranks: twice the parallel layers and the head.
    assert r0["torch"] + r1["torch"] == 2 * (model - parts["attention"]) + parts["attention"]
    assert r0["steps"] == r1["steps"] == 3 and r0["counted"] == 2  # seq 6 counted once, seq 10 once
    assert not r0["uncovered"] and any("tensor parallel" in a for a in r0["assumptions"])


def test_fsdp2_and_tensor_parallel_on_a_2d_mesh_sum_the_data_parallel_replicas(tmp_path):
    ranks = _spawn(tmp_path, 4, two_d=True, timeout=600.0)
    replicas = {r["dp"] for r in ranks}
    assert replicas == {0, 1}
    model = sum(sum(_step_sum(2 + dp).values()) for dp in (0, 1))   # batch 2 on one replica, 3 on the other
    head = sum(_step_sum(2 + dp)["head"] for dp in (0, 1))
    assert sum(r["local"] for r in ranks) == model
    assert all(r["total"] == model and r["hardware"] == model + head for r in ranks)
    assert ranks[0]["ledger_total"] == ranks[0]["dossier"]["total"] == model and ranks[0]["verify"] == 0
