"""Verdicts: exact comparisons at the threshold, ranges that straddle it, cumulative and one-third bases,
dates that switch rules on and off, and deadlines dated from the as-of day. Preflights are built
directly from Estimates: no model is counted here."""
from __future__ import annotations

import json
from fractions import Fraction
from datetime import date
from pathlib import Path

import pytest

from auditor.estimate import Estimate, band
from auditor.preflight import Preflight
from auditor.rules.rule_file import RuleError, validate_rule_file
from auditor.rules.selection import bundled_rules, load_rules
from auditor.rules.verdicts import Verdict, evaluate, evaluate_rule, fails_gate
from auditor.text import sci, two_significant

REPO = Path(__file__).resolve().parents[1]
AS_OF = date(2026, 3, 1)
E24, E25, E26 = 10**24, 10**25, 10**26
RULES = {rule.id: rule for rule in bundled_rules()}

EXPECTED = {   # id: (threshold (int, or (ratio, fallback)), comparison, basis, status)
    "eu-ai-act-systemic-risk": (E25, ">", "cumulative", "in_force"),
    "eu-ai-act-gpai-indicative": (10**23, ">", "cumulative", "in_force"),
    "eu-ai-act-modification": (("1/3", 10**23), ">", "ratio_to_base", "in_force"),
    "eu-ai-act-modification-systemic-risk": (("1/3", E25), ">", "ratio_to_base", "in_force"),
    "us-eo-14110-reporting": (E26, ">", "training", "revoked"),
    "us-eo-14110-biological": (10**23, ">", "training", "revoked"),
    "us-bis-4e091": (E26, ">", "cumulative", "revoked"),
    "us-bis-reporting-proposed": (E26, ">", "training", "proposed"),
    "us-ca-sb53-frontier-model": (E26, ">", "cumulative", "in_force"),
    "us-ca-sb1047-covered-model": (E26, ">", "training", "vetoed"),
    "us-ca-sb1047-fine-tune": (3 * E25, ">=", "training", "vetoed"),
    "us-ny-raise-frontier-model": (E26, ">", "cumulative", "in_force"),
    "kr-ai-basic-act-high-performance": (E26, ">=", "cumulative", "in_force"),
    "example-lab-policy-review": (5 * E24, ">", "training", "in_force"),
    "example-lab-policy-budget": (2 * E25, ">", "training", "in_force"),
}


def run(flops: int, rel: float = 0, *, lineage: dict | None = None, modality: str = "text") -> Preflight:
    low, high = band(flops, rel, rel) if rel else (flops, flops)
    return Preflight(run="test", estimates=[Estimate("analytic", flops, low, high)], lineage=lineage,
                     modality=modality)


def fine_tune(flops: int, base: int | None, developer: str | None, rel: float = 0) -> Preflight:
    lineage = {"base_model": "some-base", "base_compute_flops": base, "developer": developer}
    return run(flops, rel, lineage=lineage)


def verdict(result: Preflight, rule_id: str, as_of: date = AS_OF) -> Verdict:
    return evaluate_rule(result.figures(), RULES[rule_id], as_of)


# ----- the bundled files

def test_bundled_files_all_load():
    assert set(RULES) == set(EXPECTED)
    for rule_id, (threshold, comparison, basis, status) in EXPECTED.items():
        rule = RULES[rule_id]
        got = rule.threshold_flops if isinstance(threshold, int) else (str(rule.ratio), rule.fallback_base_flops)
        assert (got, rule.comparison, rule.basis, rule.status) == (threshold, comparison, basis, status), rule_id
        assert rule.citation.url.startswith("https://") and rule.source.parent.name == "thresholds"
    for path in sorted((REPO / "thresholds").glob("*.yaml")):
        assert validate_rule_file(path)
    # by default every bundled rule but the example policy (a template, judged only when named)
    assert [r.id for r in load_rules(None)] == [i for i in RULES if not i.startswith("example-lab-policy")]
    assert all(RULES[i].is_example for i in RULES if i.startswith("example-lab-policy"))
    assert {r.rule_set for r in RULES.values()} == {"eu-ai-act", "us-eo-14110", "us-bis", "us-ca-sb53", "us-ca-sb1047",
                                                   "us-ny-raise", "kr-ai-basic-act", "example-lab-policy"}


def test_selection_by_rule_id_set_id_and_path(tmp_path):
    assert [r.id for r in load_rules(["eu-ai-act-systemic-risk"])] == ["eu-ai-act-systemic-risk"]
    assert [r.id for r in load_rules(["us-eo-14110"])] == ["us-eo-14110-reporting", "us-eo-14110-biological"]
    both = load_rules(["us-ca-sb53", "us-ca-sb53-frontier-model", str(REPO / "thresholds" / "us-ca-sb53.yaml")])
    assert [r.id for r in both] == ["us-ca-sb53-frontier-model"]           # the same rule three ways: once
    (tmp_path / "mine.yaml").write_text((REPO / "thresholds" / "example-lab-policy.yaml").read_text()
                                        .replace("example-lab-policy", "my-lab"))
    mine = load_rules(["mine.yaml", "eu-ai-act-systemic-risk"], base_dir=tmp_path)
    assert [r.id for r in mine] == ["my-lab-review", "my-lab-budget", "eu-ai-act-systemic-risk"]
    assert mine[0].rule_set == "my-lab" and mine[0].source == (tmp_path / "mine.yaml").resolve()
    assert [r.id for r in load_rules([tmp_path])] == ["my-lab-review", "my-lab-budget"]     # a folder


def test_unknown_id_and_clashing_ids_are_errors(tmp_path):
    with pytest.raises(RuleError, match=r"rules\[0\]: got 'eu-ai-act-systemic'; .*did you mean"):
        load_rules(["eu-ai-act-systemic"])
    (tmp_path / "copy.yaml").write_text((REPO / "thresholds" / "us-ny-raise.yaml").read_text())
    with pytest.raises(RuleError) as caught:
        load_rules(["us-ny-raise", str(tmp_path / "copy.yaml")])
    message = str(caught.value)
    assert "copy.yaml: id: got 'us-ny-raise'" in message and "us-ny-raise.yaml has a rule" in message


# ----- exact comparisons

def test_exactly_1e25_is_clear_under_the_eu_rule_strict():
    v = verdict(run(E25), "eu-ai-act-systemic-risk")
    assert (v.status, v.comparison, v.threshold_flops, v.margin) == ("clear", ">", E25, 1.0)
    assert "not > 1.0e25 (strict)" in v.reason and "high end" in v.reason
    assert verdict(run(E25 + 1), "eu-ai-act-systemic-risk").status == "crossed"


def test_exactly_1e26_crosses_korea_inclusive():
    v = verdict(run(E26), "kr-ai-basic-act-high-performance")
    assert (v.status, v.comparison, v.compared) == ("crossed", ">=", "low")
    assert "is >= 1.0e26 (inclusive)" in v.reason
    assert verdict(run(E26 - 1), "kr-ai-basic-act-high-performance").status == "clear"
    assert verdict(run(E26), "us-ca-sb53-frontier-model").status == "clear"        # the same figure, strict


def test_8e24_plus_minus_30_percent_is_at_risk_under_the_eu_rule():
    v = verdict(run(8 * E24, 0.3), "eu-ai-act-systemic-risk")
    assert v.status == "at_risk" and v.compared == "high"
    assert v.basis_flops == {"low": 56 * 10**23, "central": 8 * E24, "high": 104 * 10**23}
    assert v.margin == pytest.approx(1.04)
    assert "1.04e25" in v.reason and "5.6e24" in v.reason
    assert verdict(run(8 * E24, 0.2), "eu-ai-act-systemic-risk").status == "clear"     # 9.6e24 at most


def test_one_third_threshold_is_an_exact_fraction():
    base = 38 * E24
    assert verdict(fine_tune(base // 3, base, "other"), "eu-ai-act-modification").status == "clear"
    v = verdict(fine_tune(base // 3 + 1, base, "other"), "eu-ai-act-modification")
    assert v.status == "crossed"
    assert v.threshold_exact == f"{base}/3" and v.threshold_flops == base // 3


# ----- bases: cumulative and one third of the base

def test_other_developers_fine_tune_crosses_the_eu_one_third_rule():
    result = fine_tune(15 * E24, 38 * E24, "other", rel=0.05)
    for rule_id in ("eu-ai-act-modification", "eu-ai-act-modification-systemic-risk"):
        v = verdict(result, rule_id)
        assert (v.status, v.basis) == ("crossed", "ratio_to_base"), rule_id
        assert v.basis_flops["low"] == 1425 * 10**22 and "one third of the base model's 3.8e25" in v.reason
    sb53 = verdict(result, "us-ca-sb53-frontier-model")                       # cumulative sees the run alone
    assert sb53.status == "clear" and sb53.basis_flops["high"] == 1575 * 10**22
    assert "another developer's" in sb53.reason


def test_same_developers_fine_tune_crosses_sb53_cumulatively_not_the_one_third_rule():
    result = fine_tune(15 * E24, 99 * E24, "same")
    v = verdict(result, "us-ca-sb53-frontier-model")
    assert v.status == "crossed" and v.basis == "cumulative"
    assert v.basis_flops == {"low": 114 * E24, "central": 114 * E24, "high": 114 * E24}
    assert "base model's 9.9e25 FLOP plus the run's compute" in v.reason
    for rule_id in ("eu-ai-act-modification", "eu-ai-act-modification-systemic-risk"):
        third = verdict(result, rule_id)
        assert (third.status, third.inactive) == ("not_in_force", "out_of_scope"), rule_id
        assert "developer is the base model's own developer" in third.reason
    assert verdict(result, "kr-ai-basic-act-high-performance").status == "crossed"
    assert verdict(fine_tune(15 * E24, 99 * E24, "same"), "us-ny-raise-frontier-model",
                   date(2027, 1, 1)).status == "crossed"


def test_unknown_base_compute_uses_the_fallbacks():
    result = fine_tune(10**24, None, "other")
    gpai = verdict(result, "eu-ai-act-modification")
    assert gpai.status == "crossed" and gpai.threshold_exact == f"{10**23}/3"
    sr = verdict(result, "eu-ai-act-modification-systemic-risk")
    assert sr.status == "clear" and sr.threshold_exact == f"{E25}/3"
    assert any("unknown" in a for a in sr.assumptions)
    cumulative = verdict(fine_tune(10**24, None, "same"), "eu-ai-act-systemic-risk")
    assert "lower bound" in cumulative.reason


def test_scope_by_modality_and_lineage():
    bio = run(2 * 10**23, modality="biology")
    assert verdict(bio, "us-eo-14110-biological", date(2024, 6, 1)).status == "crossed"
    assert verdict(bio, "eu-ai-act-gpai-indicative").inactive == "out_of_scope"
    assert verdict(run(2 * 10**23, modality="image"), "eu-ai-act-gpai-indicative").status == "crossed"
    assert verdict(run(E26), "eu-ai-act-modification").inactive == "out_of_scope"          # no lineage
    small_base = verdict(fine_tune(4 * E24, 5 * E24, "other"), "eu-ai-act-modification-systemic-risk")
    assert small_base.inactive == "out_of_scope" and "more than 1.0e25" in small_base.reason


# ----- dates

def test_eo_14110_and_sb1047_are_not_in_force_with_their_dates():
    big = run(2 * E26)
    eo = verdict(big, "us-eo-14110-reporting")
    assert (eo.status, eo.inactive, eo.would_be) == ("not_in_force", "revoked", "crossed")
    assert "revoked on 2025-01-20" in eo.reason and "2023-10-30" in eo.reason
    assert verdict(big, "us-eo-14110-reporting", date(2024, 6, 1)).status == "crossed"     # in force back then
    sb1047 = verdict(big, "us-ca-sb1047-covered-model")
    assert (sb1047.status, sb1047.inactive) == ("not_in_force", "vetoed") and "vetoed on 2024-09-29" in sb1047.reason
    assert verdict(big, "us-ca-sb1047-covered-model", date(2024, 9, 1)).status == "not_in_force"  # never law
    bis = verdict(big, "us-bis-4e091")
    assert bis.inactive == "rescinded" and "2025-05-13" in bis.reason
    assert verdict(big, "us-bis-reporting-proposed").inactive == "proposed"
    assert not any(fails_gate(v) for v in (eo, sb1047, bis))


def test_raise_comes_into_force_on_2027_01_01():
    big = run(2 * E26)
    before = verdict(big, "us-ny-raise-frontier-model", date(2026, 12, 31))
    assert (before.status, before.inactive) == ("not_in_force", "not_yet_effective")
    assert "2027-01-01" in before.reason
    assert verdict(big, "us-ny-raise-frontier-model", date(2027, 1, 1)).status == "crossed"


def test_deadlines_are_dated_from_as_of():
    v = verdict(run(2 * E25), "eu-ai-act-systemic-risk", date(2026, 3, 1))
    assert v.deadlines == [{"what": "notify the Commission", "from": "threshold_known", "due": "2026-03-15",
                            "within_days": 14, "text": v.deadlines[0]["text"]}]
    assert "by 2026-03-15" in v.deadlines[0]["text"]
    at_risk = verdict(run(8 * E24, 0.3), "eu-ai-act-systemic-risk", date(2025, 12, 25))
    assert at_risk.deadlines[0]["due"] == "2026-01-08"
    assert verdict(run(E24), "eu-ai-act-systemic-risk").deadlines[0]["due"] is None         # clear: no clock
    incidents = verdict(run(2 * E26), "us-ca-sb53-frontier-model").deadlines
    assert [(d["from"], d.get("within_days"), d.get("within_hours"), d["due"]) for d in incidents] == [
        ("incident_discovered", 15, None, None), ("incident_discovered", None, 24, None)]


# ----- the output

def test_verdicts_carry_the_json_contract():
    verdicts = evaluate(fine_tune(15 * E24, 38 * E24, "other", rel=0.3).figures(), list(RULES.values()), AS_OF)
    assert [v.rule for v in verdicts] == list(RULES)
    for v in verdicts:
        d = json.loads(json.dumps(v.to_dict()))
        assert {"rule", "status", "threshold_flops", "comparison", "margin", "citation", "obligations", "deadlines",
                "basis_flops", "unverified", "blocking", "reason"} <= d.keys()
        assert d["status"] in ("crossed", "at_risk", "clear", "not_in_force")
        assert isinstance(d["threshold_flops"], int) and isinstance(d["margin"], float)
        assert d["reason"].endswith(".") and "\n" not in d["reason"]
    sb53 = next(v for v in verdicts if v.rule == "us-ca-sb53-frontier-model")
    assert any("$500 million" in u for u in sb53.unverified)


def test_the_gate_fails_on_blocking_rules_crossed_or_at_risk():
    verdicts = evaluate(run(3 * E25).figures(), load_rules(["example-lab-policy", "eu-ai-act-gpai-indicative"]), AS_OF)
    assert [v.status for v in verdicts] == ["crossed", "crossed", "crossed"]
    assert [v.rule for v in verdicts if fails_gate(v)] == ["example-lab-policy-budget"]
    assert [v.rule for v in verdicts if fails_gate(v.to_dict())] == ["example-lab-policy-budget"]


def test_estimate_alone_and_default_as_of():
    estimate = Estimate("hardware", 2 * E25, E25, 3 * E25)
    (v,) = evaluate(estimate.figures(), [RULES["eu-ai-act-systemic-risk"]], "2026-03-01")
    assert v.status == "at_risk" and v.basis_flops["central"] == 2 * E25
    assert evaluate(run(E24).figures(), [RULES["eu-ai-act-systemic-risk"]])[0].as_of == date.today().isoformat()


def test_sci_is_exact_where_four_digits_hold_the_figure_and_marked_where_not():
    assert [sci(E25), sci(114 * E24), sci(56 * 10**23), sci(E25 + 1)] == ["1.0e25", "1.14e26", "5.6e24", "~1.000e25"]
    assert [sci(0), sci(3000), sci(614_400), sci(12_345), sci(26_594_230 * 10**18)] == \
        ["0", "3.0e3", "6.144e5", "~1.235e4", "~2.659e25"]              # half up: 1.2345 -> 1.235
    assert [sci(99_996 * 10**21), sci(Fraction(E25, 3)), sci(1e25), sci(2.5e12)] == \
        ["~1.000e26", "~3.333e24", "1.0e25", "2.5e12"]                  # a float as its shortest repr
    assert [sci(114 * E24, 2), sci(26_594_230 * 10**18, 2)] == ["~1.1e26", "~2.7e25"]
    assert [two_significant(26_594_230 * 10**18), two_significant(E25)] == ["2.7e25", "1.0e25"]  # the form's rounding


def test_docs_list_every_bundled_rule():
    text = (REPO / "docs" / "rules.md").read_text()
    missing = [rule_id for rule_id in RULES if f"`{rule_id}`" not in text]
    assert not missing, f"docs/rules.md does not list {missing}"


# ----- what the rules judge: Figures, from a preflight, an Estimate or a registry history alike

def test_rules_judge_figures_and_refuse_anything_else():
    rule = RULES["eu-ai-act-systemic-risk"]
    for wrong, name in ((run(E24), "Preflight"), (Estimate("counted", E24, E24, E24), "Estimate"),
                        ({"low": 0, "high": 0, "total_flops": 0}, "dict")):
        with pytest.raises(TypeError, match=rf"^rules judge auditor\.rules\.Figures .*, got {name}$"):
            evaluate_rule(wrong, rule, AS_OF)
        with pytest.raises(TypeError, match=f"got {name}$"):
            evaluate(wrong, [rule], AS_OF)


def test_a_preflight_an_estimate_and_a_tracked_run_give_figures():
    from auditor.rules import Figures

    plan = fine_tune(15 * E24, 38 * E24, "other", rel=0.3)
    assert plan.figures() == Figures(10_500 * 10**21, 15 * E24, 19_500 * 10**21, "analytic", "text", (), True,
                                     38 * E24, "other")
    assert run(E24).figures() == Figures(E24, E24, E24, "analytic", "text")     # no lineage: not a modification
    tracked = Estimate("counted", 4 * E24, 4 * E24, 4 * E24, phases={"train": 4 * E24, "eval": 7, "rollout": 5})
    assert tracked.figures() == Figures(4 * E24, 4 * E24, 4 * E24, "counted", None,
                                        (("eval", 7), ("rollout", 5), ("train", 4 * E24)))
    assert tracked.figures().by_phase == {"eval": 7, "rollout": 5, "train": 4 * E24}
    with pytest.raises(ValueError, match=r"^Figures must hold the central figure: 2 <= 1 <= 3$"):
        Figures(2, 1, 3, "counted")
    with pytest.raises(TypeError, match=r"^Figures.high must be an int, got float$"):
        Figures(1, 1, 1.0, "counted")
    with pytest.raises(ValueError, match=r"^unknown method 'guessed'; expected one of counted, analytic, hardware$"):
        Figures(1, 1, 1, "guessed")
    with pytest.raises(ValueError, match=r"^unknown developer 'them'; expected one of same, other$"):
        Figures.of(1, 1, 1, "counted", lineage={"base_model": "b", "developer": "them"})


def test_blocking_limits_are_the_thresholds_a_tracked_run_meets():
    from auditor.rules import blocking_limits

    rules = load_rules(["example-lab-policy", "eu-ai-act-systemic-risk", "us-ca-sb1047"])
    assert blocking_limits(rules, AS_OF) == [        # the review is not blocking; SB 1047 was vetoed
        ("example-lab-policy-budget", 2 * E25, ">", ("train",)),
        ("eu-ai-act-systemic-risk", E25, ">", ("train", "rollout", "synthetic_data"))]
