"""Every model under every rule: the verdict on its recorded compute (each rule's own basis),
when the threshold was crossed or foreseen, and the deadlines that follow, with days left.

The verdict itself is ``auditor.rules.evaluate_rule``'s, on a figure made from the registry: the
model's own compute as "the run", and as its lineage the compute that the rule's basis adds or
compares with (see history.py), so that scope, in-force dates, exact comparisons and reasons are
the rules module's, not a second copy. Deadlines are dated here, from the history: a deadline
from ``threshold_met`` runs from the crossing; one from ``threshold_known`` from the earlier of
the crossing and the day a plan made it foreseeable (the plan's high end passing: the rules'
convention that "at risk" starts the clock); either no earlier than the rule's effective date.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from fractions import Fraction
from typing import Any

from auditor.estimate import Figures
from auditor.registry.history import Graph, Triple
from auditor.rules.verdicts import evaluate_rule
from auditor.text import sci

LIVE = ("crossed", "at_risk")


def _figure(low: int, central: int, high: int, lineage: dict[str, Any] | None) -> Figures:
    """What rules.evaluate_rule judges: the model's figure as a run (a sum over its records, of
    whatever methods they were), and its lineage."""
    return Figures.of(low, central, high, None, lineage=lineage)


def end_of(day: date) -> datetime:
    return datetime.combine(day, time.max, tzinfo=timezone.utc)


def _developer(edges) -> str | None:
    said = {e.developer for e in edges}
    return said.pop() if len(said) == 1 else None


def figure_for(graph: Graph, model_id: int, rule, *, foreseen: bool = False) -> tuple[Figures, list[int], str]:
    """(the figure rules.py judges, the models whose runs make the compared compute, a note)."""
    teacher = bool(getattr(rule, "counts_teacher", False))
    parents = graph.parents.get(model_id, [])
    names = [graph.names[e.parent_id] for e in parents]
    own = graph.own(model_id, foreseen)
    if rule.basis == "ratio_to_base":
        mods, bases = graph.modification(model_id)
        mod = graph.sum_of(mods, foreseen)
        if not bases:
            lineage = {"base_model": ", ".join(names), "developer": "same"} if parents else None
            return _figure(*mod, lineage), mods, ""
        known = [b for b in bases if graph.known(b.parent_id)]
        base = sum(graph.cumulative(b.parent_id) for b in known) if known else None
        lineage = {"base_model": ", ".join(graph.names[b.parent_id] for b in bases), "base_compute_flops": base,
                   "developer": "other" if any(b.developer == "other" for b in bases) else None}
        words = (f"basis ratio_to_base: the modification ({sci(mod[1])} FLOP over {len(mods)} model(s)) against "
                 f"the base model's compute ({sci(base) if base is not None else 'unknown'})")
        return _figure(*mod, lineage), mods, words
    if rule.basis == "training":
        lineage = None
        if parents:
            base = sum(graph.cumulative(e.parent_id, teacher) or 0 for e in parents)
            lineage = {"base_model": ", ".join(names), "base_compute_flops": base, "developer": _developer(parents)}
        note = f"basis training: the model's own runs, {sci(own[1])} FLOP, none of its ancestors'" if parents else ""
        return _figure(*own, lineage), [model_id], note
    closure = graph.closure(model_id, teacher)
    inherited = graph.inherited(model_id, teacher)
    whole = graph.sum_of(closure, foreseen)
    if not parents:
        return _figure(*own, None), closure, ""
    if not inherited:                    # only other developers' models above it
        return _figure(*own, {"base_model": ", ".join(names), "developer": "other"}), [model_id], ""
    added: Triple = tuple(w - o for w, o in zip(whole, own))
    if not any(graph.known(e.parent_id, teacher) for e in inherited):
        return _figure(*own, {"base_model": ", ".join(names), "developer": _developer(inherited)}), closure, ""
    lineage = {"base_model": ", ".join(names), "base_compute_flops": added[1], "developer": _developer(inherited)}
    if added[0] != added[2]:             # planned ancestors' range: rules.py adds one figure to each end
        lineage["base_compute_flops"] = added[0]
        return _figure(own[0], own[1] + added[1] - added[0], own[2] + added[2] - added[0], lineage), closure, ""
    return _figure(*own, lineage), closure, ""


def _due(start: datetime, deadline) -> date:
    if deadline.within_days is not None:
        return start.date() + timedelta(days=deadline.within_days)
    return (start + timedelta(hours=deadline.within_hours)).date()


def _dated(rule, status: str, crossed: datetime | None, known: datetime | None, as_of: date) -> list[dict]:
    out = []
    effective = datetime.combine(rule.effective, time(), tzinfo=timezone.utc) if rule.effective else None
    for d in rule.deadlines:
        start = {"threshold_met": crossed, "threshold_known": known}.get(d.from_)
        item = {"what": d.what, "from": d.from_, "due": None, "days_left": None}
        item.update({"within_days": d.within_days} if d.within_days is not None else {"within_hours": d.within_hours})
        period = f"{d.within_days} days" if d.within_days is not None else f"{d.within_hours} hours"
        if start is not None and status != "not_in_force":
            late = effective is not None and start < effective
            start = max(start, effective) if effective else start
            due = _due(start, d)
            item.update(due=due.isoformat(), days_left=(due - as_of).days)
            since = "the rule took effect" if late else ("the threshold was met" if d.from_ == "threshold_met" or
                                                          start == crossed else "a plan made it foreseeable")
            item["text"] = f"{d.what} by {due} ({period} from {start.date()}, when {since})"
        else:
            item["text"] = f"{d.what} within {period} of {d.from_.replace('_', ' ')}"
        out.append(item)
    return out


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if moment else None


def judge(graph: Graph, model_id: int, rule, as_of: date) -> dict[str, Any]:
    """One rule's verdict on one model's history (the ``status`` JSON's verdict)."""
    figure, models, note = figure_for(graph, model_id, rule)
    verdict = evaluate_rule(figure, rule, as_of).to_dict()
    ahead, _, _ = figure_for(graph, model_id, rule, foreseen=True)
    foreseen = evaluate_rule(ahead, rule, as_of).to_dict()
    threshold = Fraction(verdict["threshold_exact"])
    crossed = foreseen_at = None
    interval = None
    scoped = verdict["inactive"] != "out_of_scope"
    compared = verdict["basis_flops"]["central"]
    if scoped and verdict["would_be"] == "crossed":
        found = graph.first_passing(models, threshold, rule.comparison)
        if found is not None:
            interval, crossed = found, found[1]
    if scoped and foreseen["would_be"] in LIVE:       # foreseen: a plan showed it before the compute did
        found = graph.first_passing(models, threshold, rule.comparison, foreseen=True)
        foreseen_at = found[1] if found is not None and (crossed is None or found[1] < crossed) else None
    known = min((t for t in (crossed, foreseen_at) if t is not None), default=None)
    deadlines = _dated(rule, verdict["status"], crossed, known, as_of)
    due = sorted(d["due"] for d in deadlines if d["due"])
    cumulative = graph.cumulative(model_id) or 0
    if not note and rule.basis == "cumulative" and compared != cumulative:
        note = (f"basis cumulative as this rule counts it: {sci(compared)} FLOP, not the registry's cumulative "
                f"{sci(cumulative)}" + (" (a distillation teacher counted)" if getattr(rule, "counts_teacher", False)
                                        else ""))
    return {
        "rule": verdict["rule"], "title": verdict["title"], "status": verdict["status"],
        "crossed_at": iso(crossed), "crossed_after": iso(interval[0]) if interval else None,
        "notify_by": due[0] if due else None, "days_left": (date.fromisoformat(due[0]) - as_of).days if due else None,
        "foreseen_status": foreseen["status"], "foreseen_at": iso(foreseen_at),
        "foreseen_flops": foreseen["basis_flops"]["high"],
        "basis": verdict["basis"], "basis_flops": compared, "basis_note": note or None,
        "threshold_flops": verdict["threshold_flops"], "threshold_exact": verdict["threshold_exact"],
        "comparison": verdict["comparison"], "blocking": verdict["blocking"], "inactive": verdict["inactive"],
        "reason": verdict["reason"], "assumptions": verdict["assumptions"], "deadlines": deadlines,
        "citation": verdict["citation"],
    }


def status(graph: Graph, rules, as_of: date, models: list[str] | None = None) -> dict[str, Any]:
    """The ``auditor registry status --format json`` document."""
    out = []
    for model_id, name in sorted(graph.names.items(), key=lambda item: item[1]):
        if models and name not in models:
            continue
        own, cumulative = graph.own(model_id), graph.cumulative(model_id)
        out.append({"model": name, "cumulative_flops": cumulative or 0, "compute_known": cumulative is not None,
                    "own_flops": own[1], "planned_flops": graph.sum_of(graph.closure(model_id), True)[2] -
                    graph.sum_of(graph.closure(model_id))[2],
                    "verdicts": [judge(graph, model_id, rule, as_of) for rule in rules]})
    return {"as_of": as_of.isoformat(), "models": out}


def fails(document: dict[str, Any]) -> bool:
    """A blocking rule crossed or at risk for any model: the command exits 1, as a gate does."""
    return any(v["blocking"] and v["status"] in LIVE for m in document["models"] for v in m["verdicts"])
