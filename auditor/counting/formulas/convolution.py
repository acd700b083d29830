"""Convolutions: the backward of grouped convolutions (torch's formula over-counts it) and the
oneDNN kernel the CPU runs for some convolutions."""
from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import conv_flop_count

from auditor.counting.formulas.registry import formula

aten = torch.ops.aten


@formula(aten.convolution_backward,
         replaces_torch="torch (2.13) counts a grouped convolution's weight gradient as dense: groups x too many")
def conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                       _output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """Input and weight gradients of a convolution, each as many FLOPs as the forward.

    torch's formula (2.13) counts the weight gradient as a dense convolution over all input
    channels, ``groups`` times too many: a depthwise convolution's weight gradient came out
    C times its true cost. Same computation, divided by ``groups``.
    """
    def t(shape):
        return [shape[1], shape[0]] + list(shape[2:])

    flops = 0
    if output_mask[0]:
        flops += conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
    if output_mask[1]:
        src, kernel = (grad_out_shape, x_shape) if transposed else (x_shape, grad_out_shape)
        flops += conv_flop_count(t(src), t(kernel), t(out_shape[1]), transposed=False) // groups
    return flops


def conv_output_numel_flop(x_shape, w_shape, out_shape) -> int:
    """2 x output elements x (input channels per group x kernel volume)."""
    return 2 * math.prod(out_shape) * math.prod(w_shape[1:])


@formula(aten.mkldnn_convolution)
def mkldnn_conv_flop(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_output_numel_flop(x_shape, w_shape, out_shape)
