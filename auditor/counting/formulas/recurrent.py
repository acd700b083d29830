"""Recurrent layers: the oneDNN LSTM kernel the CPU runs (torch has no formula for it)."""
from __future__ import annotations

import math

import torch

from .registry import formula

aten = torch.ops.aten


def rnn_layer_flop(input_shape, w_ih_shape, w_hh_shape) -> int:
    """Input and recurrent matmuls over every time step: 2 x steps x batch x (|W_ih| + |W_hh|),
    the gate count (LSTM 4, GRU 3, plain RNN 1) being in the weights' first dimension."""
    steps_x_batch = math.prod(input_shape[:-1])
    return 2 * steps_x_batch * (math.prod(w_ih_shape) + math.prod(w_hh_shape))


@formula(aten.mkldnn_rnn_layer)
def mkldnn_rnn_layer_flop(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kw) -> int:
    return rnn_layer_flop(input_shape, w_ih_shape, w_hh_shape)


@formula(aten.mkldnn_rnn_layer_backward)
def mkldnn_rnn_layer_backward_flop(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kw) -> int:
    # Gradients for the inputs and the recurrent state, and for both weights: twice the forward.
    return 2 * rnn_layer_flop(input_shape, w_ih_shape, w_hh_shape)
