"""Methods that disagree, said out loud: which, by how much, and the likely reason.

The EU guidelines accept an estimation error of 30 % (Annex A.2): two methods further apart than
that cannot both be right within it, and a range that just widens to hold both hides the question
a reviewer must ask. Each pair of central figures more than 30 % apart gets a sentence; the
likely reason comes from what the two methods count differently.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any

from auditor.estimate import Estimate
from auditor.text import sci

TOLERANCE = Fraction(13, 10)      # the EU's 30 %


def _reason(big: Estimate, small: Estimate) -> str:
    pair = {big.method, small.method}
    if "hardware" in pair:
        hardware = big if big.method == "hardware" else small
        other = small if hardware is big else big
        at_full = (hardware.details or {}).get("flops_at_full_utilization")
        given = (hardware.details or {}).get("utilization")
        if at_full:
            implied = other.flops / at_full
            return (f"at the {other.method} figure the planned accelerators would run at {implied * 100:.2g}% utilization, "
                    f"not the {given:.0%} the hardware method assumes: check the hours (do they include "
                    f"evaluation, restarts or idle reservations?), the utilization, and the tokens")
        return "the hardware plan and the model's size imply different amounts of work: check hours and tokens"
    if pair == {"counted", "analytic"}:
        return ("the count includes what 6ND leaves out: attention over the context (quadratic in its length), "
                "an LM head on a large vocabulary, and, for mixture-of-experts models, which parameters are "
                "active; check the context length and the active parameter count")
    return "the two methods count different work"


def disagreements(estimates: list[Estimate]) -> list[dict[str, Any]]:
    """One entry for each pair of methods whose central figures are more than 30 % apart."""
    out = []
    for i, a in enumerate(estimates):
        for b in estimates[i + 1:]:
            if not a.flops or not b.flops:
                continue
            big, small = (a, b) if a.flops >= b.flops else (b, a)
            ratio = Fraction(big.flops, small.flops)
            if ratio > TOLERANCE:
                out.append({"methods": [big.method, small.method], "ratio": float(ratio),
                            "text": f"the {big.method} figure ({sci(big.flops)} FLOP) is {float(ratio):.2f}x "
                                    f"the {small.method} figure ({sci(small.flops)}), beyond the 30 % the EU "
                                    f"guidelines allow: {_reason(big, small)}"})
    return out
