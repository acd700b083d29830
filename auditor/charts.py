"""Inline SVG charts for the HTML dossier: no script, no network, printable.

Every label passes through html.escape; numbers are formatted here. Two charts: the
estimates' ranges against the thresholds on a log scale, and cumulative compute over a
tracked run's steps.
"""
from __future__ import annotations

import math
from html import escape
from typing import Any

COLORS = {"counted": "#1f5f99", "analytic": "#6a8f2a", "hardware": "#a0522d"}
STATUS_COLORS = {"crossed": "#b3261e", "at_risk": "#c77700", "clear": "#2e7d32", "not_in_force": "#888888"}


def _sci(x: float) -> str:
    return f"{x:.1e}".replace("e+", "e")


def ranges_svg(estimates: list[dict[str, Any]], verdicts: list[dict[str, Any]], width: int = 760) -> str:
    """Each estimate's low-high bar with its central figure, and each rule in force as a line."""
    rows = [e for e in estimates if e.get("high", 0) > 0]
    lines = {}
    for v in verdicts:
        if v.get("status") != "not_in_force" and v.get("threshold_flops", 0) > 0:
            lines.setdefault(v["threshold_flops"], []).append(v)
    values = [e["low"] for e in rows if e["low"] > 0] + [e["high"] for e in rows] + list(lines)
    if not values:
        return ""
    lo = math.floor(math.log10(min(values))) - 0.3
    hi = math.ceil(math.log10(max(values))) + 0.3
    left, right, top, bar = 140, 24, 54, 26
    height = top + bar * len(rows) + 60

    def x(v: float) -> float:
        return left + (math.log10(max(v, 10 ** lo)) - lo) / (hi - lo) * (width - left - right)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" width="100%" '
           f'aria-label="Estimated training compute against thresholds, log scale">']
    decades = range(math.ceil(lo), math.floor(hi) + 1)
    every = max(1, math.ceil(len(decades) / 10))  # at most about ten labelled ticks
    for p in decades:
        if (p - decades[0]) % every:
            continue
        out.append(f'<line x1="{x(10**p):.1f}" y1="{top - 8}" x2="{x(10**p):.1f}" y2="{height - 40}" stroke="#e2e2e2"/>'
                   f'<text x="{x(10**p):.1f}" y="{height - 24}" font-size="11" text-anchor="middle">1e{p}</text>')
    for i, e in enumerate(rows):
        y = top + i * bar + bar / 2
        color = COLORS.get(e["method"].split()[-1], "#444")
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="12" text-anchor="end">{escape(e["method"])}</text>'
                   f'<line x1="{x(e["low"]):.1f}" y1="{y:.1f}" x2="{x(e["high"]):.1f}" y2="{y:.1f}" stroke="{color}" '
                   f'stroke-width="8" stroke-linecap="round" opacity="0.55"/>'
                   f'<circle cx="{x(e["flops"]):.1f}" cy="{y:.1f}" r="5" fill="{color}"/>')
    for n, (threshold, vs) in enumerate(sorted(lines.items())):
        status = max((v["status"] for v in vs), key=lambda s: ["clear", "at_risk", "crossed"].index(s)
                     if s in ("clear", "at_risk", "crossed") else -1)
        names = escape(", ".join(v["rule"] for v in vs))
        xv = x(threshold)
        # Labels right of the line, or left of it near the right edge, so none is cut off.
        anchor, dx = ("end", -3) if xv > 0.6 * width else ("start", 3)
        out.append(f'<line x1="{xv:.1f}" y1="{top - 12}" x2="{xv:.1f}" y2="{height - 40}" stroke="{STATUS_COLORS[status]}" '
                   f'stroke-dasharray="5 3" stroke-width="1.5"/>'
                   f'<text x="{xv + dx:.1f}" y="{top - 30 + 10 * (n % 4)}" font-size="10" text-anchor="{anchor}" '
                   f'fill="{STATUS_COLORS[status]}"><title>{names}</title>{escape(_sci(threshold))}</text>')
    out.append(f'<text x="10" y="{height - 6}" font-size="11">FLOPs (log scale); bars: low to high, dot: '
               f'central figure; dashed: thresholds of the rules in force (see the rules table)</text></svg>')
    return "".join(out)


def series_svg(series: list[list[int]], width: int = 760, height: int = 240) -> str:
    """Cumulative training FLOPs against the step, from the ledger's records."""
    if len(series) < 2:
        return ""
    left, right, top, bottom = 80, 20, 14, 40
    max_step = max(s for s, _ in series) or 1
    max_total = max(t for _, t in series) or 1
    points = " ".join(f"{left + s / max_step * (width - left - right):.1f},"
                      f"{height - bottom - t / max_total * (height - top - bottom):.1f}" for s, t in series)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" width="100%" '
            f'aria-label="Cumulative training compute over the run">'
            f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#999"/>'
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>'
            f'<polyline fill="none" stroke="#1f5f99" stroke-width="2" points="{points}"/>'
            f'<text x="{left - 6}" y="{top + 10}" font-size="11" text-anchor="end">{escape(_sci(max_total))}</text>'
            f'<text x="{left - 6}" y="{height - bottom}" font-size="11" text-anchor="end">0</text>'
            f'<text x="{width - right}" y="{height - bottom + 16}" font-size="11" text-anchor="end">step {max_step}</text>'
            f'<text x="{left}" y="{height - 6}" font-size="11">cumulative training FLOPs by step (ledger)</text></svg>')
