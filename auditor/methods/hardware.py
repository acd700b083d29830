"""The hardware method: accelerators x time x dense peak FLOP/s x utilization.

C = count x hours x 3600 s x peak x U, the EU GPAI guidelines' hardware-based method (Annex
A.2.1; their worked examples take the H100 at 989 TFLOP/s BF16 and U = 50 %). The peak comes
from the cited table auditor/data/accelerators.yaml: dense (no sparsity) peak of one unit at
the training precision. Every number stays exact (Fraction) until the final int.

Utilization is the uncertain factor. Epoch AI assumes 30 % for language models and 40 %
otherwise; reported utilizations run from ~20 % (GPT-3) to 46 % (PaLM). The default band
(30 %, 50 %) spans that with the guidelines' 50 %; its midpoint, 40 %, is the central figure
when no utilization is given.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from auditor.estimate import Estimate
from auditor.inputs.values import parse_number, positive_count, positive_number

__all__ = ["Accelerator", "UnknownAccelerator", "accelerator_ids", "accelerators", "find_accelerator",
           "get_accelerator", "normalize_name", "hardware_estimate", "PRECISIONS"]

PRECISIONS = ("bf16", "fp16", "fp8", "tf32", "fp32", "int8")
_PRECISION_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32",
                      "float": "fp32", "single": "fp32", "float8": "fp8", "e4m3": "fp8", "e5m2": "fp8",
                      "float8_e4m3fn": "fp8", "float8_e5m2": "fp8", "tensorfloat32": "tf32"}
UTILIZATION_NOTE = ("Epoch AI assumes 30 % for language models, 40 % otherwise; reported utilizations run "
                    "from ~20 % (GPT-3) to 46 % (PaLM)")


@dataclass(frozen=True)
class Accelerator:
    id: str
    name: str
    vendor: str
    peak_flops: dict[str, int]            # dense peak per unit, FLOP/s (OP/s for int8), exact
    source: dict[str, str]                # {"text": ..., "url": ...}
    note: str | None = None
    aliases: tuple[str, ...] = ()
    default_precision: str = "bf16"
    power_w: int | None = None            # rated power of one unit (TDP / total board power), watts
    power_source: str | None = None

    def peak(self, precision: str | None = None) -> int:
        """Dense peak FLOP/s per unit at ``precision`` (default: the table's default_precision)."""
        key = _precision(precision or self.default_precision)
        if key not in self.peak_flops:
            have = ", ".join(sorted(self.peak_flops))
            raise ValueError(f"{self.id} has no published dense {key} peak in the accelerator table; "
                             f"it has: {have}")
        return self.peak_flops[key]


class UnknownAccelerator(ValueError, KeyError):
    """No row of the accelerator table matches the name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def normalize_name(name: str) -> str:
    """The matching key: case, '-', '_', spaces and dots ignored ('h100_sxm' == 'H100-SXM')."""
    return re.sub(r"[-_\s.]+", "", str(name)).upper()


def _precision(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    key = _PRECISION_ALIASES.get(key, key)
    if key not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; expected one of {', '.join(PRECISIONS)}")
    return key


def _exact_peak(value: Any, where: str) -> int:
    number = parse_number(value, f"peak FLOP/s of {where}")
    if number <= 0 or number.denominator != 1:
        raise ValueError(f"accelerator table: {where} must be a positive whole number of FLOP/s, got {value!r}")
    return int(number)


def _load(text: str) -> dict[str, Accelerator]:
    data = yaml.safe_load(text) or {}
    table: dict[str, Accelerator] = {}
    keys: dict[str, str] = {}
    for acc_id, row in (data.get("accelerators") or {}).items():
        if not isinstance(row, dict):
            raise ValueError(f"accelerator table: entry {acc_id!r} must be a mapping")
        peaks = {_precision(p): _exact_peak(v, f"{acc_id}.{p}") for p, v in (row.get("peak_flops") or {}).items()}
        source = row.get("source") or {}
        if not peaks or not source.get("text") or not source.get("url"):
            raise ValueError(f"accelerator table: {acc_id!r} needs peak_flops and a source with text and url")
        acc = Accelerator(id=str(acc_id), name=str(row.get("name", acc_id)), vendor=str(row.get("vendor", "")),
                          peak_flops=peaks, source={"text": str(source["text"]), "url": str(source["url"])},
                          note=(str(row["note"]).strip() if row.get("note") else None),
                          aliases=tuple(str(a) for a in row.get("aliases") or ()),
                          default_precision=_precision(row.get("default_precision", "bf16")),
                          power_w=int(row["power_w"]) if row.get("power_w") else None,
                          power_source=str(row["power_source"]) if row.get("power_source") else None)
        if (acc.power_w is None) != (acc.power_source is None):
            raise ValueError(f"accelerator table: {acc_id!r} needs both power_w and power_source, or neither")
        acc.peak()  # the default precision must have a peak
        for spelling in (acc.id, *acc.aliases):
            key = normalize_name(spelling)
            if keys.get(key, acc.id) != acc.id:
                raise ValueError(f"accelerator table: {spelling!r} names both {keys[key]} and {acc.id}")
            keys[key] = acc.id
        table[acc.id] = acc
    return table


@lru_cache(maxsize=1)
def accelerators() -> dict[str, Accelerator]:
    """The bundled table, id -> Accelerator, in file order."""
    text = resources.files("auditor").joinpath("data/accelerators.yaml").read_text(encoding="utf-8")
    return _load(text)


@lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    return {normalize_name(s): acc.id for acc in accelerators().values() for s in (acc.id, *acc.aliases)}


def accelerator_ids() -> list[str]:
    """The canonical ids of the table, in file order ('H100-SXM', 'TPU-v5p', ...). To check a
    user's spelling, use find_accelerator: it ignores case and '-', '_', ' ', '.', and knows
    the aliases ('h100_sxm', 'H100', 'A100' all resolve)."""
    return list(accelerators())


# Words that say who makes a chip or how much memory it has, not which chip it is: 'NVIDIA A100
# 80GB', 'AMD Instinct MI300X', 'Tesla V100 32GB' name the rows A100-SXM, MI300X and V100-SXM2.
_NOISE = re.compile(r"^(NVIDIA|AMD|INSTINCT|TESLA|GOOGLE|CLOUD|INTEL|HABANA|GPU|\d+GB)$")


def _lenient_keys(name: str) -> list[str]:
    """The matching key, then the same without its vendor and memory-size words."""
    words = [w for w in re.split(r"[-_\s.]+", str(name)) if w]
    kept = [w for w in words if not _NOISE.match(w.upper())]
    return list(dict.fromkeys([normalize_name(name), normalize_name("".join(kept))]))


def find_accelerator(name: str | Accelerator) -> Accelerator | None:
    """The row for ``name`` (id or alias, spelled loosely: case, '-', '_', ' ', '.' ignored, and a
    vendor word or memory size taken off: 'A100-80GB', 'NVIDIA H100 PCIe', 'AMD MI300X'), or None."""
    if isinstance(name, Accelerator):
        return name
    index = _index()
    acc_id = next((index[k] for k in _lenient_keys(name) if k in index), None)
    return accelerators()[acc_id] if acc_id else None


def get_accelerator(name: str | Accelerator) -> Accelerator:
    """find_accelerator, raising UnknownAccelerator with the known ids and near misses."""
    acc = find_accelerator(name)
    if acc is None:
        near = difflib.get_close_matches(normalize_name(name), list(_index()), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(sorted({_index()[k] for k in near}))}?" if near else ""
        raise UnknownAccelerator(f"unknown accelerator {str(name)!r}.{hint} Known: {', '.join(accelerator_ids())} "
                                 "(add a cited row to auditor/data/accelerators.yaml for others)")
    return acc


def _plain(x: Fraction) -> int | float:
    return int(x) if x.denominator == 1 else float(x)


def hardware_estimate(accelerator: str | Accelerator, count: int, hours: float, *,
                      utilization: float | None = None, band: tuple[float, float] = (0.3, 0.5),
                      precision: str | None = None) -> Estimate:
    """C = count x hours x 3600 x dense peak x utilization, as an Estimate (method 'hardware').

    ``count`` units (GPUs, OAM modules, TPU chips) for ``hours`` wall-clock hours each (or
    count = 1 and hours = total unit-hours). The central figure uses ``utilization``, else the
    band's midpoint; low and high span the band, stretched to hold a given utilization outside
    it. ``precision`` picks the peak (default: bf16, or the table's default where a chip has no
    bf16, e.g. fp16 on the V100); all operations count the same whatever their precision.
    """
    acc = get_accelerator(accelerator)
    key = _precision(precision or acc.default_precision)
    peak = acc.peak(key)
    units = positive_count(count, "number of accelerators")
    time_h = positive_number(hours, "number of hours")
    lo, hi = (positive_number(b, "utilization bound") for b in band)
    if not lo <= hi <= 1:
        raise ValueError(f"band must be (low, high) utilizations with 0 < low <= high <= 1, got {band!r}")
    given = utilization is not None
    u = positive_number(utilization, "utilization") if given else (lo + hi) / 2
    if u > 1:
        raise ValueError(f"utilization must be at most 1 (100 %), got {utilization!r}")

    at_peak = units * time_h * 3600 * peak          # FLOPs at 100 % utilization
    u_low, u_high = min(lo, u), max(hi, u)
    flops = round(at_peak * u)
    low, high = math.floor(at_peak * u_low), math.ceil(at_peak * u_high)

    assumptions = [
        "C = accelerators x hours x 3600 s x dense peak FLOP/s x utilization (EU GPAI guidelines, Annex A.2.1)",
        f"{units:,} x {acc.name} (accelerator table row {acc.id}) for {_plain(time_h):,} h each = "
        f"{_plain(units * time_h):,} unit-hours of training "
        "(evaluation, failed experiments and idle reservations are not training compute: leave them out of "
        "the hours or the utilization; Guidelines Annex A.1)",
        f"peak: {peak / 1e12:,.1f} TFLOP/s per unit, dense (no sparsity) {key}; source: {acc.source['text']} "
        f"<{acc.source['url']}>" + (f"; note: {acc.note}" if acc.note else ""),
        f"utilization {float(u):.0%} ({'given' if given else 'midpoint of the band, none given'}); "
        f"range {float(u_low):.0%}-{float(u_high):.0%}: {UTILIZATION_NOTE}",
        f"precision {key} only selects the peak: every operation counts the same whatever its precision "
        "(Guidelines Annex A.2)",
    ]
    details = {"accelerator": acc.id, "name": acc.name, "vendor": acc.vendor, "precision": key,
               "peak_flops_per_s": peak, "count": units, "hours": _plain(time_h),
               "unit_hours": _plain(units * time_h), "flops_at_full_utilization": round(at_peak),
               "utilization": float(u), "utilization_given": given, "band": [float(lo), float(hi)],
               "source": dict(acc.source)}
    return Estimate(method="hardware", flops=flops, low=low, high=high, assumptions=assumptions, details=details)
