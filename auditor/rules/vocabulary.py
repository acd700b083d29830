"""The values a rule file's enumerated fields take, each with its words where a view says them:
one table per value (the types are Literals; the tuples fields are checked against come from them,
and the words are checked to cover exactly the same values)."""
from __future__ import annotations

from typing import Literal, get_args

Comparison = Literal[">", ">="]
Basis = Literal["training", "cumulative", "ratio_to_base"]
RuleStatus = Literal["in_force", "proposed", "revoked", "vetoed"]
DeadlineStart = Literal["threshold_known", "threshold_met", "training_start", "deployment", "incident_discovered"]
# One table per enumerated value, with its words where a view says them: the values a rule file's
# fields are checked against come from the types, the words from the same place (checked to match).
COMPARISON_WORDS: dict[Comparison, str] = {">": "strict", ">=": "inclusive"}
DEADLINE_START_WORDS: dict[DeadlineStart, str] = {
    "threshold_known": "knowing the threshold will be met", "threshold_met": "the threshold being met",
    "training_start": "the start of training", "deployment": "deployment",
    "incident_discovered": "discovering the incident"}
COMPARISONS: tuple[Comparison, ...] = get_args(Comparison)
BASES: tuple[Basis, ...] = get_args(Basis)
STATUSES: tuple[RuleStatus, ...] = get_args(RuleStatus)
DEADLINE_STARTS: tuple[DeadlineStart, ...] = get_args(DeadlineStart)
if tuple(COMPARISON_WORDS) != COMPARISONS or tuple(DEADLINE_START_WORDS) != DEADLINE_STARTS:
    raise RuntimeError("rules.vocabulary: a value without its words, or words without their value")
