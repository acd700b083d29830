"""The CI gate: preflight every config under the given paths, judge each against the rules.

Exit code: 2 when any config is bad input (the others are still checked and reported), else 1
when a blocking rule is crossed or at risk for any config, else 0.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.rules.verdicts import GATE_FAILING, fails_gate
from auditor.text import printable, sci


@dataclass
class GateResult:
    path: Path
    preflight: dict[str, Any] | None = None   # the preflight's dict, verdicts filled in
    error: str | None = None                  # one line, for bad input
    untrusted: str | None = None              # one line: no method could run without the config's code
    unauthorized: str | None = None           # one line: above the gate's line, and no valid authorization

    @property
    def verdicts(self) -> list[dict[str, Any]]:
        return self.preflight["verdicts"] if self.preflight else []

    @property
    def failing(self) -> list[dict[str, Any]]:
        return [v for v in self.verdicts if fails_gate(v)]

    @property
    def fails(self) -> bool:
        """Fails the gate (exit 1): a blocking rule crossed or at risk, or a compute nobody could
        establish without running untrusted code (never silently passed)."""
        return bool(self.failing) or self.untrusted is not None or self.unauthorized is not None


@dataclass
class Gate:
    results: list[GateResult] = field(default_factory=list)
    output_error: str | None = None           # a report file (--junit) that could not be written

    @property
    def exit_code(self) -> int:
        if self.output_error or any(r.error for r in self.results):
            return 2
        return 1 if any(r.fails for r in self.results) else 0


def collect_configs(paths: list[Path]) -> tuple[list[Path], list[GateResult]]:
    """Config files named, and every *.yaml / *.yml under folders named (hidden folders such as
    .github left out), in a stable order."""
    found, missing = [], []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                                and not any(part.startswith(".") for part in p.relative_to(path).parts)))
        elif path.exists():
            found.append(path)
        else:
            missing.append(GateResult(path, error=f"{printable(path)}: no such file or folder"))
    return list(dict.fromkeys(found)), missing


def field_line(path: Path) -> int:
    """The line of the field that drives the compute (data.tokens, data.steps, else data, else
    model), from the parsed YAML so that inline mappings work too; 1 when not found."""
    import yaml

    from auditor.files import read_regular
    from auditor.inputs.yaml_reader import MAX_FILE_BYTES

    try:
        root = yaml.compose(read_regular(path, MAX_FILE_BYTES).decode("utf-8", errors="replace"))
    except (OSError, ValueError, yaml.YAMLError, RecursionError):
        return 1
    if not isinstance(root, yaml.MappingNode):
        return 1
    top = {k.value: (k, v) for k, v in root.value if isinstance(k, yaml.ScalarNode)}
    if "data" in top and isinstance(top["data"][1], yaml.MappingNode):
        inner = {k.value: k for k, _ in top["data"][1].value if isinstance(k, yaml.ScalarNode)}
        for name in ("tokens", "steps"):
            if name in inner:
                return inner[name].start_mark.line + 1
    for name in ("data", "model"):
        if name in top:
            return top[name][0].start_mark.line + 1
    return 1


def _escape_data(text: str) -> str:
    """GitHub's own escapes for %, CR and LF; any other control or bidi character as its escape."""
    return printable(text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(gate: Gate) -> list[str]:
    """GitHub Actions workflow commands: ::error / ::warning file=...,line=...,title=...::message."""
    out = []
    for r in gate.results:
        if r.error or r.untrusted:
            title = "auditor: bad config" if r.error else "auditor: needs a trusted run"
            out.append(f"::error file={_escape_property(printable(r.path))},line=1,"
                       f"title={_escape_property(title)}::{_escape_data(r.error or r.untrusted)}")
            continue
        line = field_line(r.path)
        if r.unauthorized:
            out.append(f"::error file={_escape_property(printable(r.path))},line={line},"
                       f"title={_escape_property('auditor: needs an authorization')}::{_escape_data(r.unauthorized)}")
        for v in r.verdicts:
            if v["status"] not in GATE_FAILING:
                continue
            level = "error" if v["blocking"] else "warning"
            title = f"auditor: {v['rule']} {v['status']}"
            message = (f"{r.preflight['run']}: {v['status'].replace('_', ' ')} under {v['rule']} "
                       f"(threshold {v['comparison']} {sci(v['threshold_flops'])} FLOP; margin {v['margin']:.2f}). "
                       f"{v.get('reason', '')}")
            out.append(f"::{level} file={_escape_property(printable(r.path))},line={line},"
                       f"title={_escape_property(title)}::{_escape_data(message.strip())}")
    return out


def junit_xml(gate: Gate) -> bytes:
    """One test suite; one test case per config and rule. Bad configs are errors, blocking
    crossings and risks failures, rules not in force skipped."""
    suite = ET.Element("testsuite", name="auditor gate")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}

    def case_of(r: GateResult, name: str, outcome: str, kind: str, text: str) -> None:
        """One whole-config test case: an error (bad input) or a failure, its text escaped."""
        case = ET.SubElement(suite, "testcase", classname=printable(r.path), name=name)
        ET.SubElement(case, outcome, message=printable(text), type=kind).text = printable(text)
        counts["tests"] += 1
        counts["errors" if outcome == "error" else "failures"] += 1

    for r in gate.results:
        if r.error:
            case_of(r, "config", "error", "bad_input", r.error)
            continue
        if r.untrusted:
            case_of(r, "trusted-run", "failure", "needs_trusted_run", r.untrusted)
            continue
        if r.unauthorized:
            case_of(r, "authorization", "failure", "unauthorized", r.unauthorized)
        for v in r.verdicts:
            case = ET.SubElement(suite, "testcase", classname=printable(r.path), name=printable(v["rule"]))
            counts["tests"] += 1
            text = printable(f"{v['status']}: margin {v['margin']:.3f}; {v.get('reason', '')}".strip())
            if v["status"] == "not_in_force":
                ET.SubElement(case, "skipped", message=text)
                counts["skipped"] += 1
            elif fails_gate(v):
                ET.SubElement(case, "failure", message=text, type=v["status"]).text = text
                counts["failures"] += 1
            elif v["status"] in GATE_FAILING:
                ET.SubElement(case, "system-out").text = f"non-blocking: {text}"
    for key, value in counts.items():
        suite.set(key, str(value))
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def check_authorization(result: GateResult, above: int, trusted: list, as_of) -> None:
    """A config whose plan reaches ``above`` FLOPs (its high end, conservatively) needs a valid
    authorization beside it (authorization.beside), signed by a trusted key, for this config."""
    from auditor.record.authorization import AuthorizationError, beside, load

    if result.preflight is None or result.preflight["high"] <= above:
        return
    path = beside(result.path)
    if not path.is_file():
        result.unauthorized = (f"{printable(result.path)}: its plan reaches {sci(result.preflight['high'])} FLOP, over "
                               f"the gate's {sci(above)}, and has no authorization ({printable(path.name)} missing)")
        return
    try:
        load(path, trusted, config=result.path, today=as_of)
    except AuthorizationError as exc:
        result.unauthorized = f"its plan reaches {sci(result.preflight['high'])} FLOP and {exc}"
