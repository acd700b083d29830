"""Which rules to judge by: the bundled thresholds/ (every rule but the examples by default), rule
and rule-set ids, users' rule files, confined to a config's repository where asked.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from auditor.files import outside
from auditor.resources import resource_dir
from auditor.rules.rule_file import (
    Rule,
    RuleError,
    validate_rule_file,
)
from auditor.text import printable, short, suggest


def rule_files(folder: str | Path | None = None) -> list[Path]:
    """The *.yaml and *.yml files of a folder (default: the bundled thresholds/), sorted by name."""
    folder = Path(folder) if folder is not None else resource_dir("thresholds")
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def default_rules() -> list[Rule]:
    """The rules a run is judged by when none are named: every bundled rule but the examples
    (thresholds/example-lab-policy.yaml is a template for a lab's own budget, not anyone's rule)."""
    return [r for r in bundled_rules() if not r.is_example]


def bundled_rules() -> list[Rule]:
    """Every rule in the bundled thresholds/ folder, file by file in name order (read once a process:
    a gate over many configs would otherwise re-read them for each)."""
    return list(_bundled())


@functools.lru_cache(maxsize=1)
def _bundled() -> tuple[Rule, ...]:
    rules: list[Rule] = []
    for path in rule_files():
        rules += validate_rule_file(path, known=rules)
    return tuple(rules)


def _is_path(item: str) -> bool:
    return "/" in item or "\\" in item or item.endswith((".yaml", ".yml"))


def _confined(path: Path, roots: list[Path] | None, i: int, item) -> None:
    if roots is not None and outside(path, roots):
        raise RuleError(f"rules[{i}]: got {short(str(item))} ({printable(path.name)} is outside the config's "
                        f"repository, {printable(roots[0])}; allow another folder with --allow-path); expected "
                        f"rule files inside it", field=f"rules[{i}]")


def load_rules(ids_or_paths: Iterable[str | Path] | str | None = None, *,
               base_dir: str | Path | None = None, roots: list[Path] | None = None) -> list[Rule]:
    """Rules to check. None: every bundled rule but the examples (default_rules). Otherwise each item is
    a rule id or a rule-set id from the bundled thresholds/ (selecting that rule, or the whole set), or
    a path (it has a '/' or ends in .yaml/.yml) to a user's rule file or a folder of them; relative
    paths start at ``base_dir`` (default: the working directory) and, with ``roots``, must lie under
    one of them. The same rule selected twice is kept once; two different rules with one id are an
    error."""
    if ids_or_paths is None:
        return default_rules()
    if isinstance(ids_or_paths, (str, Path)):
        ids_or_paths = [ids_or_paths]
    chosen: list[Rule] = []
    bundled: list[Rule] | None = None
    for i, item in enumerate(ids_or_paths):
        if isinstance(item, Path) or (isinstance(item, str) and _is_path(item)):
            path = Path(item) if Path(item).is_absolute() or base_dir is None else Path(base_dir) / item
            _confined(path, roots, i, item)
            files = rule_files(path) if path.is_dir() else [path]
            if not files:
                raise RuleError(f"{path}: no .yaml rule files in this folder", source=str(path))
            for file in files:
                _confined(file, roots, i, item)          # each file too: a link in the folder may lead out
                have = {(r.source, r.id) for r in chosen}
                chosen += [r for r in validate_rule_file(file, known=chosen) if (r.source, r.id) not in have]
            continue
        if not isinstance(item, str):
            raise RuleError(f"rules[{i}]: got {short(item)}; expected a rule id or a rule file path",
                            field=f"rules[{i}]")
        bundled = bundled if bundled is not None else bundled_rules()
        picked = [r for r in bundled if item in (r.id, r.rule_set)]
        if not picked:
            names = sorted({r.id for r in bundled} | {r.rule_set for r in bundled if r.rule_set})
            sets = ", ".join(dict.fromkeys(r.rule_set for r in bundled if r.rule_set))
            raise RuleError(f"rules[{i}]: got {item!r}; expected a rule id, a rule set id ({sets}; "
                            f"'auditor thresholds list' shows every rule) or a path to a rule file"
                            f"{suggest(item, names)}", field=f"rules[{i}]")
        for rule in picked:
            same = next((r for r in chosen if r.id == rule.id), None)
            if same is not None and same.source != rule.source:
                raise RuleError(f"rules[{i}]: got {item!r}; expected rules with unique ids ({rule.id!r} is already "
                                f"defined in {same.source})", field=f"rules[{i}]")
            if same is None:
                chosen.append(rule)
    return chosen
