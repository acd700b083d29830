"""Optimizer update FLOPs: reported apart, never added to training compute.

Per trainable parameter element, counting each elementwise arithmetic op once (a multiply-add
is two, as everywhere else), with scalars such as bias corrections computed once per step and
not counted:

SGD:   update p -= lr * g                                   2
       + weight decay  g += wd * p                          2
       + momentum      b = mu * b + g  (dampening 0)        2  (dampening != 0: 3)
       + nesterov      g = g + mu * b                       2
AdamW: decoupled decay p *= 1 - lr * wd                     1
       first moment    m = b1 * m + (1 - b1) * g            3
       second moment   v = b2 * v + (1 - b2) * g * g        4
       denominator     sqrt(v) / sqrt(bc2) + eps            3
       update          p -= (lr / bc1) * m / denom          3   -> 14 (13 without decay)
Adam:  as AdamW, but L2 decay g += wd * p                   2   -> 15 (13 without decay)
amsgrad (Adam, AdamW): running maximum of v                 +1
Every trainable parameter is counted, as planned compute; torch skips those whose gradient
is None at the step.
"""
from __future__ import annotations

import torch

_ADAM_CORE = 3 + 4 + 3 + 3  # moments, denominator, update


def per_element_ops(kind: str, group: dict) -> int:
    """Operations per parameter element for one param group of a torch optimizer."""
    wd = bool(group.get("weight_decay", 0))
    if kind == "sgd":
        ops = 2 + (2 if wd else 0)
        momentum = group.get("momentum", 0)
        if momentum:
            ops += 2 if not group.get("dampening", 0) else 3
            ops += 2 if group.get("nesterov", False) else 0
        return ops
    if kind in ("adam", "adamw"):
        core = _ADAM_CORE + (1 if group.get("amsgrad", False) else 0)
        if kind == "adamw" or group.get("decoupled_weight_decay", False):
            return core + (1 if wd else 0)
        return core + (2 if wd else 0)
    raise ValueError(f"no update formula for optimizer {kind!r}; known: sgd, adam, adamw")


# torch's optimizers whose step is elementwise arithmetic only: under the counting engine's
# conventions (docs/counting.md) their update counts 0, so a tracker need not measure it.
# Checked by tests/test_tracking_optimizers.py; Adafactor is not here: its factored second
# moment is an outer product (a matmul).
_ELEMENTWISE_STEPS = frozenset({"SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "ASGD", "NAdam", "RAdam",
                                "RMSprop", "Rprop"})


def elementwise_step(optimizer) -> bool:
    """True when ``optimizer`` is one of torch's own whose step has no operator of a counted class."""
    cls = type(optimizer)
    return cls.__module__.startswith("torch.optim") and cls.__name__ in _ELEMENTWISE_STEPS


def optimizer_flops(optimizer: torch.optim.Optimizer) -> int:
    """FLOPs of one ``optimizer.step()`` over its trainable parameters."""
    kind = type(optimizer).__name__.lower()
    total = 0
    for group in optimizer.param_groups:
        n = sum(p.numel() for p in group["params"] if p.requires_grad)
        total += n * per_element_ops(kind, group)
    return total
