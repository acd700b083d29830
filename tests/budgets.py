"""A blocking budget rule file for the guard's tests: one rule, basis training, in force."""
from __future__ import annotations

from pathlib import Path


def budget_rule(path: Path, rule_id: str, threshold: int, extra: str = "") -> str:
    """Write the rule to ``path`` (``extra``: more YAML lines, e.g. counts_phases); its path as text."""
    path.write_text(f"id: {rule_id}\ntitle: a budget\njurisdiction: internal\n"
                    "citation: {text: test, url: 'https://example.org/budget'}\n"
                    f"threshold_flops: {threshold}\ncomparison: '>'\nbasis: training\n"
                    f"status: in_force\nblocking: true\n{extra}")
    return str(path)
