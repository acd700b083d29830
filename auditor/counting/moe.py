"""Mixture-of-experts: count the experts each token visits, and run MoE models on meta.

Two implementation styles matter. Routed kernels (``aten._grouped_mm``, transformers'
``batched_mm``, or a loop over the experts that were hit) compute tokens x k rows, so the
formulas in ``formulas.py`` give the routed compute directly, exact for any load balance.
Dense-masked implementations (Hugging Face's Llama 4) compute every expert for every token and
multiply by a mostly-zero routing weight: the hardware does E/k times the model's work. Those
modules are listed here by class, with how to read k and E from them; the counter charges k/E
of their FLOPs to the model and keeps the rest as executed hardware work.
"""
from __future__ import annotations

from typing import Callable

import torch

# MoE block class name -> function(block) -> list of (experts child name, k, E)
DENSE_MASKED: dict[str, Callable[[torch.nn.Module], list[tuple[str, int, int]]]] = {
    "Llama4TextMoe": lambda block: [("experts", int(block.top_k), int(block.num_experts))],
}


def dense_expert_modules(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """Path of each dense-masked experts module -> (k, E)."""
    found: dict[str, tuple[int, int]] = {}
    for path, mod in model.named_modules():
        reader = DENSE_MASKED.get(type(mod).__name__)
        if reader is None:
            continue
        for child, k, e in reader(mod):
            found[f"{path}.{child}" if path else child] = (k, e)
    return found


def is_moe(model: torch.nn.Module) -> bool:
    cfg = getattr(model, "config", None)
    keys = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_experts_per_tok")
    return any(getattr(cfg, k, None) for k in keys)


def on_meta(model: torch.nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def prepare_for_meta(model: torch.nn.Module, assumptions: list[str]) -> torch.dtype | None:
    """Cast a meta model to bfloat16 so grouped-mm expert kernels accept it.

    Operation counts do not depend on the numeric precision (EU guidelines Annex A.2), and on
    meta nothing is stored, so the cast is free. Returns the dtype floating inputs should use.
    """
    if not on_meta(model):
        return None
    model.to(torch.bfloat16)
    assumptions.append("counted on the meta device in bfloat16: operation counts do not depend on precision")
    if is_moe(model):
        assumptions.append(
            "mixture of experts on meta: routing is data-dependent, so expert FLOPs are counted as "
            "k x tokens x per-expert FLOPs per token, exact for any load balance when every token "
            "visits exactly k experts (no capacity dropping)")
    return torch.bfloat16
