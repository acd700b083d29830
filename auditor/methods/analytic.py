"""The analytic method: training FLOPs from parameter and token counts, in exact integers.

Formulas (a multiply-add is 2 FLOP; training = forward + backward = 3 x forward):

- ``six_nd``: C = 6 N D. EU GPAI guidelines Annex A.2.2 ("C ~ 6 P D" for large dense
  transformers); Kaplan et al. 2020, "Scaling Laws for Neural Language Models", §2.1.
- ``kaplan``: C = (6 N + 6 n_layer n_ctx d_attn) D. Kaplan et al. 2020 Table 1:
  C_forward = 2N + 2 n_layer n_ctx d_attn per token, training = 3 x forward.
- ``palm``: C = (6 N + 12 L H Q T) D. Chowdhery et al. 2022, "PaLM", Appendix B (the basis of
  model FLOPs utilization): both attention matmuls (QK^T and AV) over the full context T.
- ``chinchilla_appendix_f``: Hoffmann et al. 2022, "Training Compute-Optimal Large Language
  Models", Appendix F, per-component forward FLOPs of one sequence, backward = 2 x forward.

For mixture-of-experts models N is the *active* parameter count: the experts a token does not
visit do no work for it (total parameters overstate DeepSeek-V3, 671B / 37B active, ~18x).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any

from auditor.estimate import Estimate
from auditor.estimate import band as _band
from auditor.inputs.values import positive_count
from auditor.text import sci

__all__ = ["six_nd", "kaplan", "palm", "chinchilla_forward", "chinchilla_appendix_f", "analytic_estimate"]


def _count(value: Any, what: str) -> int:
    """An exact positive whole number: ints, integral floats (405e9), numeric strings ("15.6e12")."""
    return positive_count(value, what)


def six_nd(n: int, d: int) -> int:
    """C = 6 N D (EU guidelines Annex A.2.2; Kaplan et al. 2020)."""
    return 6 * _count(n, "number of parameters") * _count(d, "number of tokens")


def kaplan(n: int, n_layer: int, n_ctx: int, d_attn: int, d: int) -> int:
    """C = (6N + 6 n_layer n_ctx d_attn) D: Kaplan et al. 2020 Table 1 (C_forward = 2N +
    2 n_layer n_ctx d_attn per token; the backward pass is twice the forward)."""
    n, d = _count(n, "number of parameters"), _count(d, "number of tokens")
    attn = _count(n_layer, "number of layers") * _count(n_ctx, "context length") * _count(d_attn, "d_attn")
    return (6 * n + 6 * attn) * d


def palm(n: int, L: int, H: int, Q: int, T: int, d: int, *, v_dim: int | None = None) -> int:  # noqa: N803
    """C = (6N + 12 L H Q T) D: Chowdhery et al. 2022 Appendix B, with L layers, H heads, Q the
    head dimension and T the sequence length (the paper's letters).

    ``v_dim``: the v width of a head where it differs from Q, the q . k width (MLA); then the
    attention term is 6 L H T (Q + v_dim): QK^T is 2 T Q a head a token forward, AV 2 T v_dim,
    and training is three forwards."""
    n, d = _count(n, "number of parameters"), _count(d, "number of tokens")
    qk = _count(Q, "head dimension")
    v = qk if v_dim is None else _count(v_dim, "v head dimension")
    heads_ctx = _count(L, "number of layers") * _count(H, "number of heads") * _count(T, "sequence length")
    return (6 * n + 6 * heads_ctx * (qk + v)) * d


def chinchilla_forward(*, seq_len: int, vocab_size: int, d_model: int, n_layers: int, n_heads: int,
                       key_size: int, ffw_size: int) -> dict[str, int]:
    """Forward FLOPs of one sequence, by component, as Hoffmann et al. 2022 Appendix F lists them:

        "We include all training FLOPs, including those contributed to by the embedding matrices
        [...] We use a factor of 2 to describe the multiply accumulate cost. For the forward pass,
        we consider contributions from:
        - Embeddings: 2 x seq_len x vocab_size x d_model
        - Attention (Single Layer)
          - Key, query and value projections: 2 x 3 x seq_len x d_model x (key_size x num_heads)
          - Key @ Query logits: 2 x seq_len x seq_len x (key_size x num_heads)
          - Softmax: 3 x num_heads x seq_len x seq_len
          - Softmax @ query reductions: 2 x seq_len x seq_len x (key_size x num_heads)
          - Final Linear: 2 x seq_len x (key_size x num_heads) x d_model
        - Dense Block (Single Layer): 2 x seq_len x (d_model x ffw_size + d_model x ffw_size)
        - Final Logits: 2 x seq_len x d_model x vocab_size
        - Total forward pass FLOPs: embeddings + num_layers x (total_attention + dense_block) + logits
        As in Kaplan et al. (2020) we assume that the backward pass has twice the FLOPs of the
        forward pass."

    Keys: embeddings, attention (one layer), dense (one layer), logits, forward (the total).
    """
    s, v, dm = _count(seq_len, "seq_len"), _count(vocab_size, "vocab_size"), _count(d_model, "d_model")
    layers, heads = _count(n_layers, "n_layers"), _count(n_heads, "n_heads")
    k, ffw = _count(key_size, "key_size"), _count(ffw_size, "ffw_size")
    kh = k * heads
    attention = (2 * 3 * s * dm * kh        # key, query and value projections
                 + 2 * s * s * kh            # key @ query logits
                 + 3 * heads * s * s         # softmax
                 + 2 * s * s * kh            # softmax @ value ("query reductions" in the paper)
                 + 2 * s * kh * dm)          # final linear
    dense = 2 * s * (dm * ffw + dm * ffw)
    embeddings, logits = 2 * s * v * dm, 2 * s * dm * v
    forward = embeddings + layers * (attention + dense) + logits
    return {"embeddings": embeddings, "attention": attention, "dense": dense, "logits": logits,
            "forward": forward}


def chinchilla_appendix_f(tokens: int, *, seq_len: int, vocab_size: int, d_model: int, n_layers: int,
                          n_heads: int, key_size: int, ffw_size: int, include_embeddings: bool = True) -> int:
    """Training FLOPs over ``tokens`` by Hoffmann et al. 2022 Appendix F: 3 x forward per sequence
    x tokens / seq_len. Every Appendix F term carries a factor seq_len, so the per-token figure is
    an exact integer and so is the total.

    ``include_embeddings=False`` drops the embedding and final-logit terms: the paper's text counts
    them, but its Table A4 ratios (Ours/6ND) are reproduced only without them (docs/methods.md)."""
    parts = chinchilla_forward(seq_len=seq_len, vocab_size=vocab_size, d_model=d_model, n_layers=n_layers,
                               n_heads=n_heads, key_size=key_size, ffw_size=ffw_size)
    forward = parts["forward"] if include_embeddings else parts["forward"] - parts["embeddings"] - parts["logits"]
    per_token, rest = divmod(3 * forward, _count(seq_len, "seq_len"))
    assert rest == 0, "every Appendix F term is a multiple of seq_len"
    return per_token * _count(tokens, "number of tokens")


def _ratio(a: int, b: int) -> float:
    return float(Fraction(a, b))


def _v_width(n_heads: int | None, v_head_dim: int | None, width: int | None) -> int | None:
    """Heads x the v width of a head where given, else the q . k width (one head size for both)."""
    if v_head_dim is None:
        return width
    if n_heads is None:
        raise ValueError("v_head_dim needs n_heads (heads x v_head_dim is the width of the values)")
    return _count(n_heads, "number of heads") * _count(v_head_dim, "v head dimension")


def _widths_text(n_heads, head_dim, v_head_dim, width: int, v_width: int) -> str:
    """Which attention widths the Kaplan and PaLM figures used, for the assumptions."""
    if n_heads is None:
        return f"attention widths: d_attn {width:,} for q . k and for v alike"
    v_head = head_dim if v_head_dim is None else v_head_dim
    return (f"attention widths: q . k {n_heads} heads x {head_dim} = {width:,}, v {n_heads} heads x {v_head} "
            f"= {v_width:,}" + ("" if v_width == width else " (the scores over q . k, the values over v)"))


def analytic_estimate(n_params: int, tokens: int, *, active_params: int | None = None,
                      n_layer: int | None = None, n_ctx: int | None = None, d_attn: int | None = None,
                      n_heads: int | None = None, head_dim: int | None = None, v_head_dim: int | None = None,
                      band: tuple[float, float] = (0.3, 0.3)) -> Estimate:
    """The analytic Estimate: 6 N D central, Kaplan and PaLM beside it where the shape is known.

    N is ``active_params`` for a mixture of experts (``n_params`` being the total), else
    ``n_params``. Kaplan needs n_layer, n_ctx and d_attn (d_attn defaults to n_heads x head_dim);
    PaLM needs n_layer, n_ctx and n_heads x head_dim (or d_attn, which is H x Q). head_dim is
    the q . k width of a head; ``v_head_dim`` (with n_heads) the v width where it differs (MLA),
    which PaLM's AV term uses. The range is ``band`` (relative, low and high) around 6ND,
    widened to hold the Kaplan and PaLM figures.
    """
    total = _count(n_params, "number of parameters")
    d = _count(tokens, "number of tokens")
    moe = active_params is not None
    n = _count(active_params, "number of active parameters") if moe else total
    if n > total:
        raise ValueError(f"active parameters ({n:,}) exceed total parameters ({total:,})")
    heads_dim = None
    if n_heads is not None and head_dim is not None:
        heads_dim = _count(n_heads, "number of heads") * _count(head_dim, "head dimension")
    elif (n_heads is None) != (head_dim is None):
        raise ValueError("n_heads and head_dim go together (their product is the attention width)")
    if d_attn is not None:
        d_attn = _count(d_attn, "d_attn")
        if heads_dim is not None and heads_dim != d_attn:
            raise ValueError(f"d_attn ({d_attn}) differs from n_heads x head_dim ({heads_dim})")
    width = d_attn if d_attn is not None else heads_dim
    v_width = _v_width(n_heads, v_head_dim, width)
    rel_low, rel_high = band
    if not (0 <= rel_low < 1 and rel_high >= 0):
        raise ValueError(f"band must be (low, high) relative widths with 0 <= low < 1 and high >= 0, got {band!r}")

    central = six_nd(n, d)
    which = "active" if moe else "total"
    assumptions = [
        f"C = 6 N D (EU GPAI guidelines Annex A.2.2; Kaplan et al. 2020): N = {n:,} {which} parameters, "
        f"D = {d:,} tokens (every token processed, repeated epochs included), 6N = {6 * n:,} FLOPs a token",
        "a multiply-add is 2 FLOP; backward = 2 x forward; elementwise operations (norms, activations, "
        "softmax) and the attention-score matmuls are not in 6ND",
    ]
    details: dict[str, Any] = {"six_nd": central, "n_used": n, "n_params_total": total, "tokens": d}
    if moe:
        over = six_nd(total, d)
        details.update(active_params=n, six_nd_total_params=over, total_over_active=_ratio(total, n))
        assumptions.append(
            f"mixture of experts: N counts the {n:,} parameters a token visits; 6 x all {total:,} parameters "
            f"would give {sci(over)} FLOPs, {_ratio(total, n):.1f}x the central figure, counting experts "
            "that do no work for the token")
    else:
        assumptions.append("dense model: N is the total parameter count, as the EU guidelines' 6PD uses "
                           "(Kaplan et al. leave embedding parameters out of N)")
    extra = []
    if n_layer is not None and n_ctx is not None and width is not None:
        layers, ctx = _count(n_layer, "number of layers"), _count(n_ctx, "context length")
        k_fig = kaplan(n, layers, ctx, width, d)
        p_fig = palm(n, layers, 1, width, ctx, d, v_dim=v_width)      # H x Q = width, H x d_v = v_width
        details.update(kaplan=k_fig, palm=p_fig, kaplan_over_six_nd=_ratio(k_fig, central),
                       palm_over_six_nd=_ratio(p_fig, central),
                       attention_shape={"n_layer": layers, "n_ctx": ctx, "d_attn": width, "d_v": v_width})
        extra = [k_fig, p_fig]
        same = v_width == width
        palm_form = "(6N + 12 L H Q T)" if same else "(6N + 6 L H T (d_qk + d_v))"
        assumptions += [
            _widths_text(n_heads, head_dim, v_head_dim, width, v_width),
            f"Kaplan et al. 2020 Table 1: C = (6N + 6 n_layer n_ctx d_attn) D = {sci(k_fig)} "
            f"({_ratio(k_fig, central):.3f}x 6ND; n_layer {layers}, n_ctx {ctx}, d_attn {width}: the q . k width)",
            f"PaLM, Chowdhery et al. 2022 App. B: C = {palm_form} D = {sci(p_fig)} "
            f"({_ratio(p_fig, central):.3f}x 6ND{'' if same else '; its 12 L H Q T with q . k and v apart'}): "
            "both attention matmuls over the full context; causal "
            "masking would make half of that attention work useless, an assumption not a discount",
        ]
    elif any(x is not None for x in (n_layer, n_ctx, d_attn, n_heads)):
        assumptions.append("Kaplan and PaLM figures need n_layer, n_ctx and d_attn (or n_heads and head_dim); "
                           "not all were given, so only 6ND is shown")
    low, high = _band(central, rel_low, rel_high)
    low, high = min([low, *extra]), max([high, *extra])
    assumptions.append(
        f"range: -{rel_low:.0%}/+{rel_high:.0%} around 6ND (the EU guidelines allow a 30 % estimation error, "
        "Annex A.2)" + (", widened to hold the Kaplan and PaLM figures" if extra else ""))
    return Estimate(method="analytic", flops=central, low=low, high=high, flops_per_token=6 * n, tokens=d,
                    assumptions=assumptions, details=details)
