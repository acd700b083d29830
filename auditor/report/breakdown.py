"""A counted step's breakdown as table rows: operators largest first, modules in the model's
order with identical repeated blocks folded.
"""
from __future__ import annotations

import re
from typing import Any


def natural_key(name: str) -> list:
    """'layers.2' before 'layers.10': digit runs compared as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _fold_repeats(rows: list[tuple[str, int, int]]) -> list[tuple[str, int, int, int]]:
    """Rows that differ only in a block index and count the same, folded into one:
    ('model.layers.{0..125}', forward, backward, 126). Each keeps its own figures; the count says
    how many there are."""
    groups: dict[tuple, list[tuple[str, int]]] = {}
    for name, fwd, bwd in rows:
        indices = re.findall(r"(?<=\.)\d+(?=\.|$)", name)
        pattern = re.sub(r"(?<=\.)\d+(?=\.|$)", "#", name)
        groups.setdefault((pattern, fwd, bwd, len(indices)), []).append((name, int(indices[-1]) if indices else -1))
    out = []
    for (pattern, fwd, bwd, _), members in groups.items():
        if len(members) == 1:
            out.append((members[0][0], fwd, bwd, 1))
            continue
        idx = sorted(i for _, i in members)
        span = f"{{{idx[0]}..{idx[-1]}}}" if idx == list(range(idx[0], idx[-1] + 1)) else \
            "{" + ",".join(map(str, idx[:6])) + (",..." if len(idx) > 6 else "") + "}"
        head, _, tail = pattern.rpartition("#")
        name = (head + span + tail).replace("#", "*")
        out.append((name, fwd, bwd, len(members)))
    return out


def breakdown_rows(d: dict[str, Any], key: str, limit: int = 25) -> list[dict[str, Any]]:
    """The counted step's breakdown as rows, with shares. Operators: largest first. Modules: in
    the model's order (natural: layers.2 before layers.10), identical repeated blocks folded into
    one row with their count (46 identical rows said once)."""
    counted = next((e for e in d.get("estimates", []) if e.get("breakdown", {}).get(key)), None)
    if counted is None:
        return []
    table = counted["breakdown"][key]
    rows = [(name, int(v.get("forward", 0)), int(v.get("backward", 0))) for name, v in table.items()]
    whole = sum(f + b for _, f, b in rows) or 1
    if key == "by_module":
        folded = sorted(_fold_repeats(rows), key=lambda r: natural_key(r[0]))
    else:
        folded = sorted(((n, f, b, 1) for n, f, b in rows), key=lambda r: -(r[1] + r[2]))
    return [{"name": name or "(root)", "forward": fwd, "backward": bwd, "count": n,
             "share": f"{100 * n * (fwd + bwd) / whole:.1f}%"} for name, fwd, bwd, n in folded[:limit]]


def breakdown_label(d: dict[str, Any]) -> str | None:
    """What the breakdown is of, as the tracker labelled it (a training step); None for a plan's."""
    counted = next((e for e in d.get("estimates", []) if e.get("breakdown", {}).get("by_op")), None)
    of = (counted or {}).get("breakdown", {}).get("of")
    return of if isinstance(of, str) else None
