"""Count identical repeated blocks once and multiply: exact, and what makes 400B models cheap.

A decoder is a ModuleList of blocks; blocks with the same class, parameters, buffers and
configuration, fed the same input shapes, do the same FLOPs. Counting a model whose lists
hold one representative of each kind of block (C_1), and for each kind g of n_g > 1 blocks
the same with a second one of that kind (C_2), gives every block's cost by difference:

    total = C_1 + sum_g (n_g - 1) * (C_2,g - C_1)

That is exact only if the model's count grows linearly in the number of blocks of a kind, which
the model's code, not its blocks, decides: a parent that combines its blocks' outputs pairwise,
halves the sequence every few blocks, or indexes past the end of a shortened list (which raises
nothing on meta) breaks it. So it is proven, not assumed, for every kind of more than two
blocks: the count with a third block, C_3, must lie on the line through C_1 and C_2, record by
record (the third block's records equal the second's, under its own path, and nothing outside
the blocks changes but by the same amount again), and the three blocks must see identical
input shapes. Where several kinds are shortened at once, one more run with a second block of
every kind must equal the sum of their differences (no interaction between kinds). Blocks whose
work depends on the data they route (mixture-of-experts routers and capacity limits, on a real
device: on meta the routing is replaced by a data-independent one, moe.py) are never
extrapolated. Every block kept is checked to run exactly once. If any check fails, or the
model will not run with a shortened list, the whole model is counted instead and an
assumption says why. Records keep each block's real path, so the breakdown by module matches
a full count's.
"""
from __future__ import annotations

import contextlib
import re
from collections import Counter, OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_flatten

from auditor.counting.result import StepCount
from auditor.text import error_text

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


_ROUTED = re.compile(r"moe|expert|router|switch", re.IGNORECASE)


def _routes_data(block: torch.nn.Module) -> bool:
    """A block whose FLOPs depend on where its data is routed (experts, capacity limits)."""
    return any(_ROUTED.search(type(mod).__name__) for mod in block.modules())


def _relative(counter: Counter, prefix: str) -> Counter:
    """The records of one block, keyed by their path inside it; the rest as they are."""
    out: Counter = Counter()
    for (phase, mod, op), v in counter.items():
        if v and (mod == prefix or mod.startswith(prefix + ".")):
            out[(phase, "<block>" + mod[len(prefix):], op)] += v
        elif v:
            out[(phase, mod, op)] += v
    return out


def _difference(later: StepCount, earlier: StepCount, block: str) -> tuple[Counter, Counter]:
    """What adding one block changed: records and executed work, the block's keyed inside it."""
    out = []
    for field in ("records", "executed"):
        delta = Counter(getattr(later, field))
        delta.subtract(getattr(earlier, field))
        out.append(_relative(delta, block))
    return out[0], out[1]


def _on_one_line(c1: StepCount, c2: StepCount, c3: StepCount, group: Group) -> str | None:
    """Why C_1, C_2, C_3 (one, two, three blocks of a kind) are not on one line, or None."""
    second, third = group.path(group.members[1]), group.path(group.members[2])
    if _difference(c2, c1, second) != _difference(c3, c2, third):
        return (f"the count is not linear in the number of {group.path(group.members[0])} blocks (a third block "
                f"added other work than the second: the model combines or reshapes across blocks)")
    if Counter(c3.uncovered) - Counter(c2.uncovered) != Counter(c2.uncovered) - Counter(c1.uncovered):
        return "operators without a formula grow non-linearly with the blocks"
    return None


def _nonzero(counter: Counter) -> dict:
    return {k: v for k, v in counter.items() if v}


def _call_key(args, kwargs) -> tuple:
    """A block call's inputs as far as its output's shapes can depend on them."""
    leaves, _ = tree_flatten((args, kwargs))
    return tuple((tuple(t.shape), str(t.dtype), t.device.type) if isinstance(t, torch.Tensor)
                 else (type(t).__name__, repr(t) if _is_scalar(t) else None) for t in leaves)


@contextmanager
def _memoized(blocks: list[torch.nn.Module], kind: object):
    """On meta, blocks of one kind answer a call with inputs of a shape already met with the
    output the first such call gave (meta tensors are shapes alone), so a probe of a 126-layer
    model runs one layer for real, not 126 (a plain meta forward of Llama 405B takes 0.8 s)."""
    outputs: dict[tuple, object] = {}
    for block in blocks:
        real = block.forward

        def forward(*args, _real=real, **kwargs):
            key = (kind, _call_key(args, kwargs))
            if key not in outputs:
                outputs[key] = _real(*args, **kwargs)
            return outputs[key]
        block.forward = forward
    try:
        yield
    finally:
        for block in blocks:
            del block.forward                   # the class's forward again


def _probe_inputs(probe: Callable[[], None], lists, groups: list[Group], memoize: bool) -> str | None:
    """Run the whole model forward once (uncounted, without a graph) and check that every block
    of a kind ran once and saw the same input shapes as the others: what a shortened run cannot
    see (a parent that halves the sequence after every third block). Why not, or None.
    ``memoize`` (meta models): repeated calls of a kind are answered from the first (_memoized)."""
    seen: dict[tuple[str, int], list[tuple]] = {}
    hooks = []
    for g in groups:
        for i in g.members:
            def hook(mod, args, kwargs, _key=(g.list_path, i)):
                seen.setdefault(_key, []).append(_input_signature(args, kwargs))
            hooks.append(lists[g.list_path][i].register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with contextlib.ExitStack() as stack:
            if memoize:
                for n, g in enumerate(groups):
                    stack.enter_context(_memoized([lists[g.list_path][i] for i in g.members], n))
            probe()
    except Exception as exc:
        return f"the model's forward failed ({error_text(exc)})"
    finally:
        for h in hooks:
            h.remove()
    for g in groups:
        calls = [seen.get((g.list_path, i), []) for i in g.members]
        if not any(calls):
            continue                             # an idle list (a vision tower on a text step)
        first = calls[0]
        for i, got in zip(g.members, calls):
            if len(got) != 1:
                return f"block {g.path(i)} ran {len(got)} times in one forward, not once"
            if got != first:
                return (f"blocks {g.path(g.members[0])} and {g.path(i)} see different input shapes in the whole "
                        f"model (the model reshapes between blocks)")
    return None


def _add_parts(base: StepCount, parts: list[dict[str, Counter]]) -> StepCount:
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
    return total


def count_with_repeats(model: torch.nn.Module, run: Callable[[torch.nn.Module], StepCount],
                       assumptions: list[str], probe: Callable[[], None] | None = None) -> StepCount:
    """``run(model)``: one counted step of the model as it stands; ``probe()``: its forward alone,
    uncounted (the whole model's block inputs are checked on it)."""
    lists, groups = find_groups(model)
    if not groups:
        return run(model)
    on_meta = any(p.is_meta for p in model.parameters())
    routed = [] if on_meta else [g for g in groups if len(g.members) > 1 and
                                 _routes_data(lists[g.list_path][g.members[0]])]
    if routed:
        assumptions.append(f"repeated-block shortcut not used, every block counted: the blocks of "
                           f"{routed[0].list_path} route their data (experts), so on a real device each "
                           f"block's routing is counted as it ran")
        return run(model)
    base_keep = {path: [g.members[0] for g in groups if g.list_path == path] for path in lists}
    full_run = lambda: run(model)  # noqa: E731 - the shortened lists live inside ``model``
    try:
        why = _probe_inputs(probe, lists, groups, memoize=on_meta) if probe is not None else None
        if why:
            raise _Fallback(why)
        idle: set[str] = set()
        base = _run_checked(full_run, lists, base_keep, None, idle)
        parts, seconds, predicted = [], {p: list(v) for p, v in base_keep.items()}, \
            (Counter(base.records), Counter(base.executed))
        for g in groups:
            if len(g.members) < 2 or g.list_path in idle:
                continue
            keep = {p: list(v) for p, v in base_keep.items()}
            keep[g.list_path].append(g.members[1])
            with_second = _run_checked(full_run, lists, keep, ((g.list_path, g.members[0]), (g.list_path, g.members[1])),
                                       idle)
            if len(g.members) > 2:              # prove the line before extrapolating along it
                keep[g.list_path].append(g.members[2])
                with_third = _run_checked(full_run, lists, keep,
                                          ((g.list_path, g.members[1]), (g.list_path, g.members[2])), idle)
                why = _on_one_line(base, with_second, with_third, g)
                if why:
                    raise _Fallback(why)
            parts.append(_combine(base, with_second, g))
            seconds[g.list_path].append(g.members[1])
            for target, later, earlier in zip(predicted, (with_second.records, with_second.executed),
                                              (base.records, base.executed)):
                target.update(later)
                target.subtract(earlier)
        if len(parts) > 1:                      # kinds shortened together: their differences must add up
            together = _run_checked(full_run, lists, seconds, None, idle)
            if tuple(_nonzero(c) for c in predicted) != (_nonzero(together.records), _nonzero(together.executed)):
                raise _Fallback("blocks of different kinds interact (a second block of each kind together "
                                "cost other than the sum of each alone)")
    except _Fallback as why:
        assumptions.append(f"repeated-block shortcut not used, every block counted: {why}")
        return run(model)
    total = _add_parts(base, parts)
    kinds = ", ".join(f"{g.list_path}[{g.members[0]}] x{len(g.members)}" for g in groups if g.list_path not in idle)
    assumptions.append(f"identical repeated blocks counted once and multiplied ({kinds}); identity checked by "
                       f"class, parameters, settings and input shapes, and the count checked linear in the "
                       f"number of blocks (one, two and three of each kind on one line)")
    return total
