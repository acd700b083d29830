"""The counted method: the counting engine on the model built on meta, times the run's tokens.

One sequence of ``seq_len`` tokens is counted (forward + backward); the run is that times
tokens / seq_len, in exact arithmetic. The range:

- low: causal masking makes half of the attention-score work useless. That work is measured,
  not assumed: counting also at seq_len / 2 gives the part of the cost that grows with the
  square of the context, f(s) - 2 f(s/2) = q s^2 / 2, for any attention variant (MHA, GQA,
  MLA); the low end takes half of q s^2 off. Full counting stays the central figure.
- high: elementwise operations (norms, activations, softmax, residual adds) are outside the
  counting convention; ELEMENTWISE_ALLOWANCE covers them.
"""
from __future__ import annotations

import math
from fractions import Fraction

from auditor.counting.result import StepCount
from auditor.estimate import Estimate

ELEMENTWISE_ALLOWANCE = Fraction(5, 100)


def _sequence_inputs(model, seq_len: int, decoder_len: int | None):
    import torch

    from auditor.counting.hf import example_inputs

    if getattr(model, "config", None) is not None:
        return example_inputs(model, 1, seq_len, decoder_len)
    maker = getattr(model, "example_inputs", None)
    if callable(maker):
        return maker(1, seq_len)
    device = next(iter(model.parameters()), torch.empty(0)).device
    return (torch.zeros(1, seq_len, dtype=torch.long, device=device),)


def count_sequence(model, seq_len: int, decoder_len: int | None = None) -> StepCount:
    """One training step over one sequence; every call builds fresh inputs. A Hugging Face
    model's count names its class and the lengths its stacks ran at (counting/hf.py)."""
    from auditor.counting import count_step
    from auditor.counting.hf import is_transformers_model, name_model

    inputs = _sequence_inputs(model, seq_len, decoder_len)
    step = count_step(model, inputs, tokens=seq_len)
    if is_transformers_model(model):
        name_model(step, model, inputs, seq_len, decoder_len)
    return step


def count_for_run(model, seq_len: int, decoder_len: int | None = None) -> tuple[StepCount, int]:
    """The sequence's count, and the total at half the context (0 where seq_len is odd)."""
    step = count_sequence(model, seq_len, decoder_len)
    if seq_len < 2 or seq_len % 2:
        return step, 0
    return step, count_sequence(model, seq_len // 2, decoder_len // 2 if decoder_len else None).total


def estimate_from_counts(step: StepCount, half_total: int, seq_len: int, tokens: int) -> Estimate:
    """The run's Estimate from one sequence's count (and the count at half its length)."""
    run = Fraction(step.total * tokens, seq_len)
    flops = math.floor(run + Fraction(1, 2))
    assumptions = list(step.assumptions) + [
        f"one sequence of {seq_len:,} tokens counted (forward + backward = {step.total:,} FLOPs), "
        f"times {tokens:,} tokens / {seq_len:,}",
        f"elementwise operations are not counted; the high end adds {int(ELEMENTWISE_ALLOWANCE * 100)} % for them",
    ]
    quadratic = max(0, 2 * (step.total - 2 * half_total)) if half_total else 0  # q s^2 per sequence
    if quadratic:
        assumptions.append(
            f"attention counted over the full context; with causal masking half of the context-quadratic work "
            f"({quadratic:,} FLOPs a sequence, measured at {seq_len} and {seq_len // 2} tokens) is skipped: the low end")
    low = math.floor(Fraction((step.total - quadratic // 2) * tokens, seq_len))
    high = math.ceil(run * (1 + ELEMENTWISE_ALLOWANCE))
    if step.uncovered:
        assumptions.append("count incomplete: operators without a formula: " + ", ".join(sorted(step.uncovered)))
    return Estimate(
        method="counted", flops=flops, low=min(low, flops), high=high,
        flops_per_token=step.total // seq_len, tokens=tokens, assumptions=assumptions,
        uncovered_ops=sorted(step.uncovered),
        breakdown={"per_sequence": {"forward": step.forward, "backward": step.backward,
                                    "hardware": step.hardware_total},
                   "by_op": step.by_op(), "by_module": step.by_module(depth=3)},
        details={"seq_len": seq_len, "sequence_flops": step.total, "context_quadratic_flops": quadratic},
    )
