"""Sweep every causal-LM architecture of the installed transformers through the counter.

For each config type in ``AutoModelForCausalLM``'s mapping: make a tiny config (generic size
rules, then per-model overrides), build it with the model class count_hf chooses
(``auditor.counting.hf.model_class``: an encoder-decoder such as bart or whisper builds its
whole sequence-to-sequence model, not the causal LM that is its decoder alone; the notes name
that class), count one training step on the meta device with and without
the repeated-block shortcut, and record whether it builds and runs, the uncovered ops, whether
both totals agree exactly, the backward/forward ratio and, for mixture-of-experts models, how
many experts each token was charged for. A model that fails on meta is retried on CPU with
random weights, to tell a meta-only failure from a broken config.

    python benchmarks/architectures.py            # print the Markdown table
    python benchmarks/architectures.py --write    # and write docs/architectures.md
    python benchmarks/architectures.py llama jamba   # only these model types

Each model runs in its own forked process (isolation, and a hard time limit), two at a time.
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCH, SEQ = 1, 32
TIME_LIMIT_S = 60

from architecture_configs import FAMILY, META_WORKAROUNDS, NOTES, OVERRIDES, SIZES, SKIP  # noqa: E402


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


def _token_fields(defaults: dict, vocab: int) -> dict:
    """Special token ids inside the tiny vocabulary, distinct, and never 0 (the input ids)."""
    out, spare = {}, iter(range(vocab - 1, 3, -1))
    for name, value in defaults.items():
        if not (name.endswith("_token_id") or name.endswith("_token_index") or name.endswith("_index")
                and "token" in name):
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


def tiny_fields(cls, overrides: dict) -> dict:
    """Generic tiny sizes for the fields ``cls`` has, sub-configs included, then ``overrides``."""
    defaults = _fields(cls)
    fields = {k: v for k, v in SIZES.items() if k in defaults and not isinstance(defaults[k], bool)
              and (defaults[k] is None or isinstance(defaults[k], int))}
    fields.update(_token_fields(defaults, fields.get("vocab_size", 128)))
    subs = getattr(cls, "sub_configs", None) or {}
    if subs:
        try:
            instance = cls()
        except Exception:
            instance = None
        for name in subs:
            sub = getattr(instance, name, None)
            if sub is None or not hasattr(sub, "model_type"):
                continue
            sub_fields = tiny_fields(type(sub), overrides.get(name, {}))
            fields[name] = {"model_type": sub.model_type, **sub_fields} if sub.model_type else sub_fields
    fields.update({k: v for k, v in overrides.items() if k not in subs})
    return fields


def tiny_config(model_type: str) -> dict:
    from transformers import CONFIG_MAPPING

    overrides = {**OVERRIDES.get(model_type, {}), **META_WORKAROUNDS.get(model_type, {})}
    return {"model_type": model_type, **tiny_fields(CONFIG_MAPPING[model_type], overrides)}


def causal_lm_types() -> list[str]:
    from transformers import AutoModelForCausalLM

    return sorted(AutoModelForCausalLM._model_mapping._model_mapping)


def causal_lm_class(config) -> str:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM._model_mapping[type(config)].__name__


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


def expert_share(result, model) -> tuple[float, float, int | None] | None:
    """(min, max) over MoE layers of forward expert FLOPs / (2 x tokens x one expert's weights),
    i.e. the experts each token was charged for; and k from the config. None if no experts."""
    experts = _experts_modules(model)
    if not experts:
        return None
    tokens = BATCH * SEQ
    shares = []
    for path, (per_expert, _e) in experts.items():
        flops = sum(v for (phase, mod, _), v in result.records.items()
                    if phase == "forward" and (mod == path or mod.startswith(path + "."))
                    and "router" not in mod[len(path):])  # JetMoE's MoA keeps its router inside
        shares.append(flops / (2 * tokens * per_expert))
    return min(shares), max(shares), _top_k(model.config)


def _short(exc: BaseException, limit: int = 160) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def measure(model_type: str) -> dict:
    """Everything the table reports about one model type (runs in a child process)."""
    import torch

    from auditor.counting.hf import build_model, count_hf, load_config
    from auditor.counting.modelinfo import model_info
    from auditor.counting.moe import is_moe

    torch.manual_seed(0)
    row: dict = {"type": model_type, "family": FAMILY.get(model_type, "dense")}
    if model_type in SKIP:
        return {**row, "skipped": SKIP[model_type]}
    t0 = time.perf_counter()
    try:
        mapping = tiny_config(model_type)
        config = load_config(mapping)
        model = build_model(config, "meta")  # the class count_hf builds, counted below through count_hf
        row["class"] = type(model).__name__
        row["causal_class"] = causal_lm_class(config)
        model_info(model)  # what preflight's analytic method reads: it must not fail either
        row["built"] = True
        if row["family"] == "dense" and (is_moe(model) or _experts_modules(model)):
            row["family"] = "MoE"
    except Exception as exc:
        row.update(built=False, error=_short(exc))
        return row
    try:
        rep = count_hf(mapping, batch=BATCH, seq_len=SEQ, repeated_blocks=True)
        full = count_hf(mapping, batch=BATCH, seq_len=SEQ, repeated_blocks=False)
        row.update(meta=True, forward=full.forward, backward=full.backward, total=full.total,
                   uncovered=sorted(set(rep.uncovered) | set(full.uncovered)),
                   repeated_equal=rep.total == full.total and rep.records == full.records,
                   shortcut=next((a.split(":", 1)[1].strip() for a in rep.assumptions
                                  if a.startswith("repeated-block shortcut not used")), "used"
                                 if any(a.startswith("identical repeated") for a in rep.assumptions) else "no repeats"),
                   executed=sum(full.executed.values()))
        if not row["repeated_equal"]:
            diff = rep.records.copy()
            diff.subtract(full.records)
            row["diff"] = sorted((k, v) for k, v in diff.items() if v)[:4]
        row["experts"] = expert_share(full, model)
    except Exception as exc:
        row.update(meta=False, error=_short(exc))
        try:
            cpu = count_hf(mapping, batch=BATCH, seq_len=SEQ, device="cpu", repeated_blocks=False)
            row.update(cpu=True, uncovered=sorted(cpu.uncovered), forward=cpu.forward, backward=cpu.backward)
            row["experts"] = expert_share(cpu, model)
        except Exception as exc2:
            row.update(cpu=False, cpu_error=_short(exc2))
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _child(model_type: str, conn) -> None:
    try:
        conn.send(measure(model_type))
    except BaseException as exc:  # noqa: BLE001 - report, never hang the parent
        conn.send({"type": model_type, "built": False, "error": _short(exc) + " " + traceback.format_exc()[-300:]})
    conn.close()


def sweep(types: list[str], jobs: int = 2, limit: float = TIME_LIMIT_S) -> list[dict]:
    """Measure each type in a forked child, ``jobs`` at a time, each killed after ``limit`` s."""
    ctx = mp.get_context("fork")
    pending, running, rows = list(types), {}, {}
    while pending or running:
        while pending and len(running) < jobs:
            mt = pending.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(mt, child), daemon=True)
            proc.start()
            child.close()
            running[mt] = (proc, parent, time.monotonic())
        time.sleep(0.05)
        for mt, (proc, conn, start) in list(running.items()):
            if conn.poll():
                try:
                    rows[mt] = conn.recv()
                except EOFError:
                    rows[mt] = {"type": mt, "built": False, "error": f"worker died (exit {proc.exitcode})"}
            elif not proc.is_alive():
                rows[mt] = {"type": mt, "built": False, "error": f"worker died (exit {proc.exitcode})"}
            elif time.monotonic() - start > limit:
                proc.kill()
                rows[mt] = {"type": mt, "built": True, "meta": False, "error": f"timed out after {limit:.0f} s"}
            else:
                continue
            proc.join()
            conn.close()
            del running[mt]
            print(f"  {mt}: {_status(rows[mt])}", file=sys.stderr, flush=True)
    return [rows[t] for t in types]


# ---------------------------------------------------------------- report


def _status(row: dict) -> str:
    if row.get("skipped"):
        return "not run"
    if not row.get("built"):
        return "does not build"
    if not row.get("meta"):
        return "fails on meta" + (", counts on CPU" if row.get("cpu") else ", fails on CPU too" if "cpu" in row else "")
    if row["uncovered"]:
        return "counts, ops uncovered"
    if not row["repeated_equal"]:
        return "counts, repeated != full"
    return "counts cleanly"


def _experts_cell(row: dict) -> str:
    share = row.get("experts")
    if not share:
        return ""
    lo, hi, k = share
    span = f"{lo:g}" if abs(lo - hi) < 1e-9 else f"{lo:g}-{hi:g}"
    verdict = "routed" if k is not None and abs(lo - k) < 1e-6 and abs(hi - k) < 1e-6 else "CHECK"
    return f"{span} (k={k}, {verdict})"


def table(rows: list[dict]) -> str:
    head = ("| model type | family | status | uncovered ops | repeated == full | bwd/fwd | experts per token "
            "| notes |\n|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        ratio = f"{r['backward'] / r['forward']:.3f}" if r.get("forward") else ""
        rep = "" if not r.get("meta") else ("yes" if r["repeated_equal"] else "**no**")
        notes = []
        if r.get("class") and r["class"] != r.get("causal_class"):
            notes.append(f"counted as {r['class']}, encoder and decoder ({r['causal_class']} is the decoder alone)")
        if r.get("meta") and r.get("shortcut") not in ("used", "no repeats"):
            notes.append(f"shortcut fell back: {r['shortcut']}")
        if r.get("executed"):
            notes.append(f"dense-masked extra {r['executed'] / r['total']:.2f}x of total in `executed`")
        if r["type"] in NOTES:
            notes.append(NOTES[r["type"]])
        if r.get("skipped"):
            notes.append(r["skipped"])
        if r["type"] in META_WORKAROUNDS:
            notes.append("meta needs " + ", ".join(f"`{k}={v!r}`" for k, v in META_WORKAROUNDS[r["type"]].items()))
        if r.get("error"):
            notes.append(r["error"])
        if r.get("cpu_error"):
            notes.append("CPU: " + r["cpu_error"])
        unc = ", ".join(f"`{u}`" for u in r.get("uncovered", []))
        lines.append(f"| {r['type']} | {r.get('family', '')} | {_status(r)} | {unc} | {rep} | {ratio} "
                     f"| {_experts_cell(r)} | {'; '.join(notes)} |")
    return head + "\n".join(lines) + "\n"


def summary(rows: list[dict]) -> str:
    from collections import Counter

    counts = Counter(_status(r) for r in rows)
    return ", ".join(f"{n} {s}" for s, n in counts.most_common())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("types", nargs="*", help="model types (default: every causal LM)")
    parser.add_argument("--write", action="store_true", help="write the table into docs/architectures.md")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--limit", type=float, default=TIME_LIMIT_S, help="seconds per model")
    args = parser.parse_args(argv)
    import transformers  # noqa: F401 - imported once, before forking

    import auditor.counting.hf  # noqa: F401

    start = time.perf_counter()
    rows = sweep(args.types or causal_lm_types(), args.jobs, args.limit)
    elapsed = time.perf_counter() - start
    text = table(rows)
    print(text)
    print(f"{len(rows)} architectures in {elapsed:.0f} s: {summary(rows)}")
    if args.write:
        write_doc(text, rows, elapsed)


def write_doc(text: str, rows: list[dict], elapsed: float) -> None:
    import torch
    import transformers

    doc = ROOT / "docs" / "architectures.md"
    marker_a, marker_b = "<!-- table:start -->", "<!-- table:end -->"
    stamp = (f"transformers {transformers.__version__}, torch {torch.__version__}; {len(rows)} architectures "
             f"in {elapsed:.0f} s: {summary(rows)}.\n\n")
    block = f"{marker_a}\n{stamp}{text}{marker_b}"
    old = doc.read_text() if doc.exists() else f"# Architectures\n\n{marker_a}\n{marker_b}\n"
    pre, rest = old.split(marker_a, 1)
    post = rest.split(marker_b, 1)[1]
    doc.write_text(pre + block + post)


if __name__ == "__main__":
    main()
