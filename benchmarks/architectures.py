"""Sweep every model type of the installed transformers through the counter.

Every type in any of transformers' auto model mappings is trained with one head
(``architecture_inputs.HEADS``: a multimodal LM, else count_hf's own class for causal and
sequence-to-sequence types, else contrastive, CTC, audio or image classification, masked LM,
the bare model). For each: make a tiny config (generic size rules, then per-model overrides;
where that does not run, the config with only its layer counts cut, then transformers' default),
build it on the meta device, count one training step with and without the repeated-block
shortcut, and count it once more on the CPU with random weights (the same inputs, every block):
both meta counts must agree record by record, and the CPU count module by module. Causal and
sequence-to-sequence types go through ``count_hf`` itself (``auditor.counting.hf.model_class``
chooses the class: an encoder-decoder such as bart or whisper builds its whole model); the
others get inputs from ``architecture_inputs.py``. A model that fails on meta is counted on the
CPU, and by the CPU-slice fallback (``auditor.counting.slices``), whose total must equal the
full CPU count. Last, transformers' default config of the type is built on meta, and where it
does not build, the smallest change that makes it build (``DEFAULT_FIXES``) is tried.

    python benchmarks/architectures.py                 # print the Markdown tables
    python benchmarks/architectures.py --write         # and write docs/architectures.md
    python benchmarks/architectures.py llama vit clip  # only these model types
    python benchmarks/architectures.py --cold          # cold count_hf time of default configs

Each model runs in its own forked process (isolation, and a hard time limit), two at a time.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TIME_LIMIT_S = 120        # the tiny config's counts, per model
DEFAULT_LIMIT_S = 60      # building the default config, per model
CPU_PARAMETERS = 150_000_000   # no CPU count of a model larger than this (fp32 weights and gradients)

from architecture_configs import (DEFAULT_FIXES, FAMILY, META_WORKAROUNDS, MROPE, OVERRIDES,  # noqa: E402
                                  SIZES, SKIP)
from architecture_inputs import BATCH, SEQ  # noqa: E402
import architecture_inputs as inputs_lib  # noqa: E402
from architecture_report import (COLD_TYPES, _short, _status, cold_table, cold_times, defaults_table,  # noqa: E402
                                 summary, table, write_blocks, write_doc)

LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "encoder_layers",
              "num_decoder_layers", "num_encoder_layers", "depth")
CPU_FLOPS = 2 * 10 ** 11  # no CPU check of a step the meta count puts above this (tens of seconds here)


def _fields(cls) -> dict[str, object]:
    """Field name -> default of a (dataclass) config class."""
    if dataclasses.is_dataclass(cls):
        out = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
            else:
                out[f.name] = None
        return out
    return {}


_PLACEHOLDERS = ("image_token_id", "image_token_index", "audio_token_id", "audio_token_index", "video_token_id",
                 "video_token_index")


def _token_fields(defaults: dict, vocab: int) -> dict:
    """Special token ids inside the tiny vocabulary, distinct, and never 0 (the input ids)."""
    out, spare = {}, iter(range(vocab - 1, 3, -1))
    for name, value in defaults.items():
        if not (name.endswith("_token_id") or name.endswith("_token_index") or name.endswith("_index")
                and "token" in name):
            continue
        if value is None and name in _PLACEHOLDERS:   # BLIP-2, Voxtral: no placeholder id by default
            out[name] = next(spare)
            continue
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int) and (value >= vocab or value == 0) and "pad" not in name:
            out[name] = next(spare)
        elif isinstance(value, int) and value >= vocab:
            out[name] = 3
        elif isinstance(value, list) and any(isinstance(v, int) and v >= vocab for v in value):
            out[name] = [2]
    return out


def tiny_fields(cls, overrides: dict, sizes: dict = SIZES) -> dict:
    """Generic tiny ``sizes`` for the fields ``cls`` has, sub-configs included, then ``overrides``."""
    defaults = _fields(cls)
    fields = {k: v for k, v in sizes.items() if k in defaults and not isinstance(defaults[k], bool)
              and (defaults[k] is None or isinstance(defaults[k], int))}
    if "vocab_size" in sizes:
        fields.update(_token_fields(defaults, fields.get("vocab_size", 128)))
    # LayerDrop skips whole layers at random in training: a count would be one random draw
    # (see "Counter defects" in docs/architectures.md), so the sweep turns it off.
    fields.update({k: 0.0 for k, v in defaults.items() if k.endswith("layerdrop") and isinstance(v, (int, float))
                   and not isinstance(v, bool) and v > 0})
    subs = getattr(cls, "sub_configs", None) or {}
    if subs:
        try:
            instance = cls()
        except Exception:
            instance = None
        for name in subs:
            sub = getattr(instance, name, None)
            wanted = overrides.get(name, {})
            if isinstance(wanted, dict) and "model_type" in wanted:   # another kind of sub-config
                from transformers import CONFIG_MAPPING

                fields[name] = {**tiny_fields(CONFIG_MAPPING[wanted["model_type"]], wanted, sizes), **wanted}
                continue
            if sub is None or not hasattr(sub, "model_type"):
                continue
            sub_fields = tiny_fields(type(sub), wanted, sizes)
            fields[name] = {"model_type": sub.model_type, **sub_fields} if sub.model_type else sub_fields
    fields.update({k: v for k, v in overrides.items() if k not in subs})
    return fields


def tiny_config(model_type: str, workarounds: bool = True) -> dict:
    from transformers import CONFIG_MAPPING

    overrides = {**OVERRIDES.get(model_type, {}), **(META_WORKAROUNDS.get(model_type, {}) if workarounds else {})}
    fields = {"model_type": model_type, **tiny_fields(CONFIG_MAPPING[model_type], overrides)}
    if model_type in MROPE:
        _set_mrope(fields, CONFIG_MAPPING[model_type](), MROPE[model_type])
    if "image_grid_pinpoints" in _fields(CONFIG_MAPPING[model_type]) and "image_grid_pinpoints" not in overrides:
        # any-resolution tiles are multiples of the vision tower's image size (64 here, not 336)
        fields["image_grid_pinpoints"] = [[64, 128], [128, 64], [128, 128]]
    return fields


def _set_mrope(fields: dict, default, section: list[int]) -> None:
    """The RoPE sections where the config keeps its rope parameters (text config, else top level)."""
    text = getattr(default, "text_config", None)
    where, rope = (fields.setdefault("text_config", {}), getattr(text, "rope_parameters", None)) \
        if text is not None else (fields, getattr(default, "rope_parameters", None))
    rope = dict(rope or {"rope_type": "default", "rope_theta": 10000.0})
    if isinstance(rope.get("rope_type"), str) or "rope_theta" in rope:
        where["rope_parameters"] = {**rope, "mrope_section": section}


def shallow_config(model_type: str) -> dict:
    """The default config with only its layer counts cut to 3 (widths as transformers sets them)."""
    from transformers import CONFIG_MAPPING

    sizes = {k: SIZES[k] for k in LAYER_KEYS}
    return {"model_type": model_type, **tiny_fields(CONFIG_MAPPING[model_type], META_WORKAROUNDS.get(model_type, {}),
                                                    sizes)}


def plain(mapping: dict) -> dict:
    """``mapping`` without its meta workarounds: what the CPU count builds, so that meta == CPU
    also proves each workaround changes no counted FLOP."""
    drop = META_WORKAROUNDS.get(mapping["model_type"], {})
    return {k: v for k, v in mapping.items() if k not in drop}


def config_variants(model_type: str) -> list[tuple[str, dict]]:
    """The configs tried in turn, smallest first: tiny, shallow, transformers' default."""
    out = []
    for name, make in (("tiny", tiny_config), ("shallow", shallow_config)):
        try:
            out.append((name, make(model_type)))
        except Exception:  # noqa: BLE001 - a default instance that raises: the next variant says why
            continue
    out.append(("default", {"model_type": model_type, **META_WORKAROUNDS.get(model_type, {})}))
    return out


def causal_lm_types() -> list[str]:
    from transformers import AutoModelForCausalLM

    return sorted(AutoModelForCausalLM._model_mapping._model_mapping)


def causal_lm_class(config) -> str | None:
    from transformers import AutoModelForCausalLM

    cls = AutoModelForCausalLM._model_mapping.get(type(config), None)
    return cls.__name__ if cls is not None else None


# ---------------------------------------------------------------- measuring one model


def _config_int(config, keys: tuple[str, ...]) -> int | None:
    """First integer among ``keys`` in the config or its text/ffn sub-configs."""
    for c in (config, getattr(config, "text_config", None), getattr(config, "ffn_config", None)):
        for key in keys:
            v = getattr(c, key, None) if c is not None else None
            if isinstance(v, int) and not isinstance(v, bool):
                return v
    return None


def _experts_modules(model) -> dict[str, tuple[int, int]]:
    """Path of each experts container -> (weight parameters of one expert, number of experts).

    A container is a module named ``experts`` or of a class named ``*Experts``; its experts are
    its ModuleList entries, the leading dim of its 3-D weights, or else the configured count
    (DBRX stacks experts along rows of 2-D weights). Biases and routers are not expert weights.
    """
    import torch

    configured = _config_int(model.config, ("num_experts", "n_routed_experts", "num_local_experts",
                                            "moe_num_experts"))
    found: dict[str, tuple[int, int]] = {}
    for path, mod in model.named_modules():
        leaf = path.rsplit(".", 1)[-1]
        if leaf != "experts" and not type(mod).__name__.endswith("Experts") or "shared" in leaf:
            continue  # shared experts see every token: not routed
        if any(path.startswith(p + ".") for p in found):
            continue
        weights = [p for n, p in mod.named_parameters() if p.dim() >= 2
                   and not n.endswith("bias") and "router" not in n]
        if isinstance(mod, torch.nn.ModuleList):
            e = len(mod)
        else:
            e = weights[0].shape[0] if weights and weights[0].dim() == 3 else configured
        if e and weights:
            found[path] = (sum(p.numel() for p in weights) // e, e)
    return found


def _top_k(config) -> int | None:
    return _config_int(config, ("num_experts_per_tok", "moe_topk", "moe_k", "top_k", "moe_top_k"))


def expert_share(result, model, tokens: int = BATCH * SEQ) -> tuple[float, float, int | None] | None:
    """(min, max) over MoE layers of forward expert FLOPs / (2 x tokens x one expert's weights),
    i.e. the experts each token was charged for; and k from the config. None if no experts."""
    experts = _experts_modules(model)
    if not experts:
        return None
    shares = []
    for path, (per_expert, _e) in experts.items():
        flops = sum(v for (phase, mod, _), v in result.records.items()
                    if phase == "forward" and (mod == path or mod.startswith(path + "."))
                    and "router" not in mod[len(path):])  # JetMoE's MoA keeps its router inside
        shares.append(flops / (2 * tokens * per_expert))
    return min(shares), max(shares), _top_k(model.config)


def _diff(a, b) -> list:
    """The first records where two counts differ: (key, a - b)."""
    d = a.records.copy()
    d.subtract(b.records)
    return sorted((k, v) for k, v in d.items() if v)[:3]


def _parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build(cls, config, device: str):
    """``cls`` built from ``config`` on ``device`` in training mode (random weights on the CPU)."""
    import torch
    from auditor.counting.limits import module_budget

    torch.manual_seed(0)
    with torch.device(device), module_budget(None):
        model = cls._from_config(config)
    model.train()
    if device == "meta":   # as count_step will (grouped-mm experts take bfloat16 alone on meta)
        model.to(torch.bfloat16)
    return model


def _probe(model, inputs) -> tuple[BaseException | None, dict, "inputs_lib.Probe"]:
    """One uncounted forward: (its error or None, placeholder counts it asked for, the probe)."""
    import torch
    from auditor.counting.step import probe_forward

    from auditor.counting.step import _cast_inputs

    tally, err = inputs_lib.Probe(), None
    on_meta = any(p.is_meta for p in model.parameters())
    with inputs_lib.placeholder_counts(model) as found:
        try:
            with tally:
                probe_forward(model, _cast_inputs(inputs, torch.bfloat16) if on_meta else inputs)
        except Exception as exc:  # noqa: BLE001 - the caller decides
            err = exc
    return err, inputs_lib.needed_placeholders(found, tally), tally


def prepare(model, kind: str | None, device: str, *, seen: dict | None = None, index: int | None = None):
    """(inputs, placeholder counts, candidate index): the first candidate input set the model runs
    with (one uncounted forward), placeholder tokens added where a multimodal model asks for them.
    ``seen`` and ``index`` repeat a choice made on another device. Where none runs, the error of
    the candidate that ran furthest (most ops) is raised."""
    import torch

    dev = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    cands = inputs_lib.candidates(model, kind, dev, generator)
    failures = []
    for i in ([index] if index is not None else range(len(cands))):
        inp, got = cands[i], seen
        if got is None:
            err, got, tally = _probe(model, inp)
        else:
            err, tally = None, None
        if got:
            try:
                inp = inputs_lib.placed(model, inp, got, kind, dev, generator)
            except LookupError as exc:
                failures.append((tally.ops if tally else 0, exc))
                continue
            err, again, tally = _probe(model, inp)
            if err is None and again and again != got:
                err = RuntimeError(f"placeholders: the model asked for {got}, then with them for {again}")
        if err is None:
            return inp, got, i
        failures.append((tally.ops if tally else 0, err))
    raise max(failures, key=lambda f: f[0])[1]


def _lm_tokens(inputs: dict) -> int:
    ids = inputs.get("input_ids")
    return int(ids.numel()) if ids is not None else BATCH * SEQ


def _count(model, inp, repeated: bool, tokens: int):
    from auditor.counting.step import count_step

    return count_step(model, inp, tokens=tokens, repeated_blocks=repeated, name=model.config.model_type,
                      loss_fn=inputs_lib.nested_sum)


def _record(row: dict, rep, full, model, tokens: int, seconds: float) -> None:
    """The meta counts' columns: uncovered ops, shortcut == full, what the shortcut did, experts."""
    row.update(meta=True, forward=full.forward, backward=full.backward, total=full.total, seconds=round(seconds, 2),
               uncovered=sorted(set(rep.uncovered) | set(full.uncovered)),
               repeated_equal=rep.total == full.total and rep.records == full.records,
               shortcut=next((a.split(":", 1)[1].strip() for a in rep.assumptions
                              if a.startswith("repeated-block shortcut not used")),
                             "used" if any(a.startswith("identical repeated") for a in rep.assumptions)
                             else "no repeats"),
               executed=sum(full.executed.values()))
    if not row["repeated_equal"]:
        row["diff"] = _diff(rep, full)
    row["experts"] = expert_share(full, model, tokens)


def _by_module(result) -> Counter:
    """(phase, module) -> FLOPs. The op may differ between devices for the same work: CPU flash
    attention's backward is one fused op where meta's math path runs bmm (docs/counting.md)."""
    out: Counter = Counter()
    for (phase, mod, _op), v in result.records.items():
        out[(phase, mod, "")] += v
    return out


def _meta_counts(row: dict, count, model, tokens: int):
    """``count(repeated)`` with the shortcut (timed) and without; the full count, or its error.
    A shortcut that fails where the full count runs is a defect of the shortcut, reported as one."""
    from auditor.counting.step import CountingError

    start = time.perf_counter()
    try:
        rep = count(True)
    except CountingError as exc:
        if "inputs of your own" in str(exc):
            raise
        rep, rep_error = None, exc
    except Exception as exc:  # noqa: BLE001
        rep, rep_error = None, exc
    seconds = time.perf_counter() - start
    full = count(False)
    if rep is None:
        row["shortcut_error"] = _short(rep_error, 200)
    _record(row, rep or full, full, model, tokens, seconds)
    return full


def _compare_cpu(row: dict, full, cpu) -> None:
    """The CPU count (real kernels, random weights, every block) against the meta count, by
    phase and module."""
    row["cpu_total"] = cpu.total
    row["cpu_equal"] = _by_module(cpu) == _by_module(full)
    if not row["cpu_equal"]:
        d = _by_module(cpu)
        d.subtract(_by_module(full))
        row["cpu_diff"] = sorted((k, v) for k, v in d.items() if v)[:3]
        row["cpu_ratio"] = cpu.total / full.total if full.total else None


def _too_costly(row: dict, model) -> bool:
    """Whether the CPU count would take too long or too much memory here (and say so in the row)."""
    if _parameters(model) > CPU_PARAMETERS:
        row["cpu_skipped"] = f"{_parameters(model):,} parameters"
    elif row.get("total", 0) > CPU_FLOPS:
        row["cpu_skipped"] = f"{row['total']:.1e} FLOPs a step"
    return "cpu_skipped" in row


def _family(row: dict, model) -> str:
    from auditor.counting.moe import is_moe

    if row["type"] in FAMILY:
        return FAMILY[row["type"]]
    if is_moe(model) or _experts_modules(model):
        return "MoE"
    return {"causal LM": "dense", "seq2seq": "dense", "masked LM": "dense", "multimodal LM": "multimodal",
            "contrastive": "multimodal", "speech CTC": "speech", "audio classification": "speech",
            "speech seq2seq": "speech", "image classification": "vision"}.get(row["task"], row["task"])


def _slices(row: dict, run_slices, cpu_total: int) -> None:
    """The CPU-slice fallback's total (``run_slices()``) beside the full CPU count, for a model
    that fails on meta: equal, different, or why slicing was refused."""
    from auditor.counting.slices import SliceRefused

    try:
        sliced = run_slices()
    except SliceRefused as exc:
        row["slices"] = f"refused: {exc}"
        return
    except Exception as exc:  # noqa: BLE001
        row["slices"] = f"failed: {_short(exc, 120)}"
        return
    row["slices"] = "equal" if sliced.total == cpu_total else f"**differs** ({sliced.total:,} vs {cpu_total:,})"


def measure_hf(row: dict, model_type: str) -> dict | None:
    """A causal or sequence-to-sequence type, through count_hf as users call it. None where count_hf
    refuses the type's inputs (a speech encoder whose input shape the config does not fix)."""
    import torch
    from auditor.counting.hf import build_model, count_hf, load_config
    from auditor.counting.modelinfo import model_info
    from auditor.counting.slices import count_hf_by_slices
    from auditor.counting.step import CountingError

    mapping = tiny_config(model_type)
    row["config"] = "tiny"
    try:
        config = load_config(mapping)
        model = build_model(config, "meta")  # the class count_hf builds, counted below through count_hf
        row["class"] = type(model).__name__
        row["causal_class"] = causal_lm_class(config)
        row["family"] = _family(row, model)
        model_info(model)  # what preflight's analytic method reads: it must not fail either
        row["built"] = True
    except Exception as exc:
        row.update(built=False, error=_short(exc))
        return row
    try:
        full = _meta_counts(row, lambda repeated: count_hf(mapping, batch=BATCH, seq_len=SEQ, repeated_blocks=repeated),
                            model, BATCH * SEQ)
    except CountingError as exc:
        if "inputs of your own" in str(exc):
            row["count_hf"] = _short(exc, 200)
            return None
        row.update(meta=False, error=_short(exc))
    except Exception as exc:
        row.update(meta=False, error=_short(exc))
    if _too_costly(row, model):
        return row
    try:
        torch.manual_seed(0)
        cpu = count_hf(plain(mapping), batch=BATCH, seq_len=SEQ, device="cpu", repeated_blocks=False)
    except Exception as exc:
        row.update(cpu=False, cpu_error=_short(exc))
        return row
    row["cpu"] = True
    if row.get("meta"):
        _compare_cpu(row, full, cpu)
        return row
    row.update(uncovered=sorted(cpu.uncovered), forward=cpu.forward, backward=cpu.backward, total=cpu.total)
    row["experts"] = expert_share(cpu, model)
    _slices(row, lambda: count_hf_by_slices(plain(mapping), SEQ)[0], cpu.total)
    return row


def measure_head(row: dict, model_type: str, cls, kind: str | None) -> dict:  # noqa: C901 - the fallbacks in order
    """Any other type: its head built from the first config variant it runs with, the sweep's inputs."""
    from auditor.counting.hf import load_config
    from auditor.counting.modelinfo import model_info
    from auditor.counting.slices import count_by_slices

    row["class"] = cls.__name__
    errors, built_any, chosen = {}, False, None
    for variant, mapping in config_variants(model_type):
        try:
            config = load_config(mapping)
            model = build(cls, config, "meta")
        except Exception as exc:  # noqa: BLE001 - the next variant may build
            errors[variant] = "build: " + _short(exc, 140)
            continue
        built_any = True
        try:
            inp, seen, index = prepare(model, kind, "meta")
            chosen = (variant, mapping, config, model, inp, seen, index, None)
        except Exception as exc:  # noqa: BLE001
            if _parameters(model) > CPU_PARAMETERS:
                errors[variant] = f"meta: {_short(exc, 140)}; too large for a CPU try"
                continue
            try:
                cpu_model = build(cls, load_config(plain(mapping)), "cpu")
                cpu_inp, seen, index = prepare(cpu_model, kind, "cpu")
                chosen = (variant, mapping, config, model, None, seen, index, (exc, cpu_model, cpu_inp))
            except Exception as exc2:  # noqa: BLE001
                errors[variant] = f"meta: {_short(exc, 140)}; CPU: {_short(exc2, 140)}"
                continue
        break
    if chosen is None:
        first = next(iter(errors.values()), "no config")
        row.update(built=built_any, runs=False, error=first,
                   variants="; ".join(f"{k}: {v}" for k, v in list(errors.items())[1:]))
        return row
    variant, mapping, config, model, inp, seen, index, meta_failure = chosen
    row.update(built=True, config=variant, family=_family(row, model))
    if errors:
        row["variants"] = "; ".join(f"{k}: {v}" for k, v in errors.items())
    try:
        model_info(model)
    except Exception as exc:  # noqa: BLE001
        row["model_info"] = _short(exc)
    if meta_failure is None:
        row["inputs"] = inputs_lib.describe(inp)
        tokens = _lm_tokens(inp)
        try:
            fresh = iter([model, build(cls, config, "meta")])
            full = _meta_counts(row, lambda repeated: _count(next(fresh), inp, repeated, tokens), model, tokens)
        except Exception as exc:  # noqa: BLE001 - the model's code failed under counting on meta: try the CPU
            meta_failure = (exc, None, None)
        if _too_costly(row, model):
            if meta_failure is not None:
                row.update(meta=False, error=_short(meta_failure[0]))
            return row
        try:
            cpu_model = build(cls, load_config(plain(mapping)), "cpu")
            cpu_inp, _, _ = prepare(cpu_model, kind, "cpu", seen=seen, index=index)
            cpu = _count(cpu_model, cpu_inp, False, tokens) if meta_failure is None else None
        except Exception as exc:  # noqa: BLE001
            if meta_failure is not None:
                row.update(meta=False, error=_short(meta_failure[0]))
            row.update(cpu=False, cpu_error=_short(exc))
            return row
        if meta_failure is None:
            row["cpu"] = True
            _compare_cpu(row, full, cpu)
            return row
        meta_failure = (meta_failure[0], cpu_model, cpu_inp)
    exc, cpu_model, cpu_inp = meta_failure
    row.update(meta=False, error=_short(exc), inputs=inputs_lib.describe(cpu_inp))
    try:
        cpu = _count(cpu_model, cpu_inp, False, _lm_tokens(cpu_inp))
    except Exception as exc2:  # noqa: BLE001
        row.update(cpu=False, cpu_error=_short(exc2))
        return row
    row.update(cpu=True, uncovered=sorted(cpu.uncovered), forward=cpu.forward, backward=cpu.backward, total=cpu.total)
    row["experts"] = expert_share(cpu, cpu_model, _lm_tokens(cpu_inp))

    def count_slice(cfg: dict, _length: int):
        m = build(cls, load_config(cfg), "cpu")
        i, _, _ = prepare(m, kind, "cpu", seen=seen, index=index)
        return _count(m, i, False, _lm_tokens(i))

    _slices(row, lambda: count_by_slices(plain(mapping), SEQ, count_slice)[0], cpu.total)
    return row


def measure(model_type: str) -> dict:
    """Everything the table reports about one model type (runs in a child process)."""
    import torch

    torch.manual_seed(0)
    task, cls_name, kind = inputs_lib.head(model_type)
    row: dict = {"type": model_type, "task": task, "family": FAMILY.get(model_type, "")}
    if model_type in SKIP:
        return {**row, "skipped": SKIP[model_type]}
    start = time.perf_counter()
    if kind == "count_hf":
        done = measure_hf(row, model_type)
        if done is None:   # count_hf refuses the inputs: count its class with the sweep's
            from auditor.counting.hf import load_config, model_class

            config = load_config(tiny_config(model_type))
            done = measure_head(row, model_type, model_class(config)._model_mapping[type(config)], "tokens")
    else:
        done = measure_head(row, model_type, inputs_lib.head_class(cls_name), kind)
        if "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES" in inputs_lib.mappings_of(model_type):
            done["text_only"] = text_only(model_type)
    done["wall"] = round(time.perf_counter() - start, 1)
    return done


def text_only(model_type: str) -> str:
    """A multimodal type that is also a causal LM: its count_hf status, text alone."""
    from auditor.counting.hf import count_hf

    try:
        mapping = tiny_config(model_type)
        rep = count_hf(mapping, batch=BATCH, seq_len=SEQ)
        full = count_hf(mapping, batch=BATCH, seq_len=SEQ, repeated_blocks=False)
    except Exception as exc:  # noqa: BLE001
        return f"fails: {_short(exc, 120)}"
    if rep.uncovered or full.uncovered:
        return "ops uncovered: " + ", ".join(sorted(set(rep.uncovered) | set(full.uncovered)))
    return "counts cleanly" if rep.records == full.records else "**shortcut != full**"


def measure_default(model_type: str) -> dict:
    """Whether transformers' default config of the type builds on meta; if not, the fix tried."""
    from transformers import CONFIG_MAPPING

    from auditor.counting.hf import build_model, load_config

    task, cls_name, kind = inputs_lib.head(model_type)

    def make(config):
        return build_model(config, "meta") if kind == "count_hf" else build(inputs_lib.head_class(cls_name), config,
                                                                           "meta")
    out: dict = {}
    start = time.perf_counter()
    try:
        config = CONFIG_MAPPING[model_type]()
    except Exception as exc:  # noqa: BLE001
        out["default"] = "config raises: " + _short(exc, 140)
    else:
        try:
            model = make(config)
            out.update(default="builds", default_parameters=_parameters(model))
        except Exception as exc:  # noqa: BLE001
            out["default"] = "build fails: " + _short(exc, 140)
    out["default_seconds"] = round(time.perf_counter() - start, 1)
    if out["default"] != "builds" and model_type in DEFAULT_FIXES:
        fix = DEFAULT_FIXES[model_type]
        try:
            model = make(load_config({"model_type": model_type, **fix}))
            out.update(fix_builds=True, fix_parameters=_parameters(model))
        except Exception as exc:  # noqa: BLE001
            out.update(fix_builds=False, fix_error=_short(exc, 140))
    return out


def _child(model_type: str, conn, defaults: bool) -> None:
    for phase, work in (("row", measure), ("default", measure_default if defaults else None)):
        if work is None:
            break
        try:
            conn.send((phase, work(model_type)))
        except BaseException as exc:  # noqa: BLE001 - report, never hang the parent
            conn.send((phase, {"type": model_type, "built": False,
                               "error": _short(exc) + " " + traceback.format_exc()[-300:]} if phase == "row"
                       else {"default": "error: " + _short(exc)}))
    conn.send(("done", None))
    conn.close()


def sweep(types: list[str], jobs: int = 2, limit: float = TIME_LIMIT_S, defaults: bool = True) -> list[dict]:
    """Measure each type in a forked child, ``jobs`` at a time: its tiny-config counts killed after
    ``limit`` s, the default config's build after DEFAULT_LIMIT_S more."""
    ctx = mp.get_context("fork")
    pending, running, rows = list(types), {}, {}
    while pending or running:
        while pending and len(running) < jobs:
            mt = pending.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(mt, child, defaults), daemon=True)
            proc.start()
            child.close()
            running[mt] = [proc, parent, time.monotonic(), "row"]
        time.sleep(0.05)
        for mt, state in list(running.items()):
            proc, conn, start, phase = state
            finished = False
            while conn.poll():
                try:
                    got, value = conn.recv()
                except EOFError:
                    finished = True
                    break
                if got == "row":
                    rows[mt] = value
                    state[2:] = [time.monotonic(), "default"]
                elif got == "default":
                    rows[mt].update(value)
                else:
                    finished = True
                    break
            if finished:
                pass
            elif not proc.is_alive() and not conn.poll():
                if phase == "row":
                    rows[mt] = {"type": mt, "built": False, "error": f"worker died (exit {proc.exitcode})"}
                else:
                    rows[mt]["default"] = f"worker died (exit {proc.exitcode})"
            elif time.monotonic() - state[2] > (limit if state[3] == "row" else DEFAULT_LIMIT_S):
                proc.kill()
                if state[3] == "row":
                    rows[mt] = {"type": mt, "built": True, "meta": False, "timeout": True,
                                "error": f"timed out after {limit:.0f} s"}
                else:
                    rows[mt]["default"] = f"build timed out after {DEFAULT_LIMIT_S} s"
            else:
                continue
            proc.join()
            conn.close()
            del running[mt]
            rows[mt].setdefault("type", mt)
            print(f"  {mt}: {_status(rows[mt])}", file=sys.stderr, flush=True)
    return [rows[t] for t in types]
# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("types", nargs="*", help="model types (default: every type of every auto mapping)")
    parser.add_argument("--write", action="store_true", help="write the tables into docs/architectures.md")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--limit", type=float, default=TIME_LIMIT_S, help="seconds per model")
    parser.add_argument("--no-defaults", action="store_true", help="skip building the default configs")
    parser.add_argument("--cold", action="store_true", help="time count_hf on default configs, cold")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--from-json", type=Path, help="make the tables from rows a --json run saved")
    args = parser.parse_args(argv)
    if args.cold:
        results = cold_times(tuple(args.types) or COLD_TYPES)
        text = cold_table(results)
        print(text)
        if args.write:
            write_blocks({"cold": text})
        return
    import transformers  # noqa: F401 - imported once, before forking
    import auditor.counting.hf  # noqa: F401

    transformers.logging.set_verbosity_error()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        rows, elapsed = saved["rows"], saved["elapsed"]
    else:
        start = time.perf_counter()
        rows = sweep(args.types or inputs_lib.all_types(), args.jobs, args.limit, not args.no_defaults)
        elapsed = time.perf_counter() - start
    text = table(rows)
    print(text)
    print(defaults_table(rows))
    print(f"{elapsed:.0f} s: {summary(rows)}")
    if args.json:
        args.json.write_text(json.dumps({"elapsed": elapsed, "rows": rows}, indent=1, default=str))
    if args.write:
        write_doc(text, rows, elapsed)


if __name__ == "__main__":
    main()
