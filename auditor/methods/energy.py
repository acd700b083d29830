"""Training energy from the hardware plan: accelerators x hours x their rated power, with a range.

The EU AI Act's Annex XI (and the Code of Practice's Model Documentation Form) asks for the
energy used in training *with the method by which it was found*. Before a run, or without a
power meter, the plan is what there is: each accelerator's rated power (TDP, or AMD's total
board power) from the accelerator table, for the planned hours. That is an estimate, not a
measurement, and says so:

- central: every accelerator at its rated power for every planned hour (accelerators alone);
- low: 60 % of it (large training runs average well under rated power between steps and
  collectives; host CPUs, network and cooling left out);
- high: 1.6 x it: the accelerators at rated power, plus host servers and network (about a
  third on top) and a data-centre overhead (PUE 1.2).

Energies are in watt-hours, as ints, exactly: count x hours x watts.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

LOW, HIGH = Fraction(6, 10), Fraction(16, 10)
METHOD = "accelerator rated power x count x hours (estimated from the hardware plan, not measured)"
RUN_METHOD = ("accelerator rated power x count x the run's wall-clock hours (estimated from the accelerator table, "
              "not measured: no energy counter was readable)")


def energy_from_plan(accelerator: str, count: int, hours: Fraction, *, basis: str = "plan") -> dict[str, Any] | None:
    """The plan's energy, or None when the accelerator table has no power for the chip. ``basis``
    'run': the same arithmetic over a tracked run's own hours and devices, said so."""
    from auditor.methods.hardware import get_accelerator

    acc = get_accelerator(accelerator)
    if acc.power_w is None:
        return None
    wh = Fraction(count) * Fraction(hours) * acc.power_w
    return {
        "method": METHOD if basis == "plan" else RUN_METHOD,
        "wh": round(wh), "low_wh": math.floor(wh * LOW), "high_wh": math.ceil(wh * HIGH),
        "accelerator": acc.id, "power_w": acc.power_w, "count": int(count),
        "hours": float(hours) if Fraction(hours).denominator != 1 else int(hours),
        "assumptions": [
            f"{int(count):,} x {acc.name} at its rated {acc.power_w} W for {float(hours):,g} h each "
            f"(source: {acc.power_source})",
            "low end: 60 % of rated power on average (training spends time below it: data loading, collectives, "
            "checkpoints); accelerators only",
            "high end: 1.6 x: host servers and network (about a third more) and a data-centre overhead (PUE 1.2)",
            "an estimate from the plan: measured energy (NVML, codecarbon) is the better figure where a run has it"
            if basis == "plan" else "an estimate from the devices the run ran on and its wall-clock time, for want of "
            "a readable energy counter (NVML) or codecarbon",
        ],
    }


def no_energy_reason(accelerator: str) -> str:
    from auditor.methods.hardware import get_accelerator

    acc = get_accelerator(accelerator)
    return f"the accelerator table has no confirmed rated power for {acc.name}, so no energy is estimated"


def mwh(wh: int) -> str:
    """'1,234.5 MWh' for reading; the record keeps the exact watt-hours."""
    return f"{wh / 1e6:,.1f} MWh" if wh >= 1e5 else f"{wh / 1e3:,.1f} kWh"
