"""Inline SVG charts for the HTML dossier: no script, no network, printable.

Every label passes through html.escape; numbers are written by text.sci, to two digits. Two charts: the
estimates' ranges against the thresholds on a log scale, and cumulative compute over a
tracked run's steps.
"""
from __future__ import annotations

import math
from html import escape
from typing import Any

from auditor.text import sci

COLORS = {"counted": "#1f5f99", "analytic": "#6a8f2a", "hardware": "#a0522d"}
STATUS_COLORS = {"crossed": "#b3261e", "at_risk": "#c77700", "clear": "#2e7d32", "not_in_force": "#888888"}


CHAR_W, LANE_H, LABEL_GAP = 6.2, 13, 8    # a 10 px label's width per character (generous), a lane's height


def label_lanes(spans: list[tuple[float, float]]) -> list[int]:
    """A lane for each label (x0, x1), in order, so that labels in one lane never overlap:
    each goes to the first lane whose last label ends before it starts."""
    ends: list[float] = []
    lanes = []
    for x0, x1 in spans:
        lane = next((i for i, end in enumerate(ends) if end + LABEL_GAP <= x0), len(ends))
        if lane == len(ends):
            ends.append(x1)
        else:
            ends[lane] = x1
        lanes.append(lane)
    return lanes


def ranges_svg(estimates: list[dict[str, Any]], verdicts: list[dict[str, Any]], width: int = 760) -> str:
    """Each estimate's low-high bar with its central figure, and each rule in force as a line
    labelled with its rules' names and its value; labels that would collide go to another lane."""
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
    left, right, bar = 140, 24, 26

    def x(v: float) -> float:
        return left + (math.log10(max(v, 10 ** lo)) - lo) / (hi - lo) * (width - left - right)

    labels = []                               # (threshold, rules, text, anchor, x of the text, span)
    for threshold, vs in sorted(lines.items()):
        text = f"{', '.join(v['rule'] for v in vs)} {sci(threshold, 2)}"
        xv, w = x(threshold), len(text) * CHAR_W
        # right of the line where it fits, else left of it: never cut off at either edge
        if xv + 3 + w <= width - 4:
            anchor, tx, span = "start", xv + 3, (xv + 3, xv + 3 + w)
        else:
            anchor, tx, span = "end", xv - 3, (xv - 3 - w, xv - 3)
        labels.append((threshold, vs, text, anchor, tx, span))
    order = sorted(range(len(labels)), key=lambda i: labels[i][5][0])
    lane_of = dict(zip(order, label_lanes([labels[i][5] for i in order])))
    lanes = max(lane_of.values(), default=-1) + 1
    top = 18 + LANE_H * lanes + 8
    height = top + bar * len(rows) + 60

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
    for i, (threshold, vs, text, anchor, tx, _) in enumerate(labels):
        status = max((v["status"] for v in vs), key=lambda s: ["clear", "at_risk", "crossed"].index(s)
                     if s in ("clear", "at_risk", "crossed") else -1)
        xv, ty = x(threshold), 18 + LANE_H * lane_of[i]
        out.append(f'<line x1="{xv:.1f}" y1="{ty + 3}" x2="{xv:.1f}" y2="{height - 40}" stroke="{STATUS_COLORS[status]}" '
                   f'stroke-dasharray="5 3" stroke-width="1.5"/>'
                   f'<text class="threshold" x="{tx:.1f}" y="{ty}" font-size="10" text-anchor="{anchor}" '
                   f'fill="{STATUS_COLORS[status]}">{escape(text)}</text>')
    out.append(f'<text x="10" y="{height - 6}" font-size="11">FLOPs (log scale); bars: low to high, dot: '
               f'central figure; dashed: thresholds of the rules in force, named</text></svg>')
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
            f'<text x="{left - 6}" y="{top + 10}" font-size="11" text-anchor="end">{escape(sci(max_total, 2))}</text>'
            f'<text x="{left - 6}" y="{height - bottom}" font-size="11" text-anchor="end">0</text>'
            f'<text x="{width - right}" y="{height - bottom + 16}" font-size="11" text-anchor="end">step {max_step}</text>'
            f'<text x="{left}" y="{height - 6}" font-size="11">cumulative training FLOPs by step (ledger)</text></svg>')
