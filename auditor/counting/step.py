"""Count one training step (forward + backward) of a module on given inputs."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from auditor.counting.metacache import MetaCache
from auditor.counting.mode import CountingMode, MetaAnswers, module_paths
from auditor.counting.moe import dense_expert_modules, prepare_for_meta, routed_on_meta
from auditor.counting.recurrences import loops_on_meta
from auditor.counting.result import StepCount
from auditor.text import error_text


class CountingError(Exception):
    """A model could not be counted; the message names the model and the reason."""


def default_loss(output: Any) -> torch.Tensor:
    """The model's own loss where it returns one (Hugging Face), else a sum of its output.

    The sum's backward is a broadcast: it adds no counted FLOPs, so the backward of the model
    itself is what is measured.
    """
    loss = getattr(output, "loss", None)
    if isinstance(loss, torch.Tensor):
        return loss
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        tensors = [t for t in output if isinstance(t, torch.Tensor) and t.requires_grad]
        if not tensors:
            raise CountingError("the model's output holds no tensor that requires grad")
        return sum(t.float().sum() for t in tensors)
    if isinstance(output, torch.Tensor):
        return output.float().sum()
    raise CountingError(f"cannot make a loss from a model output of type {type(output).__name__}")


def inputs_from_shapes(shapes: Any, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Any:
    """Example inputs from shapes: ``(4, 128)``, a list of shapes, or a mapping name -> shape.

    A mapping value may be ``(shape, dtype)``. Integer dtypes give zeros (valid token ids);
    floating inputs need no gradient, as a batch of data does not.
    """
    def make(spec: Any) -> torch.Tensor:
        shape, kind = (spec[0], spec[1]) if len(spec) == 2 and isinstance(spec[1], torch.dtype) else (spec, dtype)
        return torch.zeros(tuple(int(n) for n in shape), dtype=kind, device=device)

    if isinstance(shapes, Mapping):
        return {name: make(spec) for name, spec in shapes.items()}
    if shapes and all(isinstance(n, int) for n in shapes):
        return make(tuple(shapes))
    return tuple(make(spec) for spec in shapes)


def _call(model: torch.nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _cast_inputs(inputs: Any, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return inputs

    def cast(t: Any) -> Any:
        return t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t

    if isinstance(inputs, Mapping):
        return {k: cast(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(cast(v) for v in inputs)
    return cast(inputs)


def run_step(model: torch.nn.Module, inputs: Any, *, loss_fn: Callable[[Any], torch.Tensor] | None = None,
             backward: bool = True, names: dict | None = None, meta_cache: MetaCache | None = None) -> StepCount:
    """One counted pass over ``model`` as it stands (no preparation, no repeated blocks).

    Counting must leave the model as it found it: gradients are set aside (the backward would
    add into them in place) and buffers such as BatchNorm running statistics are restored.
    """
    grads = {p: p.grad for p in model.parameters()}
    buffers = [(b, b.detach().clone()) for b in model.buffers() if not b.is_meta]
    for p in grads:
        p.grad = None
    names = names or module_paths(model)
    mode = CountingMode(model, dense_expert_modules(model, names), names=names, meta_cache=meta_cache)
    try:
        with mode:
            output = _call(model, inputs)
            if backward:
                (loss_fn or default_loss)(output).backward()
        if mode.canonical_checks:
            mode.result.assumptions.append(
                "on meta, the model's data-dependent checks of its inputs (padding, packing, mask skipping) "
                "were answered as for unpadded, unpacked sequences")
    finally:
        for p, g in grads.items():
            p.grad = g
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
    return mode.result


def probe_forward(model: torch.nn.Module, inputs: Any) -> None:
    """The model's forward, uncounted and without a graph, leaving the model as it was (buffers
    such as BatchNorm statistics restored); on meta, data checks answered as counting does."""
    buffers = [(b, b.detach().clone()) for b in model.buffers() if not b.is_meta]
    try:
        with torch.no_grad(), MetaAnswers():
            _call(model, inputs)
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


def count_step(model: torch.nn.Module, inputs: Any = None, *, shapes: Any = None,
               loss_fn: Callable[[Any], torch.Tensor] | None = None,
               backward: bool = True, tokens: int | None = None, repeated_blocks: bool = True,
               name: str | None = None) -> StepCount:
    """FLOPs of one training step of ``model`` on ``inputs`` (a tensor, tuple or mapping).

    Instead of inputs, ``shapes`` may describe them (see ``inputs_from_shapes``); they are made
    on the model's device, so a meta model needs no data at all.

    On the meta device the model is cast to bfloat16 first (free there). With
    ``repeated_blocks`` identical blocks of a ModuleList are counted once and multiplied:
    see ``repeated.py`` for when that applies and how it stays exact.
    """
    from auditor.counting.repeated import count_with_repeats

    label = name or type(model).__name__
    if (inputs is None) == (shapes is None):
        raise CountingError(f"{label}: give either inputs or shapes, not both or neither")
    if shapes is not None:
        device = next(iter(model.parameters()), torch.empty(0)).device
        inputs = inputs_from_shapes(shapes, device)
    assumptions: list[str] = []
    dtype = prepare_for_meta(model, assumptions)
    inputs = _cast_inputs(inputs, dtype)
    names = module_paths(model)

    meta_cache = MetaCache()             # one for every run of this step: the same ops recur in each

    def run(m: torch.nn.Module) -> StepCount:
        return run_step(m, inputs, loss_fn=loss_fn, backward=backward, names=names, meta_cache=meta_cache)

    try:
        with routed_on_meta(model, assumptions), loops_on_meta(model, assumptions):
            result = count_with_repeats(model, run, assumptions, probe=lambda: probe_forward(model, inputs)) \
                if repeated_blocks else run(model)
    except CountingError as exc:
        raise CountingError(f"{label}: {exc}") from None
    except Exception as exc:  # the model's own code failed under counting
        where = "on the meta device" if dtype is not None else "while counting"
        raise CountingError(f"{label} cannot run {where}: {error_text(exc)}") from exc
    result.assumptions = assumptions + [a for a in result.assumptions if a not in assumptions]
    result.tokens = tokens
    if not backward:
        result.assumptions.append("forward pass only: no backward was run")
    return result
