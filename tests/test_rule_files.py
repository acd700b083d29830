"""Rule files: good ones load exactly, bad ones fail with one line naming the file and the field.

BAD_RULE_FILES is a table other tests can reuse (``auditor thresholds validate`` must exit 2 on each row):

    from test_rule_files import BAD_RULE_FILES, write_case
    path, known = write_case(tmp_path, spec)    # spec: row[1]; known: rules of the other files, if any

Each row is (id, spec, field, fragment): spec is YAML text or bytes (written to rule.yaml), None (no file),
or a dict {file name: text} whose other files are loaded first (for ids clashing across files); field
is the field path the message must name (None for problems with the file as a whole); fragment is a
piece of the message.
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from auditor.rules.rule_file import RuleError, rule_file_json_schema, validate_rule_file
from auditor.rules.selection import load_rules

REPO = Path(__file__).resolve().parents[1]
CITATION = "{text: 'Art. 1', url: 'https://example.org/a'}"
BASE = {"id": "my-rule", "title": "My rule", "jurisdiction": "EU", "citation": CITATION, "threshold_flops": "1.0e+25",
        "comparison": "'>'", "basis": "training", "status": "in_force", "effective": "2025-08-02", "blocking": "true"}
RATIO = {"basis": "ratio_to_base", "threshold_flops": None, "ratio": "1/3", "fallback_base_flops": "1e25"}
SET_HEAD = "id: my-set\ntitle: My set\njurisdiction: EU\n"


def rule(**changes: str | None) -> str:
    """A one-rule file: BASE with changes (None drops a key)."""
    return "".join(f"{k}: {v}\n" for k, v in {**BASE, **changes}.items() if v is not None)


def flow(**changes: str | None) -> str:
    """The same rule as a flow mapping, for a rule set's list."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in {**BASE, **changes}.items() if v is not None) + "}"


def rule_set(*items: str, head: str = SET_HEAD) -> str:
    return head + "rules:\n" + "".join(f"  - {item}\n" for item in items)


def deadline(body: str) -> str:
    return rule(deadlines=f"[{{{body}}}]")


BAD_RULE_FILES = [
    # ids
    ("missing-id", rule(id=None), "id", "missing; expected a unique id"),
    ("id-uppercase", rule(id="My_Rule"), "id", "expected an id of lowercase letters"),
    ("id-a-number", rule(id="42"), "id", "a string"),
    ("duplicate-id-in-set", rule_set(flow(), flow()), "rules[1].id", "unique rule id (rules[0] has it too)"),
    ("rule-id-is-the-set-id", rule_set(flow(id="my-set")), "rules[0].id", "the rule set's own id"),
    ("duplicate-id-across-files", {"first.yaml": rule(), "rule.yaml": rule()}, "id",
     "first.yaml has a rule with that id"),
    ("set-id-reused-across-files", {"first.yaml": rule_set(flow(id="a")), "rule.yaml": rule(id="my-set")}, "id",
     "first.yaml has a rule set with that id"),
    # threshold
    ("threshold-negative", rule(threshold_flops="-1e25"), "threshold_flops",
     "got '-1e25'; expected a positive whole number of FLOPs"),
    ("threshold-zero", rule(threshold_flops="0"), "threshold_flops", "positive"),
    ("threshold-a-word", rule(threshold_flops="lots"), "threshold_flops", "got 'lots'; expected a positive whole"),
    ("threshold-fraction", rule(threshold_flops="1.5"), "threshold_flops", "no fractions"),
    ("threshold-boolean", rule(threshold_flops="true"), "threshold_flops", "not a boolean"),
    ("threshold-absurd", rule(threshold_flops="'10^99'"), "threshold_flops", "at most 10^40"),
    ("threshold-missing", rule(threshold_flops=None), "threshold_flops", "missing; expected the threshold in FLOPs"),
    ("threshold-with-ratio-basis", rule(**{**RATIO, "threshold_flops": "1e25"}), "threshold_flops",
     "no threshold_flops with basis ratio_to_base"),
    ("ratio-missing", rule(**{**RATIO, "ratio": None}), "ratio", "(needed with basis ratio_to_base)"),
    ("fallback-missing", rule(**{**RATIO, "fallback_base_flops": None}), "fallback_base_flops", "needed with basis"),
    ("ratio-without-ratio-basis", rule(ratio="1/3"), "ratio", "only with basis ratio_to_base (basis is training)"),
    ("ratio-a-word", rule(**{**RATIO, "ratio": "third"}), "ratio", "got 'third'; expected a positive ratio"),
    # comparison, basis, status
    ("comparison-=>", rule(comparison="'=>'"), "comparison", "got '=>'; expected > or >="),
    ("comparison-words", rule(comparison="greater"), "comparison", "expected > or >="),
    ("basis-unknown", rule(basis="lifetime"), "basis", "expected training, cumulative or ratio_to_base"),
    ("status-unknown", rule(status="repealed"), "status", "expected in_force, proposed, revoked or vetoed"),
    ("status-typo", rule(status="in-force"), "status", "did you mean in_force"),
    # dates
    ("revoked-without-date", rule(status="revoked"), "revoked", "status revoked needs revoked: or rescinded:"),
    ("vetoed-without-date", rule(status="vetoed", effective=None), "vetoed", "status vetoed needs it"),
    ("revoked-date-while-in-force", rule(revoked="2026-01-01"), "revoked",
     "revoked only with status revoked (status is in_force)"),
    ("vetoed-date-while-revoked", rule(status="revoked", revoked="2026-01-01", vetoed="2026-01-01"), "vetoed",
     "only with status vetoed"),
    ("revoked-before-effective", rule(status="revoked", revoked="2025-01-01"), "revoked",
     "got 2025-01-01; expected a date after effective (2025-08-02)"),
    ("effective-date-invalid", rule(effective="2025-13-45"), "effective", "got '2025-13-45'; expected a real date"),
    ("effective-date-words", rule(effective="next spring"), "effective", "expected a date written YYYY-MM-DD"),
    ("effective-date-number", rule(effective="20250802"), "effective", "YYYY-MM-DD"),
    ("effective-date-with-time", rule(effective="2025-08-02T10:00:00"), "effective", "YYYY-MM-DD"),
    # citation
    ("citation-without-url", rule(citation="{text: 'Art. 1'}"), "citation.url", "missing; expected an http(s) address"),
    ("citation-url-not-http", rule(citation="{text: 'Art. 1', url: 'ftp://example.org'}"), "citation.url",
     "expected an http(s) address"),
    ("citation-url-with-space", rule(citation="{text: 'Art. 1', url: 'https://a.org/x y'}"), "citation.url", "http(s)"),
    ("citation-without-text", rule(citation="{url: 'https://example.org'}"), "citation.text", "missing"),
    ("citation-a-string", rule(citation="'Art. 1'"), "citation", "expected a mapping with text and url"),
    ("citation-missing", rule(citation=None), "citation", "missing; expected a mapping with text and url"),
    # deadlines
    ("deadlines-not-a-list", rule(deadlines="'14 days'"), "deadlines", "expected a list of deadlines"),
    ("deadline-a-string", rule(deadlines="['14 days']"), "deadlines[0]", "expected a mapping with what"),
    ("deadline-without-period", deadline("what: notify, from: threshold_known"), "deadlines[0]",
     "give exactly one of within_days or within_hours (got none)"),
    ("deadline-both-periods", deadline("what: notify, within_days: 14, within_hours: 72, from: threshold_known"),
     "deadlines[0]", "(got within_days and within_hours)"),
    ("deadline-from-unknown", deadline("what: notify, within_days: 14, from: tomorrow"), "deadlines[0].from",
     "got 'tomorrow'; expected threshold_known"),
    ("deadline-from-missing", deadline("what: notify, within_days: 14"), "deadlines[0].from",
     "missing; expected the event the time runs from"),
    ("deadline-days-negative", deadline("what: notify, within_days: -14, from: threshold_known"),
     "deadlines[0].within_days", "positive whole number of days"),
    ("deadline-days-a-word", deadline("what: notify, within_days: fortnight, from: threshold_known"),
     "deadlines[0].within_days", "written like"),
    ("deadline-unknown-key", deadline("what: notify, within_weeks: 2, from: threshold_known"),
     "deadlines[0].within_weeks", "unknown key; expected one of what, within_days, within_hours, from"),
    # blocking
    ("blocking-not-bool", rule(blocking="sometimes"), "blocking", "got 'sometimes'; expected true or false"),
    ("blocking-a-number", rule(blocking="1"), "blocking", "got 1; expected true or false"),
    ("blocking-quoted", rule(blocking="'true'"), "blocking", "expected true or false"),
    ("blocking-missing", rule(blocking=None), "blocking", "missing; expected true or false"),
    # scope and lists
    ("scope-modality-unknown", rule(scope="{modality: [smell]}"), "scope.modality[0]", "got 'smell'; expected one of"),
    ("scope-modality-not-a-list", rule(scope="{modality: text}"), "scope.modality", "non-empty list of modalities"),
    ("scope-developer-maybe", rule(scope="{developer: maybe}"), "scope.developer", "got 'maybe'; expected same or"),
    ("scope-developer-without-modifications", rule(scope="{developer: other, modification: false}"),
     "scope.developer", "only where modifications are covered"),
    ("scope-unknown-key", rule(scope="{modalities: [text]}"), "scope.modalities", "did you mean modality"),
    ("obligations-a-string", rule(obligations="'notify'"), "obligations", "expected a list of obligations"),
    ("obligation-a-number", rule(obligations="[notify, 3]"), "obligations[1]", "a string"),
    ("unverified-a-mapping", rule(unverified="{revenue: 500}"), "unverified", "expected a list of conditions"),
    ("title-with-a-tab", rule(title='"a\\tb"'), "title", "hostile"),
    ("title-empty", rule(title="''"), "title", "not empty"),
    # unknown keys
    ("unknown-key-typo", rule(threshold_flops=None, threshhold_flops="1e25"), "threshhold_flops",
     "unknown key; expected one of id, title"),
    ("unknown-key-typo-suggests", rule(blockng="true"), "blockng", "did you mean blocking"),
    ("unknown-key-in-citation", rule(citation="{text: a, url: 'https://a.org', page: 3}"), "citation.page", "unknown"),
    # rule sets
    ("rules-not-a-list", SET_HEAD + "rules: eu-ai-act\n", "rules", "expected a non-empty list of rules"),
    ("rules-empty", SET_HEAD + "rules: []\n", "rules", "non-empty list of rules"),
    ("rules-item-not-a-mapping", rule_set("eu-ai-act-systemic-risk"), "rules[0]", "expected a rule: a mapping with id"),
    ("rules-item-bad-threshold", rule_set(flow(), flow(id="second", threshold_flops="-5")), "rules[1].threshold_flops",
     "got -5; expected a positive whole number of FLOPs"),
    ("set-missing-title", "id: my-set\njurisdiction: EU\nrules:\n  - " + flow() + "\n", "title", "missing"),
    ("set-unknown-key", rule_set(flow(), head=SET_HEAD + "version: 2\n"), "version", "unknown key"),
    ("rule-key-in-a-set", rule_set(flow(), head=SET_HEAD + "threshold_flops: 1e25\n"), "threshold_flops",
     "unknown key; expected one of id, title, jurisdiction, notes, example, rules"),
    # the file itself
    ("yaml-not-a-mapping", "- id: a\n- id: b\n", None, "expected a mapping at the top level (a rule, or a rule set"),
    ("yaml-a-scalar", "just some text\n", None, "got str"),
    ("invalid-yaml", "id: my-rule\nrules: [\n", None, "not valid YAML (line"),
    ("invalid-yaml-indent", "id: a\n  title: x\n bad: 1\n", None, "not valid YAML (line 2"),
    ("empty-file", "", None, "got an empty file"),
    ("comments-only", "# nothing here\n", None, "got an empty file"),
    ("duplicate-key", rule() + "id: again\n", None, "duplicate key 'id'"),
    ("python-tag", "id: !!python/object/apply:os.system [ls]\n", None, "not valid YAML"),
    ("two-documents", rule() + "---\n" + rule(), None, "not valid YAML"),
    ("not-utf8", b"id: \xff\xfe\n", None, "not UTF-8 text (byte 0xff at offset 4)"),
    ("file-missing", None, None, "cannot read the file"),
]


def write_case(tmp_path: Path, spec: str | bytes | dict | None) -> tuple[Path, list]:
    """Write one case; return the path to validate and the rules already loaded from the other files."""
    files = spec if isinstance(spec, dict) else {} if spec is None else {"rule.yaml": spec}
    known: list = []
    for name, content in files.items():
        target = tmp_path / name
        target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
        if name != "rule.yaml":
            known += validate_rule_file(target, known=known)
    return tmp_path / "rule.yaml", known


def test_table_is_well_formed():
    ids = [row[0] for row in BAD_RULE_FILES]
    assert len(ids) == len(set(ids)) and len(ids) >= 22
    assert all(len(row) == 4 for row in BAD_RULE_FILES)


@pytest.mark.parametrize("case_id,spec,field,fragment", BAD_RULE_FILES, ids=[row[0] for row in BAD_RULE_FILES])
def test_bad_rule_file(tmp_path, case_id, spec, field, fragment):
    path, known = write_case(tmp_path, spec)
    with pytest.raises(RuleError) as caught:
        validate_rule_file(path, known=known)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and caught.value.source == str(path)
    if field is not None:
        assert f" {field}: " in message, message
        assert caught.value.field == field, message
    assert fragment in message, message
    assert "\n" not in message and "\x1b" not in message
    for leak in ("Traceback", "validation error", "pydantic", "For further information", "Value error,"):
        assert leak not in message
    assert len(message) < 600 + len(str(path))


def test_clashing_ids_across_files_fail_load_rules_too(tmp_path):
    (tmp_path / "a.yaml").write_text(rule())
    (tmp_path / "b.yaml").write_text(rule_set(flow(id="other"), flow()))
    with pytest.raises(RuleError) as caught:
        load_rules([str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")])
    assert str(caught.value).startswith(f"{tmp_path / 'b.yaml'}: rules[1].id: got 'my-rule'")
    with pytest.raises(RuleError, match="a.yaml has a rule"):
        load_rules([tmp_path])                                          # a folder: both files


# ----- good files

def test_one_rule_file_and_number_forms(tmp_path):
    path = tmp_path / "rule.yaml"
    for written, exact in (("1.0e+25", 10**25), ("1e25", 10**25), ("'10^25'", 10**25), ("3.8e25", 38 * 10**24),
                           ("'1.5 x 10^25'", 15 * 10**24), ("10_000_000_000_000_000_000_000_000", 10**25)):
        path.write_text(rule(threshold_flops=written))
        (loaded,) = validate_rule_file(path)
        assert loaded.threshold_flops == exact and type(loaded.threshold_flops) is int, written
    path.write_text(rule(effective="'2025-08-02'", notes="~", scope="{modality: [text]}"))
    (loaded,) = validate_rule_file(path)
    assert str(loaded.effective) == "2025-08-02" and loaded.notes is None and loaded.rule_set is None
    path.write_text(rule(**RATIO, scope="{developer: other}"))
    (loaded,) = validate_rule_file(path)
    assert loaded.ratio == Fraction(1, 3) and loaded.fallback_base_flops == 10**25
    assert loaded.to_dict()["ratio"] == "1/3"


def test_deadline_from_round_trips(tmp_path):
    path = tmp_path / "rule.yaml"
    path.write_text(deadline("what: notify, within_hours: 72, from: incident_discovered"))
    (loaded,) = validate_rule_file(path)
    assert loaded.deadlines[0].from_ == "incident_discovered"
    assert loaded.to_dict()["deadlines"] == [{"what": "notify", "within_hours": 72, "from": "incident_discovered"}]


def test_json_schema_file_is_current():
    schema = rule_file_json_schema()
    assert [ref["$ref"] for ref in schema["oneOf"]] == ["#/$defs/RuleSet", "#/$defs/Rule"]
    assert schema["$defs"]["Rule"]["additionalProperties"] is False
    assert "from" in schema["$defs"]["Deadline"]["properties"]
    written = json.loads((REPO / "docs" / "rule-schema.json").read_text())
    assert written == schema, "regenerate: python -m auditor.rules.rule_file > docs/rule-schema.json"
