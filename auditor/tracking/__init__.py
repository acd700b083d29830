"""Live tracking: the compute a training run uses, measured while it runs, nearly free.

One object, ``ComputeAudit``; ``audit(...)`` is a decorator over it. The model's top module
gets one forward pre-hook and one forward hook (free: no hook on every module), and the
optimizer's step is watched. The unit of the cache is one **call** of the model: its forward
and its own backward. A call is known by its key: the shapes, dtypes, grad flags and devices of
its inputs, training and grad mode, and its position among the calls since the last backward
(so that the first and second of a contrastive pair, which are followed by different loss
arithmetic, are told apart). The first time a key is met the calls are counted at dispatch level
(a *window*, see below); afterwards the cached ints are added: a call's forward when it returns,
its backward each time a backward reaches its outputs (a gradient hook on them; a backward over
two calls' losses reaches both, and each adds its own).

What the counter sees in a window is charged by where it comes from: ops inside a call to that
call; work outside the model with grad on after a call (the loss, a similarity matrix of two
calls' outputs) to that call's *tail*; in the backward, by the autograd node the engine runs,
whose sequence number says which call's forward (or tail) made it. Calls without grad
(evaluation) go to ``eval_flops``; recomputation (activation checkpointing) to
``recompute_flops``; the optimizer's own arithmetic (outside a closure) to ``optimizer_flops``.
None of these is training compute.

The parts (auditor/tracking/, docs/design.md), each a part of ComputeAudit sharing its state:

- ``calls``: one call of a watched model: its key, its cached cost, its phase, its live record;
- ``hooks``: the model's hooks: a call begins, returns, is reached by a backward;
- ``windows``: calls counted live at dispatch level, settled, closed, their cost learned;
- ``counter``: the routed counting mode, on only while a window or a measured optimizer step is;
- ``compiled``: torch.compile'd models, a new key counted on meta copies beside the compiled frame;
- ``steps``: optimizer steps (torch's step hooks, a wrapped ``step()``, closures);
- ``intervals``: ledger intervals, summed across ranks and written by rank 0; torch's Join;
- ``guard``: the blocking rules in force and the authorized budget, checked before each call;
- ``totals``: the run's figures and the Estimate the rules judge;
- ``run_dossier``: the sealed dossier at the end, from the ledger;
- ``sinks``, ``sink_set``: where the figures go (the protocol; the set that hands events out, the ledger first);
- ``ledger_sink``, ``progress``: the audit's own sinks, the ledger and the progress line;
- ``audit``: ComputeAudit itself, its lifecycle over the parts, and the ``audit`` decorator.
"""
from auditor.tracking.audit import ComputeAudit, audit
from auditor.tracking.calls import CallCost, Phase
from auditor.tracking.guard import ComputeBudgetExceeded

__all__ = ["ComputeAudit", "ComputeBudgetExceeded", "audit", "CallCost", "Phase"]
