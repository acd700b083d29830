"""Count identical repeated blocks once and multiply: exact, and what makes 400B models cheap.

A decoder is a ModuleList of blocks; blocks with the same class, parameters, buffers and
configuration, fed the same input shapes, do the same FLOPs. Counting a model whose lists
hold one representative of each kind of block (C_base), and for each kind g of n_g > 1 blocks
the same with a second one of that kind (C_g), gives every block's cost by difference:

    total = C_base + sum_g (n_g - 1) * (C_g - C_base)

The difference is taken on the second block of a kind, whose input always requires grad, so a
first block with a cheaper backward is still counted as it ran. Every block kept is checked to
run exactly once, and the two blocks of a kind to see identical input shapes; if a check fails
or the model will not run with a shortened list, the whole model is counted instead and an
assumption says why. Records keep each block's real path, so the breakdown by module matches a
full count's.
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_flatten

from .result import StepCount
from ..numbers import error_text

# Attributes that number a block rather than configure it.
_INDEX_ATTRS = {"layer_idx", "layer_id", "layer_index", "layer_number", "layer_num", "block_idx", "idx", "index"}


class _Fallback(Exception):
    pass


def _is_scalar(value) -> bool:
    if isinstance(value, (bool, int, float, str, type(None))):
        return True
    return isinstance(value, (tuple, list)) and len(value) < 64 and all(_is_scalar(v) for v in value)


def signature(block: torch.nn.Module) -> tuple:
    """What makes two blocks interchangeable for counting: classes, shapes, dtypes, settings."""
    parts = []
    for name, mod in block.named_modules():
        attrs = tuple(sorted((k, repr(v)) for k, v in vars(mod).items()
                             if not k.startswith("_") and k not in _INDEX_ATTRS and _is_scalar(v)))
        params = tuple((n, tuple(p.shape), str(p.dtype), p.requires_grad)
                       for n, p in mod.named_parameters(recurse=False))
        bufs = tuple((n, tuple(b.shape), str(b.dtype)) for n, b in mod.named_buffers(recurse=False))
        parts.append((name, type(mod).__module__, type(mod).__qualname__, attrs, params, bufs))
    return tuple(parts)


@dataclass
class Group:
    """Blocks of one kind in one ModuleList: indices into the list, in order."""
    list_path: str
    members: list[int]

    def path(self, index: int) -> str:
        return f"{self.list_path}.{index}" if self.list_path else str(index)


def find_groups(model: torch.nn.Module) -> tuple[dict[str, torch.nn.ModuleList], list[Group]]:
    """Outermost ModuleLists of two or more blocks, and their blocks grouped by signature."""
    lists: dict[str, torch.nn.ModuleList] = {}
    groups: list[Group] = []
    for path, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) < 2:
            continue
        if any(path.startswith(p + ".") or p == "" for p in lists):
            continue  # inside a block of an outer list: counted with that block
        kinds: dict[tuple, list[int]] = OrderedDict()
        for i, block in enumerate(mod):
            kinds.setdefault(signature(block), []).append(i)
        if any(len(m) > 1 for m in kinds.values()):
            lists[path] = mod
            groups.extend(Group(path, members) for members in kinds.values())
    return lists, groups


@contextmanager
def _layout(lists: dict[str, torch.nn.ModuleList], keep: dict[str, list[int]]):
    """Temporarily shorten each list to the blocks in ``keep``, in their original order."""
    saved = {path: lst._modules for path, lst in lists.items()}
    try:
        for path, lst in lists.items():
            blocks = list(saved[path].values())
            lst._modules = OrderedDict((str(i), blocks[j]) for i, j in enumerate(sorted(keep[path])))
        yield
    finally:
        for path, lst in lists.items():
            lst._modules = saved[path]


def _input_signature(args, kwargs) -> tuple:
    """Shapes and dtypes of a block's inputs. Whether they require grad is left out: the first
    block may take plain data while later ones take activations that carry gradients; the
    difference is measured on the second block, which sees what all later blocks see."""
    leaves, _ = tree_flatten((args, kwargs))
    return tuple((tuple(t.shape), str(t.dtype)) if isinstance(t, torch.Tensor) else type(t).__name__
                 for t in leaves)


def _run_checked(run: Callable[[], StepCount], lists, keep, pair: tuple | None,
                 idle: set[str] | None = None) -> StepCount:
    """Run with a shortened layout; check each kept block ran once, and ``pair`` saw equal inputs.

    A list none of whose blocks ran (a vision tower on a text-only step) is added to ``idle``
    instead of failing the check; lists already in ``idle`` are not checked again."""
    seen: dict[tuple[str, int], list[tuple]] = {}
    hooks = []
    for path, indices in keep.items():
        for i in indices:
            def hook(mod, args, kwargs, _key=(path, i)):
                seen.setdefault(_key, []).append(_input_signature(args, kwargs))
            hooks.append(lists[path][i].register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with _layout(lists, keep):
            result = run()
    except Exception as exc:
        raise _Fallback(f"the model did not run with a shortened block list ({error_text(exc)})") from exc
    finally:
        for h in hooks:
            h.remove()
    for path, indices in keep.items():
        calls = [len(seen.get((path, i), [])) for i in indices]
        if idle is not None and (path in idle or not any(calls)):
            idle.add(path)
            continue
        for i, n in zip(indices, calls):
            if n != 1:
                raise _Fallback(f"block {path}.{i} ran {n} times in one step, not once")
    if pair is not None:
        (path, a), (_, b) = pair
        if seen[(path, a)] != seen[(path, b)]:
            raise _Fallback(f"blocks {path}.{a} and {path}.{b} saw different input shapes")
    return result


def _combine(base: StepCount, with_second: StepCount, group: Group) -> dict[str, Counter]:
    """(n - 1) copies of the second block's cost, each under its own block's path."""
    n = len(group.members)
    second = group.path(group.members[1])
    out = {"records": Counter(), "executed": Counter(), "uncovered": Counter()}
    for field in ("records", "executed"):
        delta = Counter(getattr(with_second, field))
        delta.subtract(getattr(base, field))
        for (phase, mod, op), v in delta.items():
            if v and (mod == second or mod.startswith(second + ".")):
                for m in group.members[1:]:
                    out[field][(phase, group.path(m) + mod[len(second):], op)] += v
            elif v:
                out[field][(phase, mod, op)] += (n - 1) * v
    delta = Counter(with_second.uncovered)
    delta.subtract(base.uncovered)
    for op, v in delta.items():
        out["uncovered"][op] += (n - 1) * v
    return out


def count_with_repeats(model: torch.nn.Module, run: Callable[[torch.nn.Module], StepCount],
                       assumptions: list[str]) -> StepCount:
    lists, groups = find_groups(model)
    if not groups:
        return run(model)
    base_keep = {path: [g.members[0] for g in groups if g.list_path == path] for path in lists}
    full_run = lambda: run(model)  # noqa: E731 - the shortened lists live inside ``model``
    try:
        idle: set[str] = set()
        base = _run_checked(full_run, lists, base_keep, None, idle)
        parts = []
        for g in groups:
            if len(g.members) < 2 or g.list_path in idle:
                continue
            keep = {p: list(v) for p, v in base_keep.items()}
            keep[g.list_path].append(g.members[1])
            with_second = _run_checked(full_run, lists, keep, ((g.list_path, g.members[0]), (g.list_path, g.members[1])),
                                       idle)
            parts.append(_combine(base, with_second, g))
    except _Fallback as why:
        assumptions.append(f"repeated-block shortcut not used, every block counted: {why}")
        return run(model)
    total = StepCount(Counter(base.records), Counter(base.executed), Counter(base.uncovered),
                      list(base.assumptions))
    for part in parts:
        for field, counter in part.items():
            target = getattr(total, field)
            for k, v in counter.items():
                target[k] += v
    for counter in (total.records, total.executed, total.uncovered):
        for k in [k for k, v in counter.items() if v == 0]:
            del counter[k]
    kinds = ", ".join(f"{g.list_path}[{g.members[0]}] x{len(g.members)}" for g in groups if g.list_path not in idle)
    assumptions.append(f"identical repeated blocks counted once and multiplied ({kinds}); "
                       "identity checked by class, parameters, settings and input shapes")
    return total
