"""Counting a model that will not run on meta: shallow slices on the CPU, extrapolated in depth.

Some models cannot run on the meta device (xLSTM's default config modifies a tensor in place
that its backward needs; others read their data: ``nonzero``, ``.item()``). Their width is
fine on the CPU, their depth is not: so the model is built with every layer count set to 1
(C_base), and each layer count in turn set to 2 and 3 (C_2,f and C_3,f), with real random
weights, and counted in full. The count must lie on one line in each layer count (C_3,f - C_2,f
equal to C_2,f - C_base, record by record, as the repeated-block shortcut demands), and where
there are several layer counts, a slice with each at 2 must cost the sum of their differences.
Then, for the real depths L_f,

    total = C_base + sum_f (L_f - 1) (C_2,f - C_base)

Configs that set something per layer (lists as long as a layer count: layer types, RoPE-free
layers, MoE-or-dense layouts) are not sliced: their layers differ, and a slice would count
other layers than the model has. A slice whose real arithmetic would take too long on this
machine (over MAX_SLICE_FLOPS, estimated as 6 x parameters x tokens) is not run either: the
preflight then falls back to the analytic method and says why.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

from auditor.counting.limits import LAYER_FIELDS
from auditor.counting.result import StepCount
from auditor.text import sci

MAX_SLICE_FLOPS = 4 * 10 ** 12    # real arithmetic for all slices together: about a minute on 2 cores
MAX_SLICE_BYTES = 12 * 2 ** 30    # fp32 weights and gradients of the largest slice, and a quarter more


class SliceRefused(Exception):
    """Why the model cannot be counted by slices (one clause)."""


DEPTH_FIELDS = (*LAYER_FIELDS, "num_blocks", "n_blocks")


def depth_knobs(config: dict[str, Any]) -> dict[tuple[str, ...], int]:
    """The config's depths: its layer-count fields, those of equal value set together as one knob
    (xLSTM keeps its depth as both num_hidden_layers and num_blocks; an encoder and decoder of
    one depth scale together, which the line through them still measures exactly)."""
    by_value: dict[int, list[str]] = {}
    for key, value in config.items():
        if key in DEPTH_FIELDS and isinstance(value, int) and not isinstance(value, bool) and value > 0:
            by_value.setdefault(value, []).append(key)
    return {tuple(keys): depth for depth, keys in by_value.items()}


def _with_depths(config: dict[str, Any], depths: dict[tuple[str, ...], int]) -> dict[str, Any]:
    out = dict(config)
    for keys, depth in depths.items():
        out.update(dict.fromkeys(keys, depth))
    return out


def _per_layer_lists(config: dict[str, Any], counts: dict[str, int]) -> list[str]:
    """Fields that list a setting per layer (as long as a depth)."""
    lengths = set(counts.values())
    return [k for k, v in config.items() if isinstance(v, list) and len(v) in lengths and len(v) > 1]


def sliceable_depths(config: dict[str, Any]) -> dict[tuple[str, ...], int]:
    """The config's depth knobs; SliceRefused where it has none, or sets things per layer."""
    counts = depth_knobs(config)
    if not counts:
        raise SliceRefused("the config names no layer count to slice")
    lists = _per_layer_lists(config, {"/".join(k): v for k, v in counts.items()})
    if lists:
        raise SliceRefused(f"the config sets {', '.join(lists[:3])} per layer, so its layers differ and a slice "
                           f"would count other layers than the model has")
    return counts


def _delta(later: StepCount, earlier: StepCount) -> tuple[Counter, Counter]:
    out = []
    for field in ("records", "executed"):
        d = Counter(getattr(later, field))
        d.subtract(getattr(earlier, field))
        out.append(Counter({k: v for k, v in d.items() if v}))
    return out[0], out[1]


def _relative(delta: Counter, index: int) -> Counter:
    """Records of the layer at ``index`` keyed without the index, so two layers compare."""
    out: Counter = Counter()
    token = f".{index}."
    for (phase, mod, op), v in delta.items():
        out[(phase, (mod + ".").replace(token, ".<layer>.", 1)[:-1], op)] += v
    return out


def count_by_slices(config: dict[str, Any], seq_len: int, count) -> tuple[StepCount, list[str]]:
    """(the extrapolated count, assumptions). ``count(config_dict, seq_len)`` counts one slice on
    the CPU (built fresh, real weights); SliceRefused says why slicing cannot be trusted here."""
    counts = sliceable_depths(config)

    def sliced(depths: dict[tuple[str, ...], int]) -> dict[str, Any]:
        return _with_depths(config, {**dict.fromkeys(counts, 1), **depths})

    base = count(sliced({}), seq_len)
    total = StepCount(Counter(base.records), Counter(base.executed), Counter(base.uncovered), list(base.assumptions))
    predicted_records, predicted_executed = Counter(base.records), Counter(base.executed)
    for field, depth in counts.items():
        if depth == 1:
            continue
        two = count(sliced({field: 2}), seq_len)
        records, executed = _delta(two, base)
        if depth > 2:
            three = count(sliced({field: 3}), seq_len)
            later = _delta(three, two)
            if (_relative(records, 1), _relative(executed, 1)) != (_relative(later[0], 2), _relative(later[1], 2)):
                raise SliceRefused(f"the count is not linear in {'/'.join(field)} (a third layer added other "
                               f"work than the second)")
        for target, delta in ((total.records, records), (total.executed, executed)):
            for key, v in delta.items():
                target[key] += (depth - 1) * v
        predicted_records.update(records)
        predicted_executed.update(executed)
        total.uncovered.update(Counter({op: (depth - 1) * n for op, n in (Counter(two.uncovered)
                                                                            - Counter(base.uncovered)).items()}))
    deep = [f for f, d in counts.items() if d > 1]
    if len(deep) > 1:
        together = count(sliced(dict.fromkeys(deep, 2)), seq_len)
        if (_nonzero(together.records), _nonzero(together.executed)) != (_nonzero(predicted_records),
                                                                         _nonzero(predicted_executed)):
            raise SliceRefused(f"the layer counts {', '.join('/'.join(k) for k in deep)} interact (two of each "
                               f"together cost other than the sum of each alone)")
    said = ", ".join(f"{'/'.join(f)} {d:,}" for f, d in counts.items())
    return total, [f"the model cannot run on the meta device, so slices of it with 1, 2 and 3 layers were counted "
                   f"on the CPU with random weights, checked linear in depth, and extrapolated to {said}; the "
                   f"per-module breakdown holds one layer's records times its depth"]


def _nonzero(counter: Counter) -> dict:
    return {k: v for k, v in counter.items() if v}


def slice_cost(parameters_of_depth, counts: dict[tuple[str, ...], int], seq_len: int) -> tuple[int, int]:
    """(estimated FLOPs, estimated bytes) of every slice run: 6 x parameters x tokens each, and
    the largest slice's fp32 weights and gradients with a quarter more for activations."""
    runs = [dict.fromkeys(counts, 1)]
    for field, depth in counts.items():
        runs += [{**dict.fromkeys(counts, 1), field: k} for k in (2, 3) if k <= depth]
    if sum(1 for d in counts.values() if d > 1) > 1:
        runs.append({f: min(2, d) for f, d in counts.items()})
    sizes = [parameters_of_depth(r) for r in runs]
    return sum(6 * n * seq_len for n in sizes), 10 * max(sizes)      # fp32 weights and gradients, + 25 %


def check_affordable(parameters_of_depth, counts: dict[tuple[str, ...], int], seq_len: int) -> None:
    flops, size = slice_cost(parameters_of_depth, counts, seq_len)
    if flops > MAX_SLICE_FLOPS:
        raise SliceRefused(f"counting its slices on the CPU would take about {sci(flops, 2)} FLOPs of real arithmetic, "
                           f"over the {sci(MAX_SLICE_FLOPS)} this machine is given for it")
    if size > MAX_SLICE_BYTES:
        raise SliceRefused(f"its slices would need about {math.ceil(size / 2 ** 30)} GiB on the CPU, over "
                           f"{MAX_SLICE_BYTES // 2 ** 30} GiB")


def count_hf_by_slices(config: dict[str, Any], seq_len: int, decoder_len: int | None = None
                       ) -> tuple[StepCount, int, list[str]]:
    """A Hugging Face config's training step by CPU slices: (count, total at half the context
    (0 where the length is odd), assumptions). SliceRefused where it cannot be trusted or afforded."""
    import torch

    from auditor.counting.hf import build_model, count_hf, load_config

    counts = sliceable_depths(config)

    def parameters_of_depth(depths: dict[tuple[str, ...], int]) -> int:
        return sum(p.numel() for p in build_model(load_config(_with_depths(config, depths))).parameters())

    half = seq_len // 2 if seq_len >= 2 and seq_len % 2 == 0 else 0
    check_affordable(parameters_of_depth, counts, seq_len + half + 3 * (decoder_len or 0) // 2)

    def counter(decoder: int | None):
        def count(cfg: dict[str, Any], length: int) -> StepCount:
            torch.manual_seed(0)
            return count_hf(cfg, seq_len=length, decoder_len=decoder, device="cpu", repeated_blocks=False)
        return count

    step, said = count_by_slices(config, seq_len, counter(decoder_len))
    # the half-context count, as methods.counted.count_for_run takes it: both lengths halved
    half_total = count_by_slices(config, half, counter(decoder_len // 2 if decoder_len else None))[0].total \
        if half else 0
    return step, half_total, said
