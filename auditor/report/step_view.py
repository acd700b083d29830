"""One training step's count (a StepCount), as `auditor count` prints it."""
from __future__ import annotations

import json
from typing import Any

from auditor.counting.result import StepCount
from auditor.report.formatting import percent, table
from auditor.text import sci


def step_text(result: StepCount, *, title: str = "one training step", depth: int = 2) -> str:
    """The count as tables: by phase, by operator, by module to ``depth``; then what it leaves out."""
    total = result.total
    lines = [title, ""]
    lines.append(table(["phase", "FLOPs", "share"], [
        ["forward", f"{result.forward:,}", percent(result.forward, total)],
        ["backward", f"{result.backward:,}", percent(result.backward, total)],
        ["training step", f"{total:,}", "100.0%"],
    ]))
    if result.tokens:
        lines.append(f"\nper token: {result.flops_per_token:,} FLOPs ({sci(result.flops_per_token)}) over "
                     f"{result.tokens:,} tokens")
    if result.hardware_total != total:
        lines.append(f"executed by the hardware (recomputation, dense-masked experts): {result.hardware_total:,}")
    lines.append("\nby operator")
    lines.append(table(["operator", "forward", "backward", "share"], [
        [op, f"{v['forward']:,}", f"{v['backward']:,}", percent(sum(v.values()), total)]
        for op, v in result.by_op().items()]))
    lines.append(f"\nby module (depth {depth})")
    lines.append(table(["module", "forward", "backward", "share"], [
        [mod or "(root)", f"{v['forward']:,}", f"{v['backward']:,}", percent(sum(v.values()), total)]
        for mod, v in result.by_module(depth).items()]))
    lines.append("\nuncovered ops: " + (", ".join(f"{k} x{v}" for k, v in sorted(result.uncovered.items()))
                                       if result.uncovered else "none (the count is complete)"))
    lines.append("assumptions:")
    lines.extend(f"  - {a}" for a in result.assumptions)
    return "\n".join(lines)


def step_json(result: StepCount, **_options: Any) -> str:
    return json.dumps(result.to_dict(), indent=2, sort_keys=True)
