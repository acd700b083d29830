"""Cross-check of our forward count against fvcore's ``FlopCountAnalysis``: see docs/crosscheck.md.

fvcore traces the forward with ``torch.jit`` and counts a multiply-add as one. Where both count
an op our forward is exactly 2 x fvcore: matmul-class ops and convolutions are compared per
family and per module (ops charged to the innermost module on both sides). Every difference is
listed with a ``kind``: ``convention`` (fvcore counts norms, pooling, upsample, elementwise for
us), ``fvcore_unsupported`` (no fvcore handler for a compute op ours counts: SDPA, baddbmm, gru),
``fvcore_formula`` (fvcore's handler is wrong or fails: aten::matmul misses batch dims broadcast
from its second operand and raises on a 1-D one, counted 0 here; an einsum summing over no
index gets half numpy's cost), ``uncounted`` (fvcore met a compute op it cannot count where ours
counts no more: neither counts it, e.g. nn.LSTM on CPU, nn.Bilinear), ``mismatch`` (unexplained).
``agrees``: ours == 2 x fvcore over the compared ops, and every difference is a ``convention`` one.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from auditor.counting.classify import is_compute_class
from auditor.counting.step import count_step

# fvcore's default handlers (by the name they report) -> the family of ops we compare them in.
FVCORE_FAMILY = {"linear": "matmul", "addmm": "matmul", "matmul": "matmul", "mm": "matmul",
                 "bmm": "matmul", "einsum": "matmul", "conv": "convolution"}
# Compute that classify.is_compute_class does not name (recurrent layers).
_RECURRENT = {"lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell"}
# A family row takes its kind from the module rows (SDPA may run as bmm on our side): the first found.
_CAUSES = ("mismatch", "fvcore_unsupported", "fvcore_formula", "uncounted")


def family(op: str) -> str:
    """'aten.convolution' -> convolution, SDPA ops -> attention, other compute ops -> matmul."""
    return "convolution" if "conv" in op else "attention" if ("attention" in op or "attn" in op) else "matmul"


@dataclass
class Difference:
    scope: str      # "op" (a family of ops, or an fvcore op outside our convention) or "module"
    where: str
    ours: int
    fvcore_x2: int  # 2 x fvcore's count: comparable with ours
    kind: str       # convention | fvcore_unsupported | fvcore_formula | uncounted | mismatch
    note: str


@dataclass
class CrossCheck:
    ours_forward: int
    fvcore_macs: int            # fvcore's total, every handler included
    fvcore_compared_macs: int   # fvcore's matmul-class and convolution counts only
    agrees: bool
    differences: list[Difference] = field(default_factory=list)
    fvcore_unsupported: dict[str, int] = field(default_factory=dict)
    ours_uncovered: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    items = out.values() if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else []
    return [t for v in items for t in _tensors(v)]


class _Traced(torch.nn.Module):
    """Calls ``model`` with tensors as positional args (what jit tracing needs), returns tensors."""

    def __init__(self, model: torch.nn.Module, inputs: Any):
        super().__init__()
        self.model, self.keys = model, list(inputs) if isinstance(inputs, Mapping) else None
        self.template = list(inputs.values() if isinstance(inputs, Mapping) else
                             inputs if isinstance(inputs, (tuple, list)) else [inputs])
        self.args = tuple(v for v in self.template if isinstance(v, torch.Tensor))

    def forward(self, *tensors):
        it = iter(tensors)
        values = [next(it) if isinstance(v, torch.Tensor) else v for v in self.template]
        out = self.model(**dict(zip(self.keys, values))) if self.keys is not None else self.model(*values)
        return tuple(_tensors(out))


def _watched(name: str, handle, notes: dict[str, list[str]]):
    """fvcore's handler, unchanged in what it counts, noting where it is wrong or fails."""
    def run(inputs, outputs):
        scope = outputs[0].node().scopeName().split("/")[-1]
        try:
            got = handle(inputs, outputs)
        except Exception as exc:
            shapes = [v.type().sizes() for v in inputs if v.isCompleteTensor()]
            notes[scope].append(f"fvcore's {name} handler fails on shapes {shapes} ({type(exc).__name__}); counted 0")
            return 0
        if name in ("aten::matmul", "aten::mm"):
            a, b = (v.type().sizes() for v in inputs[:2])
            a2, b2 = ([1] + a if len(a) == 1 else a), (b + [1] if len(b) == 1 else b)
            exact = math.prod(torch.broadcast_shapes(tuple(a2[:-2]), tuple(b2[:-2]))) * math.prod(a2[-2:]) * b2[-1]
            if exact != got:
                notes[scope].append(f"fvcore's {name} counts prod(a.shape) x b.shape[-1] = {got} MACs for "
                                    f"{a} @ {b}, missing broadcast batch dims: exactly {exact}")
        elif name == "aten::einsum":
            eq = inputs[0].toIValue().replace(" ", "")
            if "->" in eq and not set(eq.partition("->")[0]) - set(eq.partition("->")[2]) - {","}:
                notes[scope].append(f"einsum '{eq}' sums over no index (elementwise for us); "
                                    f"fvcore counts {int(got)} from numpy's cost estimate")
        return got
    return run


def _own(cumulative: dict[str, Counter], keep=lambda op: True) -> dict[str, Counter]:
    """fvcore's per-module counts include descendants: each module's own part, by our paths."""
    own = {m: Counter(c) for m, c in cumulative.items()}
    for m, c in cumulative.items():
        if m:
            own[m.rpartition(".")[0]].subtract(c)
    out: dict[str, Counter] = defaultdict(Counter)
    for m, c in own.items():  # wrapper paths: "" and "model" are the root, "model.x" is "x"
        out[m.partition(".")[2]].update({k: v for k, v in c.items() if v > 0 and keep(k)})
    return out


def _run_fvcore(model: torch.nn.Module, inputs: Any):
    """fvcore's own counts and unsupported ops per module (our paths), its notes, its root list."""
    with warnings.catch_warnings():  # fvcore's import scripts functions with the deprecated torch.jit.script
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS
    notes: dict[str, list[str]] = defaultdict(list)
    wrapper = _Traced(model, inputs)
    fca = (FlopCountAnalysis(wrapper, wrapper.args).unsupported_ops_warnings(False)
           .uncalled_modules_warnings(False).tracer_warnings("none"))
    fca.set_op_handle(**{k: _watched(k, h, notes) for k, h in _DEFAULT_SUPPORTED_OPS.items()})
    logger, level = logging.getLogger("fvcore"), logging.getLogger("fvcore").level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            by_mod = fca.by_module_and_operator()
            unsupported = {m: Counter(fca.unsupported_ops(m)) for m in by_mod}
    finally:
        logger.setLevel(level)
    why: dict[str, list[str]] = defaultdict(list)
    for m, v in notes.items():
        why[m.partition(".")[2]] += v
    compute = lambda op: is_compute_class(op) or op.rpartition(":")[2] in _RECURRENT  # noqa: E731
    return _own(by_mod), _own(unsupported, compute), why, dict(fca.unsupported_ops(""))


def fvcore_crosscheck(model: torch.nn.Module, inputs: Any, *, repeated_blocks: bool = True) -> CrossCheck:
    """Compare ``count_step(model, inputs, backward=False)`` with 2 x fvcore's forward count."""
    if any(p.is_meta for p in model.parameters()):
        raise ValueError("fvcore traces real tensors: build the model with real weights, not on meta")
    fv_own, un_own, why, fv_unsupported = _run_fvcore(model, inputs)
    ours, first = count_step(model, inputs, backward=False, repeated_blocks=repeated_blocks), {}
    canon = {n: first.setdefault(id(m), n) for n, m in model.named_modules(remove_duplicate=False)}  # fvcore's names
    ours_own, by_fam = defaultdict(Counter), defaultdict(Counter)  # module / family -> op -> FLOPs
    for (_, mod, op), v in ours.records.items():
        ours_own[canon.get(mod, mod)][op] += v
        by_fam[family(op)][op] += v

    def fv_sum(c: Counter, fam: str | None = None) -> int:
        return int(sum(v for k, v in c.items() if k in FVCORE_FAMILY and fam in (None, FVCORE_FAMILY[k])))
    diffs: list[Difference] = []
    for m in sorted(set(fv_own) | set(ours_own) | set(un_own)):
        ours_v, fv_v, un = sum(ours_own[m].values()), 2 * fv_sum(fv_own[m]), dict(un_own[m])
        if ours_v == fv_v and not un:
            continue
        ops = f"ours: {dict(ours_own[m])}, fvcore MACs: {dict(fv_own[m])}"
        if un and ours_v > fv_v:
            kind, note = "fvcore_unsupported", f"fvcore has no handler for {un}; {ops}"
        elif un:
            kind, note = "uncounted", f"fvcore met {un} with no handler, and ours counts no more than fvcore here"
        else:
            kind, note = ("fvcore_formula", "; ".join(why[m])) if why[m] else ("mismatch", f"unexplained; {ops}")
        diffs.append(Difference("module", m, ours_v, fv_v, kind, note))
    fv_total, kinds, fam_rows = sum(fv_own.values(), Counter()), {d.kind for d in diffs}, []
    cause = next((k for k in _CAUSES if k in kinds), "mismatch")
    for fam in ("matmul", "convolution", "attention"):
        ours_v, fv_v = sum(by_fam[fam].values()), 2 * fv_sum(fv_total, fam)
        if ours_v != fv_v:
            fv_ops = sorted(k for k in fv_total if FVCORE_FAMILY.get(k) == fam)
            fam_rows.append(Difference("op", fam, ours_v, fv_v, cause, f"ours: {sorted(by_fam[fam])}, "
                                       f"fvcore: {fv_ops}; the module rows say where and why"))
    diffs[:0] = fam_rows
    diffs += [Difference("op", op, 0, 2 * int(v), "convention",
                         f"fvcore counts {op} (elementwise for us, outside the convention)")
              for op, v in sorted(fv_total.items()) if op not in FVCORE_FAMILY]
    compared = fv_sum(fv_total)
    return CrossCheck(
        ours_forward=ours.forward, fvcore_macs=int(sum(fv_total.values())), fvcore_compared_macs=compared,
        agrees=ours.forward == 2 * compared and all(d.kind == "convention" for d in diffs),
        differences=diffs, fvcore_unsupported=fv_unsupported, ours_uncovered=dict(ours.uncovered))
