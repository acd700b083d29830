"""What the analytic formulas need from a model: parameter counts and attention shape."""
from __future__ import annotations

from dataclasses import asdict, dataclass

_EXPERT_COUNT_KEYS = ("num_local_experts", "n_routed_experts", "num_experts", "moe_num_experts")
_TOP_K_KEYS = ("num_experts_per_tok", "moe_topk", "moe_top_k", "top_k", "top_k_experts", "num_selected_experts")


@dataclass
class ModelInfo:
    parameters: int               # every parameter, shared ones once
    active_parameters: int        # what one token uses: k of E routed experts
    embedding_parameters: int     # input embedding tables (lookups, no matmul)
    n_layer: int | None = None
    n_heads: int | None = None
    head_dim: int | None = None
    d_model: int | None = None
    experts: int | None = None
    top_k: int | None = None
    qk_head_dim: int | None = None  # the width of q . k a head (MLA: nope + rope, 192 in DeepSeek-V3)
    v_head_dim: int | None = None   # the width of v a head (MLA: v_head_dim, 128 in DeepSeek-V3)

    def to_dict(self) -> dict:
        return asdict(self)


def _first(config, keys):
    for key in keys:
        try:
            value = getattr(config, key, None)
        except Exception:  # noqa: BLE001 - transformers raises its own error for a per-layer setting
            value = None   # that varies across layers (Gemma 4's head_dim): no single value to use
        if isinstance(value, int) and value > 0:
            return value
    return None


def _text_config(model):
    config = getattr(model, "config", None)
    return getattr(config, "text_config", None) or config


def expert_settings(model) -> tuple[int | None, int | None]:
    """(E routed experts, k a token visits) from the model's config; None where not given."""
    text = _text_config(model)
    moe = getattr(text, "ffn_config", None) or text  # DBRX keeps its experts in a sub-config
    return _first(moe, _EXPERT_COUNT_KEYS), _first(moe, _TOP_K_KEYS)


def routed_parameters(model, experts: int) -> list:
    """The routed experts' weights (each once): under a module named "experts" (not
    "shared_experts"), less a router inside it and a bias all experts share (JetMoE's attention
    experts); or stacked one slice per expert (JetMoE's ParallelExperts: [E, out, in])."""
    routed = {id(p): p for name, mod in model.named_modules() if name.split(".")[-1] == "experts"
              for pname, p in mod.named_parameters()
              if pname.split(".")[0] not in ("router", "gate") and ("." in pname or p.dim() > 1)}
    routed.update((id(p), p) for p in model.parameters() if p.dim() == 3 and p.shape[0] == experts)
    return list(routed.values())


def attention_widths(text, head_dim: int | None) -> tuple[int | None, int | None]:
    """(q . k width, v width) of one attention head from a config; ``head_dim`` where it says no other.

    MLA (DeepSeek-V2/V3, Kimi, MiniCPM3) scores over qk_nope_head_dim + qk_rope_head_dim (its
    head_dim is only the rope part) and mixes values of v_head_dim; others (MiMo-V2) give
    head_dim for q . k and v_head_dim for v."""
    nope, rope = _first(text, ("qk_nope_head_dim",)), _first(text, ("qk_rope_head_dim",))
    qk = _first(text, ("qk_head_dim",)) or (nope + rope if nope and rope else head_dim)
    return qk, _first(text, ("v_head_dim",)) or qk


def model_info(model) -> ModelInfo:
    import torch

    params = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in params.values())
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    text = _text_config(model)
    experts, top_k = expert_settings(model)
    active = total
    if experts and top_k and top_k < experts:
        routed_total = sum(p.numel() for p in routed_parameters(model, experts))
        active = total - routed_total + routed_total * top_k // experts
    n_heads = _first(text, ("num_attention_heads", "n_head", "num_heads"))
    d_model = _first(text, ("hidden_size", "n_embd", "d_model"))
    head_dim = _first(text, ("head_dim", "d_kv")) or (d_model // n_heads if d_model and n_heads else None)
    n_layer = _first(text, ("num_hidden_layers", "n_layer", "num_layers"))
    qk, v = attention_widths(text, head_dim)
    return ModelInfo(total, active, embedding, n_layer, n_heads, head_dim, d_model, experts, top_k, qk, v)
