"""Verdicts: a run's compute range checked against rules (docs/rules.md).

For each rule: is it in force on the as-of date, and does it cover this run (modality, developer)?
Which figure is compared (the run; the base model's compute plus the run; the run against a share of
the base model's compute)? Then, with the rule's exact comparison: ``crossed`` when even the low end
passes, ``at_risk`` when the high end does, ``clear`` when the high end does not. Ints and Fractions
throughout: 10^25 / 3 is compared exactly.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from fractions import Fraction
from typing import Any, Literal

from auditor.estimate import Figures
from auditor.rules.rule_file import Rule
from auditor.rules.selection import load_rules
from auditor.rules.vocabulary import COMPARISON_WORDS, DEADLINE_START_WORDS, Basis, Comparison
from auditor.text import join_words, sci

Status = Literal["crossed", "at_risk", "clear", "not_in_force"]
Inactive = Literal["revoked", "rescinded", "vetoed", "proposed", "not_yet_effective", "out_of_scope"]

GATE_FAILING = ("crossed", "at_risk")  # on a blocking rule, these fail a gate (exit 1)


def fails_gate(verdict: Verdict | dict[str, Any]) -> bool:
    """The one gate predicate, for a Verdict or its dict (the JSON contract): a blocking rule
    crossed or at risk. The gate, `report` and `preflight` exit 1 on it."""
    if isinstance(verdict, Verdict):
        verdict = {"blocking": verdict.blocking, "status": verdict.status}
    return bool(verdict["blocking"]) and verdict["status"] in GATE_FAILING


DEVELOPER_WORDS = {"same": "the base model's own developer", "other": "a developer other than the base model's"}


@dataclass
class Verdict:
    """One rule's answer for one run. ``to_dict()`` is the JSON contract (docs/rules.md)."""
    rule: str
    title: str
    jurisdiction: str
    status: Status
    threshold_flops: int             # the int a whole FLOP count is compared with, same answer as the exact one
    threshold_exact: str             # the exact threshold: '10000000000000000000000000' or '38000...000/3'
    comparison: Comparison           # '>' strict or '>=' inclusive
    margin: float                    # high end of the compared figure / threshold
    basis: Basis
    basis_flops: dict[str, int]      # the figure compared: low, central, high
    compared: str                    # which end decided: 'low' (crossed) or 'high'
    reason: str                      # one sentence: which end, against what, why
    citation: dict[str, str]
    obligations: list[str]
    deadlines: list[dict[str, Any]]  # each: what, within_days or within_hours, from, due (YYYY-MM-DD or None), text
    unverified: list[str]            # conditions compute alone cannot decide
    blocking: bool
    would_be: Status                 # the status on these figures were the rule in force and in scope
    inactive: Inactive | None = None  # why not in force
    assumptions: list[str] = field(default_factory=list)
    rule_set: str | None = None
    as_of: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _counted_phases(rule: Rule, run: Figures, assumptions: list[str]) -> tuple[int, str]:
    """What the phases a rule counts add to the run's train figure (a tracked run's rollout, say,
    or minus its training where a rule does not count it), and the words for the sum."""
    if not run.phases:
        return 0, ""
    phases, counted = run.by_phase, rule.counts_phases
    added = sum(v for p, v in phases.items() if p in counted and p != "train")
    if "train" not in counted:
        added -= phases.get("train", 0)
    left = [f"{p} {sci(v)}" for p, v in sorted(phases.items()) if v and p not in counted]
    if left:
        assumptions.append(f"not counted by this rule: {', '.join(left)} FLOP (it counts {join_words(counted)})")
    shown = [p for p in counted if phases.get(p)]
    return added, f" ({' + '.join(shown)})" if shown else " (no phase it counts has FLOPs)"


def _ratio_words(ratio: Fraction) -> str:
    return {Fraction(1, 3): "one third", Fraction(1, 2): "half", Fraction(1, 4): "a quarter"}.get(
        ratio, f"{ratio.numerator}/{ratio.denominator}")


def rule_activity(rule: Rule, as_of: date) -> tuple[str | None, str]:
    """(why not in force, the clause saying so) or (None, '')."""
    if rule.status == "vetoed":
        return "vetoed", f"vetoed on {rule.vetoed}, so it never took effect"
    if rule.status == "proposed":
        when = f" on {rule.proposed}" if rule.proposed else ""
        return "proposed", f"proposed{when} and not made final, so not in force on {as_of}"
    if rule.effective and as_of < rule.effective:
        return "not_yet_effective", f"in force only from {rule.effective}, so not yet on {as_of}"
    if rule.ended and as_of >= rule.ended[1]:
        since = f" (in force from {rule.effective})" if rule.effective else ""
        return rule.ended[0], f"{rule.ended[0]} on {rule.ended[1]}{since}, so not in force on {as_of}"
    return None, ""


def _scope(rule: Rule, run: Figures, assumptions: list[str]) -> str | None:
    """Why the rule does not cover this run, or None (noting conservative assumptions on the way)."""
    s = rule.scope
    if s is None:
        return None
    if s.modality and run.modality not in s.modality:
        return f"out of scope: it covers {join_words(s.modality, 'or')} models and this run's data is {run.modality}"
    if s.modification is False and run.modification:
        return "out of scope: it covers original training runs and this run modifies a base model"
    if (s.modification or s.developer or s.base_above_flops) and not run.modification:
        return "out of scope: it covers modifications of a base model and this run has no lineage"
    if s.developer:
        if run.developer is None:
            assumptions.append(f"who made the modification is not stated: taken as {DEVELOPER_WORDS[s.developer]}, "
                               f"so that this rule applies (conservative)")
        elif run.developer != s.developer:
            return (f"out of scope: it covers modifications by {DEVELOPER_WORDS[s.developer]} and this run's "
                    f"developer is {DEVELOPER_WORDS[run.developer]} ({run.developer})")
    if s.base_above_flops:
        if run.base_flops is None:
            assumptions.append(f"the base model's compute is unknown: taken as over {sci(s.base_above_flops)}, "
                               f"so that this rule applies (conservative)")
        elif not run.base_flops > s.base_above_flops:
            return (f"out of scope: it covers modifications of base models trained with more than "
                    f"{sci(s.base_above_flops)} FLOP and this base model's is {sci(run.base_flops)}")
    return None


def _figures(rule: Rule, run: Figures, assumptions: list[str]) -> tuple[tuple[int, int, int], Fraction, str, str]:
    """((low, central, high) compared, the exact threshold, what the figure is, where the threshold comes from)."""
    threshold, origin = Fraction(rule.threshold_flops or 0), ""
    added, phased = _counted_phases(rule, run, assumptions)
    if rule.basis == "training":
        figure = "the run's compute"
    elif rule.basis == "cumulative":
        if not run.modification:
            figure = "the run's compute (no base model)"
        elif run.developer == "other":
            figure = "the run's compute alone (the base model is another developer's, so its compute is not added)"
        elif run.base_flops is None:
            figure = "the run's compute alone (the base model's compute is unknown, so this is a lower bound)"
        else:
            added += run.base_flops
            figure = f"the base model's {sci(run.base_flops)} FLOP plus the run's compute"
            if run.developer is None:
                assumptions.append("who made the modification is not stated: the base model's compute is added "
                                   "(conservative)")
    else:
        figure, share = "the modification's compute", _ratio_words(rule.ratio)
        if run.base_flops is not None:
            threshold, origin = rule.ratio * run.base_flops, f"{share} of the base model's {sci(run.base_flops)}"
        else:
            threshold = rule.ratio * rule.fallback_base_flops
            origin = f"{share} of the fallback {sci(rule.fallback_base_flops)}, the base model's compute being unknown"
            assumptions.append(f"the base model's compute is unknown: the threshold is {share} of "
                               f"{sci(rule.fallback_base_flops)} FLOP, as the rule says")
    return (run.low + added, run.central + added, run.high + added), threshold, figure + phased, origin


def passes(flops: int, threshold: int | Fraction, comparison: str) -> bool:
    """Whether ``flops`` is past ``threshold`` by the rule's own comparison ('>' or '>=')."""
    return flops > threshold if comparison == ">" else flops >= threshold


def _int_threshold(threshold: Fraction, comparison: str) -> int:
    """The int T with (n cmp T) == (n cmp threshold) for every int n: floor for '>', ceiling for '>='."""
    top, bottom = threshold.numerator, threshold.denominator
    return top // bottom if comparison == ">" else -(-top // bottom)


def _deadlines(rule: Rule, status: str, as_of: date) -> list[dict[str, Any]]:
    """The rule's deadlines; those that run from knowing the threshold will be met are dated from as_of
    when the run is crossed or at risk (planned compute: the preflight is when it becomes known)."""
    out = []
    for d in rule.deadlines:
        days, hours = d.within_days, d.within_hours
        period = f"{days} days" if days is not None else f"{hours} hours"
        item: dict[str, Any] = {"what": d.what, "from": d.from_, "due": None}
        item.update({"within_days": days} if days is not None else {"within_hours": hours})
        if d.from_ == "threshold_known" and status in ("crossed", "at_risk"):
            due = as_of + timedelta(days=days) if days is not None else \
                (datetime.combine(as_of, time()) + timedelta(hours=hours)).date()
            item["due"] = due.isoformat()
            known = "will" if status == "crossed" else "may"
            item["text"] = (f"{d.what} by {due} ({period} from {as_of}, when the planned compute showed the threshold "
                            f"{known} be met)")
        else:
            item["text"] = f"{d.what} within {period} of {DEADLINE_START_WORDS[d.from_]}"
        out.append(item)
    return out


def _reason(status: str, figures: tuple[int, int, int], threshold: Fraction, rule: Rule, figure: str,
            origin: str) -> str:
    low, _, high = figures
    against = f"{rule.comparison} {sci(threshold)} ({origin + ', ' if origin else ''}{COMPARISON_WORDS[rule.comparison]})"
    if status == "crossed":
        return f"Even the low end of {figure}, {sci(low)} FLOP, is {against}, so the threshold is crossed."
    if status == "at_risk":
        return (f"The high end of {figure}, {sci(high)} FLOP, is {against} but the low end, {sci(low)}, is not, "
                f"so the range reaches the threshold: at risk.")
    return f"The high end of {figure}, {sci(high)} FLOP, is not {against}, so the run is clear."


def evaluate_rule(run: Figures, rule: Rule, as_of: date | None = None) -> Verdict:
    """One rule's verdict on a run's Figures (``preflight.figures()``, ``estimate.figures()``)."""
    if not isinstance(run, Figures):
        raise TypeError(f"rules judge auditor.rules.Figures (preflight.figures(), estimate.figures()), "
                        f"got {type(run).__name__}")
    as_of, assumptions = as_of_day(as_of), []
    inactive, why = rule_activity(rule, as_of)
    outside = _scope(rule, run, assumptions)
    figures, threshold, figure, origin = _figures(rule, run, assumptions)
    low, _, high = figures
    would_be = ("crossed" if passes(low, threshold, rule.comparison) else
                "at_risk" if passes(high, threshold, rule.comparison) else "clear")
    reason = _reason(would_be, figures, threshold, rule, figure, origin)
    if outside:                      # the figures say nothing about a rule that does not cover the run
        assumptions.clear()
        reason = f"Not in force: {why}; it is also {outside}." if inactive else f"{outside[0].upper()}{outside[1:]}."
        inactive = inactive or "out_of_scope"
    elif inactive:
        reason = f"Not in force: {why}; on these figures it would be {would_be} ({reason[0].lower()}{reason[1:-1]})."
    status = "not_in_force" if inactive else would_be
    return Verdict(
        rule=rule.id, title=rule.title, jurisdiction=rule.jurisdiction, status=status,
        threshold_flops=_int_threshold(threshold, rule.comparison),
        threshold_exact=str(threshold.numerator) if threshold.denominator == 1 else
        f"{threshold.numerator}/{threshold.denominator}",
        comparison=rule.comparison, margin=float(Fraction(high) / threshold), basis=rule.basis,
        basis_flops=dict(zip(("low", "central", "high"), figures)),
        compared="low" if would_be == "crossed" else "high", reason=reason,
        citation={"text": rule.citation.text, "url": rule.citation.url}, obligations=list(rule.obligations),
        deadlines=_deadlines(rule, status, as_of), unverified=list(rule.unverified), blocking=rule.blocking,
        would_be=would_be, inactive=inactive, assumptions=assumptions, rule_set=rule.rule_set, as_of=as_of.isoformat())


def as_of_day(as_of: date | datetime | str | None) -> date:
    if as_of is None:
        return date.today()
    if isinstance(as_of, datetime):
        return as_of.date()
    if isinstance(as_of, str):
        return date.fromisoformat(as_of)
    return as_of


def evaluate(run: Figures, rules: list[Rule] | None = None, as_of: date | datetime | str | None = None) -> list[Verdict]:
    """A verdict for each rule, in order. ``rules``: None for every bundled rule. ``as_of``: the date the rules
    are read at (default: today); deadlines that run from knowing the threshold will be met start there."""
    rules = load_rules(None) if rules is None else rules
    return [evaluate_rule(run, rule, as_of) for rule in rules]


Limit = tuple[str, int, str, tuple[str, ...]]    # (rule id, threshold, comparison, the phases it counts)


def blocking_limits(rules: list[Rule], as_of: date | datetime | str | None = None) -> list[Limit]:
    """The blocking rules in force as of ``as_of`` that a tracked run (no lineage, no modality)
    meets: each at one whole-number threshold whatever its FLOPs, so the tracker's guard reads
    them once at start (evaluating the rules before every call cost ~0.25 ms a step)."""
    counted = {r.id: tuple(r.counts_phases) for r in rules}
    return [(v.rule, v.threshold_flops, v.comparison, counted[v.rule])
            for v in evaluate(Figures(0, 0, 0, "counted"), rules, as_of) if v.blocking and v.status != "not_in_force"]
