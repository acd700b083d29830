"""`auditor thresholds`: list the bundled rules, show one, validate a rule file.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from auditor.cli.common import AS_OF_OPTION, fail, main
from auditor.report.formatting import table
from auditor.text import sci


@main.group()
def thresholds() -> None:
    """The compute-threshold rules: list them, show one, validate a rule file."""


@thresholds.command("list")
@AS_OF_OPTION
def thresholds_list(as_of) -> None:
    """Every bundled rule with its threshold, comparison, basis and status, and whether runs are
    judged by it by default (examples, such as the example lab policy, only when named)."""
    from auditor.rules.selection import bundled_rules
    from auditor.rules.verdicts import as_of_day, rule_activity

    day = as_of_day(as_of.date() if as_of else None)

    def status_on(rule, when) -> str:
        inactive, _ = rule_activity(rule, when)
        return f"not in force ({inactive})" if inactive else "in force"

    rows = []
    for rule in bundled_rules():
        d = rule.to_dict()
        threshold = (f"{d['comparison']} {sci(int(d['threshold_flops']))}" if d.get("threshold_flops") is not None
                     else f"{d['comparison']} {d['ratio']} of base")
        rows.append([d["id"], d["jurisdiction"], threshold, d["basis"], status_on(rule, day),
                     "yes" if d["blocking"] else "no",
                     "when named (an example)" if rule.is_example else "by default"])
    click.echo(table(["rule", "jurisdiction", "threshold", "basis", "status", "blocking", "judged"], rows))


@thresholds.command("show")
@click.argument("rule_id")
def thresholds_show(rule_id: str) -> None:
    """One rule (or rule set) by id, as YAML-like JSON with its citation, obligations and deadlines."""
    from auditor.rules.rule_file import RuleError
    from auditor.rules.selection import load_rules

    try:
        chosen = load_rules([rule_id])
    except RuleError as exc:
        fail(str(exc))
    click.echo(json.dumps([r.to_dict() for r in chosen], indent=2, sort_keys=True, default=str))


@thresholds.command("validate")
@click.argument("path", type=click.Path(path_type=Path))
def thresholds_validate(path: Path) -> None:
    """Check a rule file of your own: exit 0 when valid, 2 with the file and field when not."""
    from auditor.rules.rule_file import RuleError, validate_rule_file

    try:
        rules = validate_rule_file(path)
    except RuleError as exc:
        fail(str(exc))
    click.echo(f"{path}: valid, {len(rules)} rule(s): {', '.join(r.id for r in rules)}")
