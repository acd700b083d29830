"""The two passages a reviewer pastes: the EU notification's compute statement and the Model
Documentation Form's compute-and-energy entries, from a dossier (a plan or a tracked run).

Article 52(1) of the AI Act asks a provider to notify the Commission within two weeks of the
systemic-risk threshold being met or becoming known, and the guidelines (§2.3.2) ask for the
compute to two significant figures with the method used. Annex XI (1)(2)(d)-(e), and the Code of
Practice's Model Documentation Form after it, ask for the training compute and its measurement
method, the training time, and the energy used with its method. The words follow those texts;
the figures are the dossier's, nothing recomputed.
"""
from __future__ import annotations

from typing import Any

from auditor.report.run_view import energy_figure, energy_method, energy_words, phase_words, tracked_of, wall_hours
from auditor.text import two_significant

METHOD_WORDS = {
    "counted": ("counting every operation of a training step of the model as configured (its architecture built "
                "on the meta device), times the training tokens"),
    "analytic": "the architecture-based approximation 6 x parameters x tokens (Guidelines Annex A.2.2)",
    "hardware": "the hardware-based approximation: accelerators x hours x peak FLOP/s x utilization (Guidelines "
                "Annex A.2.1)",
    "tracked": ("measuring every operation of every training step as the run ran (dispatch-level counting, "
                "recorded in a hash-chained ledger)"),
}


def _method(d: dict[str, Any]) -> str:
    if d.get("kind") == "tracked":
        return "tracked"
    return d.get("central_method") or (d.get("preflight") or {}).get("central_method") or "analytic"


def notification_summary(d: dict[str, Any]) -> str:
    """The compute statement for the EU notification (Art. 52(1); Guidelines §2.3.2)."""
    method = _method(d)
    flops, low, high = d["total_flops"], d.get("low", d["total_flops"]), d.get("high", d["total_flops"])
    eu = next((v for v in d.get("verdicts", []) if v.get("rule") == "eu-ai-act-systemic-risk"), None)
    when = {"crossed": "meets", "at_risk": "may meet"}.get((eu or {}).get("status"), "does not meet")
    planned = "planned " if d.get("kind") != "tracked" else ""
    return (f"The {planned}training compute of {d['run']} is {two_significant(flops)} FLOP "
            f"(range {two_significant(low)} to {two_significant(high)}), estimated by {METHOD_WORDS[method]}. "
            f"It {when} the 10^25 FLOP threshold of Article 51(2) of Regulation (EU) 2024/1689."
            + (f" Estimated {d.get('as_of')}." if d.get("as_of") else ""))


def documentation_form(d: dict[str, Any]) -> list[tuple[str, str]]:
    """(entry, value) rows for the Model Documentation Form's compute and energy section."""
    method = _method(d)
    # a tracked run's own energy (measured, or its devices' rated power) before its plan's
    said = (tracked_of(d).get("energy"), d.get("energy"), (d.get("preflight") or {}).get("energy"))
    energy = next((e for e in said if e and "wh" in e), None) or said[0]
    hardware = next((e for e in d.get("estimates", []) if e.get("method") == "hardware"), None)
    hours = wall_hours(tracked_of(d))
    rows = [("Training compute", f"{two_significant(d['total_flops'])} FLOP"),
            ("Compute measurement method", METHOD_WORDS[method]),
            ("Training time", f"{hours:,.1f} h wall-clock, from the ledger" if hours is not None else
             f"{hardware['details']['hours']:,} h planned on {hardware['details']['count']:,} x "
             f"{hardware['details']['name']}" if hardware else "not known from this record")]
    if phase_words(d):
        rows.insert(2, ("Compute by phase", phase_words(d)))
    if energy and "wh" in energy:
        rows += [("Energy consumption", energy_figure(energy)), ("Energy method", energy_method(energy))]
    else:
        rows.append(("Energy consumption", energy_words(energy)))  # why there is none
    return rows
