"""Which operators must have a formula: matmul-, convolution-, attention- and scan-class ops.

Elementwise ops (add, mul, exp, softmax, norms...) are outside the counting convention, as in
torch's counter, PaLM's 6N + 12LHQT and the EU guidelines' architecture method; they are
neither counted nor reported. An op of the classes below met with no formula is reported in
``uncovered_ops`` and marks the count incomplete: never dropped silently.
"""
from __future__ import annotations

import re

_COMPUTE_WORDS = {
    "mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "mv", "addmv", "dot", "vdot",
    "gemm", "gemv", "einsum", "linear", "tensordot", "bilinear", "attention", "attn",
    "sdpa", "scan", "ssm", "selective", "mamba", "conv", "convolution", "cdist",
    "gmm", "spmm", "smm", "hspmm", "sspaddmm", "segment_mm",
    "trilinear", "rnn", "lstm", "gru", "recurrent", "solve", "triangular", "cholesky",
}
# Tokens such as "conv2d", "convolution", "transpose3d" after "conv", "flashattention".
_COMPUTE_TOKEN = re.compile(r"^(conv(olution)?\d*d?|convtranspose\d*d?|\w*attention\w*|\w*attn\w*)$")
# Ops whose names look like compute but do no arithmetic of that class.
_NOT_COMPUTE = {"convert_element_type", "convert", "_convert_weight_to_int4pack", "_convert_indices_from_coo_to_csr"}


def is_compute_class(name: str) -> bool:
    """True for ops such as 'aten._grouped_mm' or 'mylib::causal_conv1d_fwd'.

    ``name`` is 'namespace.op' or 'namespace::op', with or without an overload suffix.
    """
    base = re.split(r"::|\.", name)[1] if re.search(r"::|\.", name) else name
    if base in _NOT_COMPUTE:
        return False
    tokens = [t for t in base.strip("_").split("_") if t]
    return any(t in _COMPUTE_WORDS or _COMPUTE_TOKEN.match(t) for t in tokens)
