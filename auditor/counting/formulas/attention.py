"""Attention: CPU flash attention (no formula in torch), and the fused kernels' backward split
into model compute and the recomputed scores (torch counts both as the op's work)."""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import (
    _efficient_attention_backward_flop,
    _flash_attention_backward_flop,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from auditor.counting.formulas.registry import Split, formula

aten = torch.ops.aten

RECOMPUTE = ("torch counts the recomputed QK^T as model work (2.5x the forward); "
             "we count the four gradient matmuls (2x) and keep the recomputed one as hardware work")


@formula(aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_fused_attention_overrideable)
def cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # Full QK^T and AV over the context: causal masking is a stated assumption, not a discount.
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def attention_backward(total: int, d_qk: int, d_v: int) -> Split:
    """Split a fused attention backward into model compute and the recomputed scores.

    Fused kernels (flash, memory-efficient, cuDNN, CPU flash) do not keep the attention matrix:
    their backward recomputes QK^T, so torch's formula counts five matmuls, 2.5x the forward.
    The model's backward is the four gradient matmuls, 2x the forward, as in the math path,
    PaLM's 12LHQT and every other layer; the recomputed QK^T is hardware work, kept apart like
    activation checkpointing. Per (batch x head), with n = s_q * s_k, torch's total is
    2n(3 d_qk + 2 d_v) and the recomputed part 2n d_qk.
    """
    recomputed = total * d_qk // (3 * d_qk + 2 * d_v)
    return Split(total - recomputed, recomputed)


@formula(aten._scaled_dot_product_flash_attention_for_cpu_backward,
         aten._scaled_dot_product_fused_attention_overrideable_backward)
@formula(aten._scaled_dot_product_efficient_attention_backward,
         aten._scaled_dot_product_flash_attention_backward,
         aten._scaled_dot_product_cudnn_attention_backward, replaces_torch=RECOMPUTE)
def fused_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> Split:
    total = sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)
    return attention_backward(total, query_shape[-1], value_shape[-1])


def _low_level_backward(torch_formula: Callable[..., int]) -> Callable[..., Split]:
    def split(grad_out, query, key, value, *args, **kwargs) -> Split:
        total = torch_formula(grad_out, query, key, value, *args, **kwargs)
        return attention_backward(total, query.shape[-1], value.shape[-1])
    return split


formula(aten._flash_attention_backward, raw=True, replaces_torch=RECOMPUTE)(
    _low_level_backward(_flash_attention_backward_flop))
formula(aten._efficient_attention_backward, raw=True, replaces_torch=RECOMPUTE)(
    _low_level_backward(_efficient_attention_backward_flop))
