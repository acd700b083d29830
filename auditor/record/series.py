"""A tracked dossier's cumulative series: the ledger's (step, total) points, downsampled to a bound.

The dossier writer and ``auditor verify`` both call ``downsample`` on the ledger's records, so that
verify recomputes the very points the writer chose and any changed point is caught. What is kept:

- every point when the ledger has at most ``LIMIT`` records (a short run's series is its ledger);
- otherwise the first and last records, both records around every resume cut (the kept record at
  the checkpoint and the ``resume`` record after it), both records around every rule line the
  cumulative total crosses (the last before and the first past it, by the rule's own ``>`` or
  ``>=``), and evenly spaced records (by index) up to ``LIMIT`` points in all.

Every point is a real record's (step, total), never an interpolation. The bound is
``max(LIMIT, exact points)``: the exact points (2 per line crossed, 2 per resume, the two ends) are
always kept, and in practice number a few dozen. Standard library only (verify runs without torch).
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

LIMIT = 1000  # points in a long run's series: ~60 KB of dossier and a polyline a browser draws at once


def lines_of(verdicts: object) -> list[tuple[int, str]]:
    """The rule lines a series is exact at: each verdict's (threshold_flops, comparison), as the dossier's
    verdicts give them. Malformed entries (a tampered dossier) are skipped: the seal and the verdict checks
    catch those, and the series check must not fail on them first."""
    out = set()
    for v in verdicts if isinstance(verdicts, list) else ():
        if not isinstance(v, dict):
            continue
        threshold, comparison = v.get("threshold_flops"), v.get("comparison")
        if type(threshold) is int and threshold > 0 and comparison in (">", ">="):
            out.add((threshold, comparison))
    return sorted(out)


def first_past(totals: Sequence[int], threshold: int, comparison: str) -> int:
    """The index of the first total past the line (len(totals) if none). Totals never decrease along a
    ledger (total = previous total + flops >= 0; a resume carries its cut's total), so a bisection."""
    return (bisect.bisect_right if comparison == ">" else bisect.bisect_left)(totals, threshold)


def downsample(points: Sequence[Sequence[int]], *, lines: Iterable[tuple[int, str]] = (),
               cuts: Iterable[int] = (), limit: int = LIMIT) -> list[list[int]]:
    """The series a dossier carries for these ledger ``points`` ([step, total] per record, in order):
    ``lines`` the (threshold, comparison) pairs to be exact at, ``cuts`` the indices of resume records."""
    n = len(points)
    if n <= limit:
        return [list(p) for p in points]
    keep = {0, n - 1}
    for c in cuts:
        if 0 <= c < n:
            keep.update((max(c - 1, 0), c))
    totals = [p[1] for p in points]
    for threshold, comparison in lines:
        i = first_past(totals, threshold, comparison)
        if i < n:
            keep.update((max(i - 1, 0), i))
    spare = limit - len(keep)
    # Evenly spaced by index: records are about evenly spaced in steps (every N steps or T seconds),
    # so this is a uniform sampling of the run. Integer arithmetic: the writer and verify agree exactly.
    keep.update(k * (n - 1) // (spare + 1) for k in range(1, spare + 1))
    return [list(points[i]) for i in sorted(keep)]


def of_records(records: Sequence[dict], verdicts: object) -> list[list[int]]:
    """The dossier's series for these ledger records, exact at the lines of these verdicts (dicts)."""
    return downsample([(r["step"], r["total"]) for r in records], lines=lines_of(verdicts),
                      cuts=[i for i, r in enumerate(records) if r["kind"] == "resume"])


def mismatch(points: object, records: Sequence[Sequence[int]], cuts: Iterable[int], verdicts: object) -> str | None:
    """Where a dossier's series differs from its ledger's ``records`` ([step, total] each; ``cuts``: the
    resume records' indices), for verify; None where it does not, or the dossier has none. It must be the
    points ``downsample`` keeps at the lines of the dossier's verdicts or, for a dossier written before
    series were downsampled, every record's."""
    if points is None:
        return None
    expected = downsample(records, lines=lines_of(verdicts), cuts=[c for c in cuts if c < len(records)])
    if points == expected or points == [list(p) for p in records]:
        return None
    if not isinstance(points, list):
        return "(not a list of points)"
    at = next((i for i, (a, b) in enumerate(zip(points, expected)) if a != b), min(len(points), len(expected)))
    return f"at point {at}"
