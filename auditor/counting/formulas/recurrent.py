"""Recurrent layers: the oneDNN LSTM kernel the CPU runs (torch has no formula for it).

GRU, plain RNN, and LSTM on the meta device (or in float64, or over packed sequences) decompose
into matmuls, which are counted one by one. oneDNN's LSTM is one op per layer and direction, and
its backward computes every gradient whether the model needs it or not (the first layer's input
gradient when the input is data, the initial state's): the gradients the model needs are model
compute, as in the decomposed path; the rest is hardware work, kept apart.
"""
from __future__ import annotations

import math

import torch

from auditor.counting.formulas.registry import Split, formula

aten = torch.ops.aten


def rnn_layer_flop(input_shape, w_ih_shape, w_hh_shape) -> int:
    """Input and recurrent matmuls over every time step: 2 x steps x batch x (|W_ih| + |W_hh|),
    the gate count (LSTM 4, GRU 3, plain RNN 1) being in the weights' first dimension."""
    steps_x_batch = math.prod(input_shape[:-1])
    return 2 * steps_x_batch * (math.prod(w_ih_shape) + math.prod(w_hh_shape))


@formula(aten.mkldnn_rnn_layer)
def mkldnn_rnn_layer_flop(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kw) -> int:
    return rnn_layer_flop(input_shape, w_ih_shape, w_hh_shape)


def rnn_layer_backward_needed(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, hx: torch.Tensor) -> int:
    """The matmuls of one layer's backward that the model needs, as the decomposed path runs them.

    Over rows = steps x batch (x is (steps, batch, in), hx (batch, hidden)):
      weight gradients   2 rows |W_ih| and 2 rows |W_hh|, for the weights that require grad;
      input gradient     2 rows |W_ih|, where the input requires grad (not data's);
      recurrent gradient 2 (rows - batch) |W_hh| to the state of every step but the first, and
                         2 batch |W_hh| more where the initial state requires grad.
    The recurrent gradient is always needed when this backward runs: every step's state depends
    on whichever of input, weights and initial state requires grad.
    """
    rows, batch = math.prod(x.shape[:-1]), hx.shape[-2]
    ih, hh = w_ih.numel(), w_hh.numel()
    flops = 2 * (rows - batch) * hh
    flops += 2 * rows * ih * (w_ih.requires_grad + x.requires_grad)
    flops += 2 * rows * hh * w_hh.requires_grad + 2 * batch * hh * hx.requires_grad
    return flops


@formula(aten.mkldnn_rnn_layer_backward, raw=True)
def mkldnn_rnn_layer_backward_flop(x, w_ih, w_hh, _b_ih, _b_hh, hx, *args, out_val=None, **kw) -> Split:
    # oneDNN computes the input, state and weight gradients, all of them: twice the forward.
    executed = 2 * rnn_layer_flop(x.shape, w_ih.shape, w_hh.shape)
    needed = rnn_layer_backward_needed(x, w_ih, w_hh, hx)
    return Split(needed, executed - needed)
