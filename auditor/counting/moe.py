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

import types
from contextlib import contextmanager
from typing import Callable

import torch

# MoE block class name -> function(block) -> list of (experts child name, k, E)
DENSE_MASKED: dict[str, Callable[[torch.nn.Module], list[tuple[str, int, int]]]] = {
    "Llama4TextMoe": lambda block: [("experts", int(block.top_k), int(block.num_experts))],
}


def dense_expert_modules(model: torch.nn.Module, names: dict[torch.nn.Module, str] | None = None
                         ) -> dict[str, tuple[int, int]]:
    """Path of each dense-masked experts module -> (k, E).

    ``names``: each module's path as the counter records it (counting.mode.module_paths of the
    whole model). The repeated-block counter runs the model with its block lists shortened, where
    ``named_modules`` would renumber the blocks kept: the third block would be found at ``.1``
    and its records, kept under ``.3``, charged all E experts."""
    found: dict[str, tuple[int, int]] = {}
    for path, mod in model.named_modules():
        reader = DENSE_MASKED.get(type(mod).__name__)
        if reader is None:
            continue
        for child, k, e in reader(mod):
            expert = getattr(mod, child)
            key = names[expert] if names is not None and expert in names else f"{path}.{child}" if path else child
            found[key] = (k, e)
    return found


def is_moe(model: torch.nn.Module) -> bool:
    """The config names routed experts and the model holds their weights (a config may carry
    expert settings with the MoE block switched off: Gemma 4, Doge)."""
    from auditor.counting.modelinfo import expert_settings, routed_parameters

    experts, _ = expert_settings(model)
    return bool(experts) and bool(routed_parameters(model, experts))


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


# ----- hand-written expert loops on meta
#
# Some experts code asks the data which experts were hit (``nonzero``, ``tolist``) and loops
# over them; meta tensors hold no data. The FLOPs of such a loop depend on the rows alone: each
# of the tokens x k (token, slot) pairs goes through one expert's matmuls, whatever the routing.
# On meta these forwards send the same tokens x k rows through the same matmuls with a fixed
# split, so the count is exact. The meta count is checked equal to a CPU count with real routing
# in tests/test_meta_routing.py.

def _dbrx_experts(self, hidden_states, top_k_index, top_k_weights):
    batch, k = hidden_states.shape[0], top_k_index.shape[-1]
    rows = hidden_states.reshape(-1, self.hidden_size).repeat_interleave(k, dim=0)
    split = (-1, self.ffn_hidden_size, self.hidden_size)
    w1, v1, w2 = (getattr(self.mlp, name).view(split)[0] for name in ("w1", "v1", "w2"))
    states = self.mlp(rows, w1, v1, w2) * top_k_weights.reshape(-1, 1)
    return states.view(-1, k, self.hidden_size).sum(1).view(batch, -1, self.hidden_size)


def _jetmoe_gating(self, hidden_states):
    # transformers' JetMoeTopKGating.forward, with expert_size (read from the data there) split evenly
    logits = self.layer(hidden_states).float()
    top_k_logits, top_k_indices = logits.topk(self.top_k, dim=1)
    top_k_gates = torch.softmax(top_k_logits, dim=1).type_as(hidden_states)
    rows, experts = top_k_indices.numel(), self.num_experts
    expert_size = [rows // experts + (i < rows % experts) for i in range(experts)]
    _, index_sorted_experts = top_k_indices.flatten().sort(0)
    batch_index = index_sorted_experts.div(self.top_k, rounding_mode="trunc")
    batch_gates = top_k_gates.flatten()[index_sorted_experts]
    return index_sorted_experts, batch_index, batch_gates, expert_size, logits


META_ROUTED: dict[str, Callable] = {"DbrxExperts": _dbrx_experts, "JetMoeTopKGating": _jetmoe_gating}


@contextmanager
def routed_on_meta(model: torch.nn.Module, assumptions: list[str]):
    """Replace, for the count only, the forwards in META_ROUTED of a meta model's modules."""
    patched = [mod for mod in model.modules() if type(mod).__name__ in META_ROUTED] if on_meta(model) else []
    for mod in patched:
        mod.forward = types.MethodType(META_ROUTED[type(mod).__name__], mod)
    if patched:
        kinds = ", ".join(sorted({type(m).__name__ for m in patched}))
        assumptions.append(f"{kinds}: a loop over the experts hit, which meta cannot run, counted as its "
                           "tokens x k rows through one expert's matmuls (the same FLOPs for any routing)")
    try:
        yield
    finally:
        for mod in patched:
            del mod.forward
