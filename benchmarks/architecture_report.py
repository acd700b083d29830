"""The architecture sweep's report: its tables, summary and the cold count_hf timings.

Made from the rows ``architectures.py`` measures (``--json`` keeps them, ``--from-json`` makes
the tables again); ``--write`` puts each table between its markers in docs/architectures.md.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from architecture_configs import DEFAULT_FIXES, META_WORKAROUNDS, NOTES
import architecture_inputs as inputs_lib

ROOT = Path(__file__).resolve().parents[1]


def _short(exc: BaseException | str, limit: int = 160) -> str:
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    text = text.replace("\n", " ").replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- report

CLEAN = ("counts cleanly", "counts cleanly, shortcut fell back")


def _status(row: dict) -> str:
    if row.get("skipped"):
        return "not run"
    if not row.get("built"):
        return "does not build"
    if row.get("timeout"):
        return "timed out"
    if row.get("runs") is False:
        return "does not run"
    if not row.get("meta"):
        if row.get("cpu"):
            return "fails on meta, counts on CPU"
        return "fails on meta and CPU" if "cpu" in row else "fails on meta"
    if row.get("shortcut_error"):
        return "counts, shortcut crashes"
    if row["uncovered"]:
        return "counts, ops uncovered"
    if not row["repeated_equal"]:
        return "counts, shortcut != full"
    if row.get("cpu_equal") is False:
        return "counts, meta != CPU"
    return "counts cleanly" if row.get("shortcut") in ("used", "no repeats") else "counts cleanly, shortcut fell back"


def _experts_cell(row: dict) -> str:
    share = row.get("experts")
    if not share:
        return ""
    lo, hi, k = share
    span = f"{lo:g}" if abs(lo - hi) < 1e-9 else f"{lo:g}-{hi:g}"
    verdict = "routed" if k is not None and abs(lo - k) < 1e-6 and abs(hi - k) < 1e-6 else "CHECK"
    return f"{span} (k={k}, {verdict})"


def _cpu_cell(row: dict) -> str:
    if not row.get("meta"):
        return f"slices {row['slices']}" if row.get("slices") else ""
    if "cpu_equal" not in row:
        return f"not run ({row['cpu_skipped']})" if row.get("cpu_skipped") else "CPU fails"
    if row["cpu_equal"]:
        return "yes"
    return f"**no** (CPU {row['cpu_ratio']:.4f}x)" if row.get("cpu_ratio") else "**no**"


def _default_cell(row: dict) -> str:
    d = row.get("default")
    if d is None:
        return ""
    if d == "builds":
        return "builds"
    fix = DEFAULT_FIXES.get(row["type"])
    if fix is not None:
        verdict = "builds" if row.get("fix_builds") else f"still fails ({row.get('fix_error', '?')})"
        return f"**fails**; with {_fix_text(fix)}: {verdict}"
    return "**fails** (see below)"


def _fix_text(fix: dict) -> str:
    return ", ".join(f"`{k}={v!r}`" for k, v in fix.items())


def _notes(r: dict) -> str:  # noqa: C901 - one flat list of independent notes, one `if` each
    notes = []
    if r.get("class") and r.get("causal_class") and r["class"] != r["causal_class"]:
        notes.append(f"encoder and decoder ({r['causal_class']} is the decoder alone)")
    if r.get("count_hf"):
        notes.append(f"count_hf refuses ({r['count_hf']}); counted with the sweep's inputs")
    if r.get("inputs"):
        notes.append(f"inputs: {r['inputs']}")
    if r.get("shortcut_error"):
        notes.append(f"with the shortcut: {r['shortcut_error']}")
    if r.get("meta") and not r.get("shortcut_error") and r.get("shortcut") not in ("used", "no repeats"):
        notes.append(f"shortcut fell back: {r['shortcut']}")
    if r.get("executed") and r.get("total"):
        notes.append(f"dense-masked extra {r['executed'] / r['total']:.2f}x of total in `executed`")
    if r.get("cpu_diff"):
        notes.append("CPU - meta: " + "; ".join(f"{k[0]} {k[1] or '(root)'} {k[2]} {v:+,}" for k, v in r["cpu_diff"]))
    if r.get("diff"):
        notes.append("shortcut - full: " + "; ".join(f"{k[0]} {k[1]} {k[2]} {v:+,}" for k, v in r["diff"]))
    if r["type"] in NOTES:
        notes.append(NOTES[r["type"]])
    if r.get("skipped"):
        notes.append(r["skipped"])
    if r["type"] in META_WORKAROUNDS:
        notes.append("meta needs " + _fix_text(META_WORKAROUNDS[r["type"]]))
    if r.get("text_only"):
        notes.append(f"text alone through count_hf: {r['text_only']}")
    if r.get("model_info"):
        notes.append(f"model_info fails: {r['model_info']}")
    if r.get("error"):
        notes.append(r["error"])
    if r.get("cpu_error"):
        notes.append("CPU: " + r["cpu_error"])
    if r.get("variants") and not r.get("meta") and not r.get("cpu"):
        notes.append("other configs: " + r["variants"])
    return "; ".join(notes)


def table(rows: list[dict]) -> str:
    head = ("| model type | task | family | status | class counted | config | uncovered ops | shortcut == full "
            "| meta == CPU | bwd/fwd | experts per token | meta count, s | default config | notes |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        ratio = f"{r['backward'] / r['forward']:.3f}" if r.get("forward") else ""
        rep = "" if not r.get("meta") else ("**crashes**" if r.get("shortcut_error") else
                                            "yes" if r["repeated_equal"] else "**no**")
        unc = ", ".join(f"`{u}`" for u in r.get("uncovered", []))
        secs = f"{r['seconds']:.2f}" if r.get("seconds") is not None else ""
        lines.append(f"| {r['type']} | {r.get('task', '')} | {r.get('family', '')} | {_status(r)} | "
                     f"{r.get('class', '')} | {r.get('config', '')} | {unc} | {rep} | {_cpu_cell(r)} | {ratio} | "
                     f"{_experts_cell(r)} | {secs} | {_default_cell(r)} | {_notes(r)} |")
    return head + "\n".join(lines) + "\n"


def defaults_table(rows: list[dict]) -> str:
    """Default configs transformers cannot build, and the smallest change that builds them."""
    head = "| model type | what fails | smallest change that builds (tried) |\n|---|---|---|\n"
    lines = []
    for r in rows:
        d = r.get("default")
        if d is None or d == "builds":
            continue
        fix = DEFAULT_FIXES.get(r["type"])
        if fix is None:
            change = "none found"
        elif r.get("fix_builds"):
            change = f"{_fix_text(fix)}: builds"
        else:
            change = f"{_fix_text(fix)}: still fails ({r.get('fix_error', '')})"
        lines.append(f"| {r['type']} | {d} | {change} |")
    return head + "\n".join(lines) + "\n"


def summary(rows: list[dict]) -> str:
    from collections import Counter

    counts = Counter(_status(r) for r in rows)
    swept = [r for r in rows if not r.get("skipped")]
    clean = sum(1 for r in swept if _status(r) in CLEAN)
    counted = sum(1 for r in swept if r.get("meta") or r.get("cpu"))
    text = (f"{len(rows)} model types, {len(swept)} swept ({len(rows) - len(swept)} not run): {clean} count cleanly on "
            f"meta ({100 * clean / max(1, len(swept)):.1f}%: no uncovered op, shortcut == full, meta == CPU where "
            f"compared), {counted} counted at all (meta or CPU, {100 * counted / max(1, len(swept)):.1f}%)")
    return text + ". By status: " + ", ".join(f"{n} {s}" for s, n in counts.most_common())


def families(rows: list[dict]) -> str:
    """Per task: types, clean, counted."""
    from collections import defaultdict

    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r.get("task", "")].append(r)
    lines = ["| task (head) | types | count cleanly | counted (meta or CPU) | not run |", "|---|---|---|---|---|"]
    for task, rs in sorted(by.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"| {task} | {len(rs)} | {sum(_status(r) in CLEAN for r in rs)} | "
                     f"{sum(bool(r.get('meta') or r.get('cpu')) for r in rs)} | {sum(bool(r.get('skipped')) for r in rs)} |")
    return "\n".join(lines) + "\n"


_META_CAUSES = (
    ("reads values with `.tolist()` / `.cpu()`: multimodal RoPE indices (`get_rope_index`), any-resolution "
     "tiles, patch grids", ("Cannot copy out of meta",)),
    ("boolean-mask indexing or `nonzero`: real-image selection, capacity routing, global attention, "
     "language adapters", ("nonzero",)),
    ("`repeat_interleave` without `output_size`: variable-length vision attention (cu_seqlens)",
     ("repeat_interleave",)),
    ("integer reads with `.item()`: lengths, codebook sizes", ("item()",)),
    ("tensors made on the CPU inside forward", ("not on the expected device", "Expected all tensors", "device cpu")),
)


def meta_failures(rows: list[dict]) -> str:
    """The models that fail on meta, by cause (as their errors name it); * = the slice fallback's
    total equals the full CPU count."""
    lines = ["| cause | models (* = CPU slices equal the full CPU count) |", "|---|---|"]
    groups: dict[str, list[str]] = {}
    for r in rows:
        if r.get("meta") is not False or not r.get("cpu"):
            continue
        cause = next((c for c, pats in _META_CAUSES if any(p in r.get("error", "") for p in pats)), "other")
        groups.setdefault(cause, []).append(r["type"] + ("*" if r.get("slices") == "equal" else ""))
    for cause, _ in (*_META_CAUSES, ("other", ())):
        if groups.get(cause):
            lines.append(f"| {cause if cause != 'other' else 'other (see the notes)'} | {', '.join(groups[cause])} |")
    return "\n".join(lines) + "\n"


def fallbacks(rows: list[dict]) -> str:
    """Why the shortcut declined, by reason, for the models that still counted cleanly."""
    import re

    groups: dict[str, list[str]] = {}
    for r in rows:
        if _status(r) != "counts cleanly, shortcut fell back":
            continue
        why = re.sub(r"\b[\w.]*\.\d+\b", "X", r["shortcut"])
        why = re.sub(r"\(([A-Za-z]+Error):.*", r"(\1)", why)
        groups.setdefault(why, []).append(r["type"])
    lines = ["| why the shortcut declined (exact: every block counted) | models |", "|---|---|"]
    for why, types in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"| {why} | {', '.join(types)} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- cold count_hf time of default configs

COLD_TYPES = ("llama", "mistral", "mixtral", "deepseek_v3", "qwen3_moe", "mamba", "mamba2", "jamba", "zamba2",
              "rwkv", "t5", "bart", "whisper", "vit")
COLD_TOKENS = 1024
COLD_TARGET_S = 5.0
_COLD = """
import json, sys, time
t0 = time.perf_counter()
import torch, transformers
from auditor.counting.hf import count_hf, load_config
t1 = time.perf_counter()
kind, seq = sys.argv[1], int(sys.argv[2])
if kind == "vit":   # count_hf has no image inputs yet: its own steps, with the sweep's pixel_values
    sys.path.insert(0, "benchmarks")
    import architecture_inputs as ai
    from auditor.counting.hf import build_model
    from auditor.counting.step import count_step
    from transformers import AutoModelForImageClassification
    config = load_config({"model_type": "vit"})
    with torch.device("meta"):
        model = AutoModelForImageClassification.from_config(config)
    model.train()
    r = count_step(model, {"pixel_values": ai.pixel_values(config, torch.device("meta")),
                           "labels": torch.zeros(1, dtype=torch.long, device="meta")})
    r.model_class = type(model).__name__
else:
    r = count_hf({"model_type": kind}, seq_len=seq)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "count_s": t2 - t1, "total": r.total, "complete": r.complete,
                  "model_class": r.model_class}))
"""


def cold_times(types=COLD_TYPES, limit: float = 300) -> list[dict]:
    """Each type's default config counted by count_hf at COLD_TOKENS tokens in a fresh process, one
    at a time (nothing else of ours running): wall time from the interpreter's start."""
    out = []
    for t in types:
        seq = 448 if t == "whisper" else COLD_TOKENS   # Whisper's decoder stops at max_target_positions 448
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-c", _COLD, t, str(seq)], cwd=ROOT, capture_output=True,
                                  text=True, timeout=limit)
            wall = time.perf_counter() - start
            got = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else \
                {"error": _short(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed")}
        except subprocess.TimeoutExpired:
            wall, got = time.perf_counter() - start, {"error": f"timed out after {limit:.0f} s"}
        out.append({"type": t, "seq": seq, "wall": round(wall, 2), **got})
        print(f"  {t}: {wall:.1f} s", file=sys.stderr, flush=True)
    return out


def cold_table(results: list[dict]) -> str:
    lines = ["| model type | tokens | class | step FLOPs | cold wall, s | interpreter start, s | imports, s | "
             f"build and count, s | under {COLD_TARGET_S:g} s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['type']} | {r['seq']} | | | {r['wall']:.1f} | | | | fails: {r['error']} |")
            continue
        tokens = "one 224x224 image (197 positions)" if r["type"] == "vit" else f"{r['seq']:,}"
        start = r["wall"] - r["import_s"] - r["count_s"]
        lines.append(f"| {r['type']} | {tokens} | {r['model_class']} | {r['total']:,} | {r['wall']:.1f} | {start:.1f} | "
                     f"{r['import_s']:.1f} | {r['count_s']:.1f} | {'yes' if r['wall'] < COLD_TARGET_S else '**no**'} |")
    return "\n".join(lines) + "\n"


def write_doc(text: str, rows: list[dict], elapsed: float) -> None:
    import torch
    import transformers

    stamp = (f"transformers {transformers.__version__}, torch {torch.__version__}; swept in {elapsed / 60:.0f} min "
             f"({elapsed:.0f} s) on 2 cores, two models at a time. {summary(rows)}.\n\n")
    unmapped = inputs_lib.unmapped_config_types()
    write_blocks({"table": stamp + text, "families": families(rows), "defaults": defaults_table(rows),
                   "metafails": meta_failures(rows), "fallbacks": fallbacks(rows),
                   "unmapped": f"{len(unmapped)} config types: " + ", ".join(f"`{t}`" for t in unmapped) + "\n"})


def write_blocks(blocks: dict[str, str]) -> None:
    doc = ROOT / "docs" / "architectures.md"
    old = doc.read_text() if doc.exists() else "# Architectures\n"
    for name, body in blocks.items():
        a, b = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if a not in old:
            old += f"\n{a}\n{b}\n"
        pre, rest = old.split(a, 1)
        old = pre + f"{a}\n{body}{b}" + rest.split(b, 1)[1]
    doc.write_text(old)

