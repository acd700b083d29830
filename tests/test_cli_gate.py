"""`auditor gate` and `auditor thresholds` end to end: exit codes, the JUnit file (read back with junitparser),
GitHub annotations, --rules and --as-of; the pre-commit hook and docs/ci.md's examples.

Configs are tiny inline Hugging Face models (counted once per session) or bare parameter counts, so the
whole file runs in a few seconds.
"""
from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from junitparser import Error, Failure, JUnitXml, Skipped

from auditor.report.gate import Gate, GateResult, github_annotations

if str(Path(__file__).resolve().parent) not in sys.path:      # pytest's importlib mode does not add it
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import invoke
from test_rule_files import BAD_RULE_FILES, flow, rule, rule_set, write_case  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
AS_OF = "2026-06-01"          # EU, SB 53 and Korea in force; RAISE not yet; EO 14110, BIS, SB 1047 not in force
BLOCKING = ("crossed", "at_risk")

TINY = ("{model_type: llama, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, "
        "num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 100}")
CONFIGS = {
    # ~8e9 FLOP: every rule clear
    "tiny": f"run: tiny-run\nmodel: {{hf_config: {TINY}}}\ndata:\n  seq_len: 16\n  tokens: 16000\n",
    # 6 x 405e9 x 15.6e12 = 3.8e25, range 2.7e25..4.9e25: EU presumption crossed (and the example budget)
    "big": "# a 405B run\nrun: big-run\nmodel: {parameters: 405e9}\ndata:\n  seq_len: 8192\n  tokens: 15.6e12\n",
    # 6 x 1e11 x 1.5e13 = 9e24, range 6.3e24..1.17e25: EU presumption at risk
    "risky": "run: risky-run\nmodel:\n  parameters: 1e11\ndata:\n  tokens: 1.5e13\n",
    "broken": "run: broken-run\nmodel: {parameters: -5}\ndata: {tokens: 10}\n",
}




def write(folder: Path, name: str, text: str | None = None) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text is not None else CONFIGS[Path(name).stem])
    return path


def line_of(path: Path, key: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip().startswith(f"{key}:"))


def preflight_json(path: Path, *args) -> dict:
    result = invoke("preflight", path, "--format", "json", *args)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def verdicts(path: Path, *args) -> list[dict]:
    return preflight_json(path, "--as-of", AS_OF, *args)["verdicts"]


def table_rows(stdout: str) -> dict[str, str]:
    """The gate's summary table: config path -> its row."""
    rows = {}
    for line in stdout.splitlines()[2:]:
        if re.match(r"\d+ configs?: ", line):
            break
        rows[line.split()[0]] = line
    return rows


def bundled_ids() -> list[str]:
    """Every rule id in thresholds/ the gate judges by default, read straight from the files (not
    through auditor.rules): examples (example: true) are judged only when named."""
    ids = []
    for path in sorted((REPO / "thresholds").glob("*.y*ml")):
        data = yaml.safe_load(path.read_text())
        if data.get("example"):
            continue
        ids += [r["id"] for r in data["rules"] if not r.get("example")] if "rules" in data else [data["id"]]
    return ids


# ----- exit codes

def test_exit_0_when_every_blocking_rule_is_clear(tmp_path):
    path = write(tmp_path, "tiny.yaml")
    result = invoke("gate", path, "--as-of", AS_OF)
    assert result.exit_code == 0, result.output
    row = table_rows(result.stdout)[str(path)]
    assert " ok " in row and row.endswith("clear")
    assert "1 config: 0 failing, 0 bad input" in result.stdout
    assert f"[1/1] {path}" in result.stderr


def test_exit_0_with_todays_rules_too(tmp_path):
    assert invoke("gate", write(tmp_path, "tiny.yaml")).exit_code == 0


def test_exit_1_when_the_eu_presumption_is_crossed(tmp_path):
    tiny, big = write(tmp_path, "tiny.yaml"), write(tmp_path, "big.yaml")
    result = invoke("gate", tiny, big, "--as-of", AS_OF)
    assert result.exit_code == 1, result.output
    rows = table_rows(result.stdout)
    assert " FAIL " in rows[str(big)] and "eu-ai-act-systemic-risk crossed" in rows[str(big)]
    assert rows[str(tiny)].endswith("clear")
    assert "2 configs: 1 failing, 0 bad input" in result.stdout


def test_exit_1_when_a_blocking_rule_is_only_at_risk(tmp_path):
    risky = write(tmp_path, "risky.yaml")
    (eu,) = [v for v in verdicts(risky) if v["rule"] == "eu-ai-act-systemic-risk"]
    assert eu["status"] == "at_risk"
    result = invoke("gate", risky, "--as-of", AS_OF)
    assert result.exit_code == 1 and "eu-ai-act-systemic-risk at_risk" in result.stdout


def test_exit_2_for_a_bad_config_among_good_ones_which_are_still_reported(tmp_path):
    folder = tmp_path / "configs"
    good = [write(folder, "tiny.yaml"), write(folder, "big.yaml")]
    bad = write(folder, "broken.yaml")
    result = invoke("gate", folder, "--as-of", AS_OF, "--junit", tmp_path / "gate.xml")
    assert result.exit_code == 2, result.output                       # 2 wins over the crossing's 1
    rows = table_rows(result.stdout)
    assert set(rows) == {str(p) for p in [*good, bad]}
    assert "bad input" in rows[str(bad)] and "model.parameters" in rows[str(bad)]
    assert rows[str(good[0])].endswith("clear") and " FAIL " in rows[str(good[1])]
    assert "3 configs: 1 failing, 1 bad input" in result.stdout
    assert "Traceback" not in result.output
    cases = list(next(iter(JUnitXml.fromfile(str(tmp_path / "gate.xml")))))
    assert {c.classname for c in cases} == {str(p) for p in [*good, bad]}
    assert sum(c.classname == str(good[0]) for c in cases) == len(bundled_ids())


# ----- which configs

def test_a_folder_collects_every_yaml_in_it(tmp_path):
    folder = tmp_path / "runs"
    found = [write(folder, "a.yaml", CONFIGS["tiny"]), write(folder, "b.yaml", CONFIGS["tiny"]),
             write(folder, "nested/c.yaml", CONFIGS["tiny"]), write(folder, "d.yml", CONFIGS["tiny"])]
    write(folder, "notes.txt", "not a config")
    write(folder, "model.json", "{}")
    result = invoke("gate", folder, "--as-of", AS_OF)
    assert result.exit_code == 0, result.output
    assert set(table_rows(result.stdout)) == {str(p) for p in found}
    assert "4 configs: 0 failing, 0 bad input" in result.stdout
    assert "[4/4] " in result.stderr


def test_a_file_named_twice_is_gated_once(tmp_path):
    path = write(tmp_path, "tiny.yaml")
    result = invoke("gate", path, tmp_path, "--as-of", AS_OF)
    assert result.exit_code == 0 and "1 config:" in result.stdout


@pytest.mark.parametrize("missing", ["no-such.yaml", "no-such-folder"])
def test_a_missing_path_is_bad_input(tmp_path, missing):
    good = write(tmp_path, "tiny.yaml")
    result = invoke("gate", good, tmp_path / missing, "--as-of", AS_OF)
    assert result.exit_code == 2, result.output
    rows = table_rows(result.stdout)
    assert "no such file or folder" in rows[str(tmp_path / missing)]
    assert rows[str(good)].endswith("clear")
    assert "Traceback" not in result.output


def test_no_path_at_all_is_a_usage_error():
    result = invoke("gate")
    assert result.exit_code == 2 and "Missing argument" in result.output


# ----- --junit

def expected_result(v: dict) -> type | None:
    if v["status"] == "not_in_force":
        return Skipped
    if v["blocking"] and v["status"] in BLOCKING:
        return Failure
    return None


def test_junit_one_case_per_config_and_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = {name: write(Path("configs"), f"{name}.yaml") for name in CONFIGS}
    result = invoke("gate", "configs", "--as-of", AS_OF, "--junit", "gate.xml")
    assert result.exit_code == 2, result.output
    xml = JUnitXml.fromfile("gate.xml")
    (suite,) = list(xml)
    assert suite.name == "auditor gate"
    by_config = defaultdict(list)
    for case in suite:
        by_config[case.classname].append(case)
    assert set(by_config) == {str(p) for p in paths.values()}

    seen = defaultdict(int)
    for name, path in paths.items():
        cases = by_config[str(path)]
        if name == "broken":
            (case,) = cases
            assert case.name == "config"
            (error,) = case.result
            assert type(error) is Error and error.type == "bad_input"
            assert error.message.startswith(f"{path}: model.parameters: got -5")
            seen["error"] += 1
            continue
        expected = verdicts(path)
        assert [c.name for c in cases] == [v["rule"] for v in expected]
        assert sorted(c.name for c in cases) == sorted(bundled_ids())
        for case, v in zip(cases, expected):
            want = expected_result(v)
            got = [type(r) for r in case.result]
            assert got == ([want] if want else []), (path, v["rule"], v["status"], got)
            if want is Failure:
                assert case.result[0].type == v["status"] and case.result[0].message.startswith(v["status"])
                seen[v["status"]] += 1
            elif want is Skipped:
                assert case.result[0].message.startswith("not_in_force")
                seen["skipped"] += 1
            elif v["status"] in BLOCKING:                       # a non-blocking rule crossed: passes, says so
                assert case.is_passed and case.system_out.startswith("non-blocking: ")
                seen["non-blocking"] += 1
            else:
                assert case.is_passed and v["status"] == "clear"
                seen["clear"] += 1
    # the configs exercise every kind of case
    assert all(seen[k] for k in ("error", "crossed", "at_risk", "skipped", "non-blocking", "clear")), seen

    cases = [c for c in suite]
    results = [r for c in cases for r in c.result]
    assert suite.tests == len(cases) == 3 * len(bundled_ids()) + 1
    assert suite.failures == sum(type(r) is Failure for r in results) == seen["crossed"] + seen["at_risk"]
    assert suite.errors == sum(type(r) is Error for r in results) == 1
    assert suite.skipped == sum(type(r) is Skipped for r in results) == seen["skipped"]


def test_junit_for_a_clear_run_has_no_failures(tmp_path):
    out = tmp_path / "gate.xml"
    assert invoke("gate", write(tmp_path, "tiny.yaml"), "--as-of", AS_OF, "--junit", out).exit_code == 0
    (suite,) = list(JUnitXml.fromfile(str(out)))
    assert suite.tests == len(bundled_ids()) and suite.failures == 0 and suite.errors == 0


def test_junit_into_a_missing_folder_is_created_or_bad_input(tmp_path):
    out = tmp_path / "reports" / "gate.xml"
    result = invoke("gate", write(tmp_path, "tiny.yaml"), "--as-of", AS_OF, "--junit", out)
    assert result.exit_code in (0, 2), (result.exit_code, result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        assert list(JUnitXml.fromfile(str(out)))
    else:
        assert str(out) in result.stderr


def test_junit_is_well_formed_whatever_the_file_names(tmp_path):
    folder = tmp_path / "configs"
    write(folder, "a\x01b.yaml", CONFIGS["tiny"])
    out = tmp_path / "gate.xml"
    result = invoke("gate", folder, "--as-of", AS_OF, "--junit", out)
    assert result.exit_code in (0, 2)
    ET.parse(out)


# ----- --github

ANNOTATION = re.compile(r"^::(?P<level>error|warning) file=(?P<file>[^,:]*),line=(?P<line>[1-9]\d*),"
                        r"title=(?P<title>[^,:]*)::(?P<message>.*)$")


def unescape_data(text: str) -> str:
    return re.sub(r"%(25|0D|0A)", lambda m: {"25": "%", "0D": "\r", "0A": "\n"}[m.group(1)], text)


def annotations(stdout: str) -> list[re.Match]:
    lines = [line for line in stdout.splitlines() if line.startswith("::")]
    matches = [ANNOTATION.match(line) for line in lines]
    assert all(matches), lines
    return matches


def test_github_annotations_point_at_the_tokens_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    big = write(Path("team,a"), "big:1.yaml", CONFIGS["big"])         # ',' and ':' in the path
    risky = write(Path("team,a"), "risky.yaml")
    write(Path("team,a"), "broken.yaml")  # bad input beside the others
    tiny = write(Path("team,a"), "tiny.yaml")
    result = invoke("gate", "team,a", "--as-of", AS_OF, "--github")
    assert result.exit_code == 2
    found = annotations(result.stdout)
    got = {(m["file"], m["level"], m["title"]) for m in found}

    want = set()
    for path in (big, risky, tiny):
        run = preflight_json(path, "--as-of", AS_OF)
        file = str(path).replace(",", "%2C").replace(":", "%3A")
        for v in run["verdicts"]:
            if v["status"] in BLOCKING:
                want.add((file, "error" if v["blocking"] else "warning", f"auditor%3A {v['rule']} {v['status']}"))
        for m in found:
            if m["file"] == file:
                assert int(m["line"]) == line_of(path, "tokens") and m["line"] != "1"
                assert m["message"].startswith(f"{run['run']}: ")
    want.add(("team%2Ca/broken.yaml", "error", "auditor%3A bad config"))
    assert got == want
    assert ("team%2Ca/big%3A1.yaml", "error", "auditor%3A eu-ai-act-systemic-risk crossed") in got
    assert ("team%2Ca/big%3A1.yaml", "warning", "auditor%3A eu-ai-act-gpai-indicative crossed") in got
    assert ("team%2Ca/risky.yaml", "error", "auditor%3A eu-ai-act-systemic-risk at_risk") in got
    assert not any(m["file"].endswith("tiny.yaml") for m in found)
    (bad,) = [m for m in found if m["file"].endswith("broken.yaml")]
    assert bad["line"] == "1" and bad["message"].startswith("team,a/broken.yaml: model.parameters: got -5")
    assert len(found) == len(got)                                     # one annotation per rule and config


def test_github_annotation_line_for_a_steps_config(tmp_path):
    path = write(tmp_path, "steps.yaml", "run: stepped\nmodel: {parameters: 405e9}\ndata:\n  seq_len: 8192\n"
                                         "  batch_size: 1950\n  steps: 1000000\n")
    result = invoke("gate", path, "--as-of", AS_OF, "--github", "--rules", "eu-ai-act-systemic-risk")
    assert result.exit_code == 1
    (m,) = annotations(result.stdout)
    assert int(m["line"]) == line_of(path, "steps") == 6


def test_no_annotations_without_the_flag(tmp_path):
    result = invoke("gate", write(tmp_path, "big.yaml"), "--as-of", AS_OF)
    assert result.exit_code == 1 and not [line for line in result.stdout.splitlines() if line.startswith("::")]


def test_github_annotation_line_for_flow_style_data(tmp_path):
    path = write(tmp_path, "flow.yaml", "run: big-run\nmodel: {parameters: 405e9}\ndata: {tokens: 15.6e12}\n")
    result = invoke("gate", path, "--as-of", AS_OF, "--github", "--rules", "eu-ai-act-systemic-risk")
    (m,) = annotations(result.stdout)
    assert m["line"] == "3"                                           # the tokens are on line 3; gives 2


def test_github_escaping_of_message_and_properties():
    verdict = {"rule": "r,1:x", "status": "at_risk", "blocking": True, "comparison": ">=",
               "threshold_flops": 10**25, "margin": 1.5, "reason": "100% sure:\r\nnext, line"}
    result = GateResult(Path("dir,1/a:b%c.yaml"), preflight={"run": "run%1\nx", "verdicts": [verdict]})
    warn = dict(verdict, rule="w", status="crossed", blocking=False, reason="")
    quiet = GateResult(Path("q.yaml"), preflight={"run": "q", "verdicts": [warn, dict(warn, status="clear")]})
    bad = GateResult(Path("x,y.yaml"), error="50% bad:\nnext, then\r")
    lines = github_annotations(Gate([result, quiet, bad]))
    assert len(lines) == 3
    first = ANNOTATION.match(lines[0])
    assert lines[0].startswith("::error file=dir%2C1/a%3Ab%25c.yaml,line=1,title=auditor%3A r%2C1%3Ax at_risk::")
    message = first["message"]
    assert "\r" not in message and "\n" not in message
    assert message.startswith("run%251%0Ax: ") and message.endswith("100%25 sure:%0D%0Anext, line")
    assert unescape_data(message).startswith("run%1\nx: at risk under r,1:x")
    assert ">= 1.0e25 FLOP" in message                                      # the threshold
    assert lines[1].startswith("::warning file=q.yaml,line=1,title=auditor%3A w crossed::q: crossed under w")
    assert lines[2] == "::error file=x%2Cy.yaml,line=1,title=auditor%3A bad config::50%25 bad:%0Anext, then%0D"


# ----- --rules

def case_names(junit: Path) -> list[str]:
    return [c.name for s in JUnitXml.fromfile(str(junit)) for c in s]


def test_rules_a_bundled_rule_id(tmp_path):
    out = tmp_path / "gate.xml"
    result = invoke("gate", write(tmp_path, "big.yaml"), "--rules", "eu-ai-act-systemic-risk", "--as-of", AS_OF,
                    "--junit", out)
    assert result.exit_code == 1 and case_names(out) == ["eu-ai-act-systemic-risk"]
    result = invoke("gate", write(tmp_path, "big.yaml"), "--rules", "us-ca-sb53-frontier-model", "--as-of", AS_OF)
    assert result.exit_code == 0, result.output                       # 4.9e25 at most: under SB 53's 1e26


def test_rules_a_rule_set_id(tmp_path):
    out = tmp_path / "gate.xml"
    result = invoke("gate", write(tmp_path, "big.yaml"), "--rules", "eu-ai-act", "--as-of", AS_OF, "--junit", out)
    assert result.exit_code == 1
    assert case_names(out) == ["eu-ai-act-systemic-risk", "eu-ai-act-gpai-indicative", "eu-ai-act-modification",
                               "eu-ai-act-modification-systemic-risk"]


def test_rules_a_users_rule_file_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(Path("policy"), "tiny-budget.yaml", rule(id="tiny-budget", threshold_flops="1e9"))
    tiny = write(Path("configs"), "tiny.yaml")
    out = tmp_path / "gate.xml"
    result = invoke("gate", "configs", "--rules", "./policy/tiny-budget.yaml", "--as-of", AS_OF, "--junit", out)
    assert result.exit_code == 1, result.output
    assert "tiny-budget crossed" in table_rows(result.stdout)[str(tiny)]
    assert case_names(out) == ["tiny-budget"]
    both = invoke("gate", "configs", "--rules", "policy/tiny-budget.yaml", "--rules", "eu-ai-act-systemic-risk",
                  "--as-of", AS_OF, "--junit", out)
    assert both.exit_code == 1 and case_names(out) == ["tiny-budget", "eu-ai-act-systemic-risk"]


def test_a_configs_rules_add_to_the_gates_and_are_its_judge_only_in_preflight(tmp_path):
    """The gate's rules are the gate's: a config naming only SB 53 (clear at 3.8e25) is still
    judged by every bundled rule, and fails on the EU presumption; preflight of one's own
    config keeps the config's rules as its judge."""
    path = write(tmp_path, "own.yaml", CONFIGS["big"] + "rules: [us-ca-sb53-frontier-model]\n")
    out = tmp_path / "gate.xml"
    assert invoke("gate", path, "--as-of", AS_OF, "--junit", out).exit_code == 1
    assert case_names(out) == bundled_ids()
    assert [v["rule"] for v in verdicts(path)] == ["us-ca-sb53-frontier-model"]


def test_an_unknown_rule_id_is_bad_input_and_named(tmp_path):
    result = invoke("gate", write(tmp_path, "tiny.yaml"), write(tmp_path, "big.yaml"), "--rules", "no-such-rule")
    assert result.exit_code == 2  # checked once, before any config: one line on stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: --rules: ") and "'no-such-rule'" in line and "auditor thresholds list" in line
    assert "Traceback" not in result.output
    pre = invoke("preflight", tmp_path / "tiny.yaml", "--rules", "no-such-rule")
    assert pre.exit_code == 2
    (line,) = [line for line in pre.stderr.splitlines() if not line.startswith("... ")]
    assert line.startswith("error: ") and "'no-such-rule'" in line


def test_a_bad_rule_file_is_bad_input(tmp_path):
    bad = write(tmp_path, "policy.yaml", rule(threshold_flops="-1e25"))
    result = invoke("gate", write(tmp_path, "tiny.yaml"), "--rules", bad)
    assert result.exit_code == 2
    assert f"{bad}: threshold_flops: got '-1e25'" in result.stderr


# ----- --as-of

RAISE = "us-ny-raise-frontier-model"


def test_as_of_raise_comes_into_force_on_2027_01_01(tmp_path):
    path = write(tmp_path, "frontier.yaml", "run: frontier\nmodel: {parameters: 1e12}\ndata: {tokens: 3.3333e13}\n")
    before = invoke("preflight", path, "--format", "json", "--rules", RAISE, "--as-of", "2026-12-31")
    after = invoke("preflight", path, "--format", "json", "--rules", RAISE, "--as-of", "2027-01-01")
    assert (before.exit_code, after.exit_code) == (0, 1)
    before, after = json.loads(before.stdout), json.loads(after.stdout)
    assert 1.9e26 < before["total_flops"] < 2.1e26 and before["low"] > 10**26          # a 2e26 run
    (b,), (a,) = before["verdicts"], after["verdicts"]
    assert (b["rule"], b["status"], b["inactive"], b["would_be"]) == (RAISE, "not_in_force", "not_yet_effective",
                                                                       "crossed")
    assert (a["rule"], a["status"], a["inactive"], a["compared"]) == (RAISE, "crossed", None, "low")
    assert (b["as_of"], a["as_of"]) == ("2026-12-31", "2027-01-01")
    assert before["as_of"] == "2026-12-31"
    # the gate reads the same dates
    assert invoke("gate", path, "--rules", RAISE, "--as-of", "2026-12-31").exit_code == 0
    assert invoke("gate", path, "--rules", RAISE, "--as-of", "2027-01-01").exit_code == 1


def test_as_of_not_a_date_is_a_usage_error(tmp_path):
    result = invoke("gate", write(tmp_path, "tiny.yaml"), "--as-of", "2026-02-30")
    assert result.exit_code == 2 and "--as-of" in result.output


# ----- thresholds

def test_thresholds_list_shows_every_bundled_rule():
    result = invoke("thresholds", "list")
    assert result.exit_code == 0
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:] if line.strip()}
    examples = [r for r in rows if r.startswith("example-lab-policy")]
    assert sorted(set(rows) - set(examples)) == sorted(bundled_ids()) and len(rows) == 15 and len(examples) == 2
    assert all(rows[r].endswith("when named (an example)") for r in examples)
    assert all(rows[r].endswith("by default") for r in bundled_ids())


def test_thresholds_list_as_of():
    def raise_row(day: str) -> str:
        result = invoke("thresholds", "list", "--as-of", day)
        return next(line for line in result.stdout.splitlines() if line.startswith(RAISE))
    assert "not in force (not_yet_effective)" in raise_row("2026-12-31")
    assert "not in force" not in raise_row("2027-01-01") and "in force" in raise_row("2027-01-01")


def test_thresholds_show_prints_the_citation_and_threshold():
    result = invoke("thresholds", "show", "eu-ai-act-systemic-risk")
    assert result.exit_code == 0
    (shown,) = json.loads(result.stdout)
    assert shown["id"] == "eu-ai-act-systemic-risk"
    assert shown["threshold_flops"] == 10**25 and shown["comparison"] == ">"
    assert "Regulation (EU) 2024/1689, Art. 51(2)" in shown["citation"]["text"]
    assert shown["citation"]["url"] == "https://eur-lex.europa.eu/eli/reg/2024/1689/oj"
    assert shown["rule_set"] == "eu-ai-act"


def test_thresholds_show_a_rule_set():
    result = invoke("thresholds", "show", "eu-ai-act")
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 4


def test_thresholds_show_an_unknown_id_exits_2():
    result = invoke("thresholds", "show", "no-such")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and "'no-such'" in result.stderr
    assert "Traceback" not in result.output


def test_thresholds_validate_good_files(tmp_path):
    one = write(tmp_path, "one.yaml", rule())
    result = invoke("thresholds", "validate", one)
    assert result.exit_code == 0 and result.stdout.strip() == f"{one}: valid, 1 rule(s): my-rule"
    two = write(tmp_path, "two.yaml", rule_set(flow(id="a"), flow(id="b", comparison="'>='")))
    result = invoke("thresholds", "validate", two)
    assert result.exit_code == 0 and result.stdout.strip() == f"{two}: valid, 2 rule(s): a, b"
    for bundled in sorted((REPO / "thresholds").glob("*.yaml")):
        assert invoke("thresholds", "validate", bundled).exit_code == 0, bundled


# One file at a time: the rows whose ids clash with another file need that file loaded first, which
# `thresholds validate PATH` does not do (it checks one file alone).
CLI_ROWS = [row for row in BAD_RULE_FILES if not isinstance(row[1], dict)]


def test_enough_malformed_rows_go_through_the_cli():
    assert len(CLI_ROWS) >= 20


@pytest.mark.parametrize("case_id,spec,field,fragment", CLI_ROWS, ids=[row[0] for row in CLI_ROWS])
def test_thresholds_validate_a_malformed_file_exits_2_with_one_line(tmp_path, case_id, spec, field, fragment):
    path, known = write_case(tmp_path, spec)
    assert not known
    result = invoke("thresholds", "validate", path)
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    err = result.stderr
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"error: {path}: "), err
    if field is not None:
        assert f" {field}: " in err, err
    assert " ".join(fragment.split()) in err, err
    assert result.stdout == ""
    assert "Traceback" not in result.output and "\x1b" not in err


# ----- --help

@pytest.mark.parametrize("args,words", [
    (["gate"], ["PATHS", "--rules", "--as-of", "--junit", "--github"]),
    (["thresholds"], ["list", "show", "validate"]),
    (["thresholds", "list"], ["--as-of"]),
    (["thresholds", "show"], ["RULE_ID"]),
    (["thresholds", "validate"], ["PATH"]),
])
def test_help(args, words):
    for flag in ("--help", "-h"):
        result = invoke(*args, flag)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("Usage: ") and all(w in result.stdout for w in words), result.stdout


# ----- pre-commit hook and docs/ci.md

HOOK_PATTERN = r"(^|/)(training|runs?)/.*\.ya?ml$"


def test_pre_commit_hook_manifest():
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert isinstance(hooks, list) and len(hooks) == 1
    (hook,) = hooks
    assert hook["id"] == "auditor-gate" and hook["entry"] == "auditor gate" and hook["language"] == "python"
    assert hook["name"] and hook.get("pass_filenames", True) is True
    assert hook["files"] == HOOK_PATTERN
    pattern = re.compile(hook["files"])
    for path in ("training/llama.yaml", "training/a/b.yml", "runs/x.yaml", "run/x.yaml", "configs/runs/a.yml"):
        assert pattern.search(path), path
    for path in ("training.yaml", "src/training/loop.py", "myruns/a.yaml", "training/notes.txt", "runs/x.yaml.bak"):
        assert not pattern.search(path), path
    assert set(hook.get("types", ["yaml"])) <= {"yaml", "file", "text"}


def yaml_blocks(markdown: str) -> list:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", markdown, re.S)]


def test_ci_docs_examples_parse_and_agree_with_the_hook():
    text = (REPO / "docs" / "ci.md").read_text()
    blocks = yaml_blocks(text)
    (workflow,) = [b for b in blocks if "jobs" in b]
    steps = workflow["jobs"]["gate"]["steps"]
    runs = " ".join(s.get("run", "") for s in steps)
    assert "pip install torch==2.13.0 auditor" in runs
    assert "auditor gate" in runs and "--github" in runs and "--junit" in runs
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == "~/.cache/auditor"
    (config,) = [b for b in blocks if "repos" in b]
    assert config["repos"][0]["hooks"][0]["id"] == "auditor-gate"
    assert HOOK_PATTERN in text and "AUDITOR_CACHE_DIR" in text
    for code in ("| 0 |", "| 1 |", "| 2 |"):
        assert code in text
