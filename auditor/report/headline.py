"""What a reviewer reads first, in every view: the verdict from the blocking rules, the first
deadline, what follows, and the rules table with the blocking ones first.
"""
from __future__ import annotations

from typing import Any

from auditor.report.formatting import table
from auditor.text import sci


def next_deadline(verdict: dict[str, Any]) -> str:
    due = sorted((d["due"], d["what"]) for d in verdict.get("deadlines", []) if d.get("due"))
    return f"{due[0][1]} by {due[0][0]}" if due else "-"


def verdict_table(verdicts: list[dict[str, Any]], *, deadlines: bool) -> str:
    """The plain-text rules table of preflight and dossier text output."""
    headers = ["rule", "status", "threshold", "margin", "blocking"] + (["next deadline"] if deadlines else [])
    return table(headers, [
        [v["rule"], v["status"].replace("_", " "), f"{v['comparison']} {sci(v['threshold_flops'])}",
         f"{v['margin']:.2f}", "yes" if v["blocking"] else "no"] + ([next_deadline(v)] if deadlines else [])
        for v in verdicts])


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 rule', '2 rules', '1 config', '3 configs'."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def headline(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    """What a reviewer reads first, for any view: the blocking rules crossed, then those at risk,
    with the first deadline and what follows; the non-blocking ones after, as an aside.

    ``status`` (the banner's colour and the gate's word) comes from the blocking rules alone: a
    run that crosses only an indicative line is clear of what stops it."""
    live = [v for v in verdicts if v["status"] != "not_in_force"]
    blocking = [v for v in live if v["blocking"]]
    crossed = [v for v in blocking if v["status"] == "crossed"]
    at_risk = [v for v in blocking if v["status"] == "at_risk"]
    acting = crossed + at_risk
    parts = []
    if crossed:
        parts.append(f"Crosses {', '.join(v['rule'] for v in crossed)}")
    if at_risk:
        parts.append(f"{'at' if crossed else 'At'} risk of crossing {', '.join(v['rule'] for v in at_risk)}")
    if acting:
        status, text = ("crossed" if crossed else "at_risk"), "; ".join(parts) + "."
    elif blocking:
        status, text = "clear", f"Clear of every blocking rule in force ({plural(len(blocking), 'rule')})."
    elif live:
        status, text = "clear", "No blocking rule in force covers this run."
    else:
        status, text = "not_in_force", "No rule checked is in force for this run."
    due = sorted((d["due"], d["what"], v["rule"]) for v in acting for d in v.get("deadlines", []) if d.get("due"))
    others = [v for v in live if not v["blocking"] and v["status"] in ("crossed", "at_risk")]
    return {
        "status": status, "text": text, "blocking": acting,
        "deadline": f"{due[0][1]} by {due[0][0]} ({due[0][2]})" if due else None,
        "follows": list(dict.fromkeys(o for v in acting for o in v.get("obligations", []))),
        "also": (f"Not blocking: {', '.join(v['rule'] + ' ' + v['status'].replace('_', ' ') for v in others)}."
                 if others else None),
        "passes": not acting,
    }


def dossier_summary(d: dict[str, Any]) -> dict[str, Any]:
    """The headline of a dossier (see headline); a tracked run that was stopped, or ended by an
    error, says so first (the verdicts judge the figures it reached)."""
    from auditor.report.run_view import ending_words

    summary = headline(d.get("verdicts", []))
    ended = ending_words(d)
    if ended:
        summary["text"] = f"{ended} {summary['text']}"
    summary["ended"] = ended
    return summary


def ordered_verdicts(verdicts: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(blocking rules in force, the rest): a table shows the first, and folds the second."""
    first = [v for v in verdicts if v["blocking"] and v["status"] != "not_in_force"]
    return first, [v for v in verdicts if v not in first]


MARGIN_NOTE = ("margin: the high end of the figure a rule compares, over its threshold (1.00 is at the line; a "
               "rule on cumulative or base-relative compute compares other figures than the run's own)")


def margin(value: float) -> str:
    """High end over threshold: 2 decimals near 1, scientific far below (a small run's 2e-14)."""
    return f"{value:.2f}" if value >= 0.01 else f"{value:.1e}"


def headline_lines(summary: dict[str, Any]) -> list[str]:
    """The headline as text lines: the verdict, the first deadline, what follows, the aside."""
    lines = [("FAIL: " if not summary["passes"] else "PASS: ") + summary["text"]]
    if summary["deadline"]:
        lines.append(f"first deadline: {summary['deadline']}")
    lines.extend(f"follows: {o}" for o in summary["follows"][:5])
    if summary["also"]:
        lines.append(summary["also"])
    return lines
