"""What a reviewer reads first: the blocking rules in the headline, methods that disagree said out
loud, a plan's sealed record, the documentation passages, lenient accelerator names, folded
module tables, and chart labels that never overlap (measured in Chromium)."""
import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import invoke

from auditor.methods.energy import energy_from_plan
from auditor.methods.hardware import find_accelerator
from auditor.record import dossier
from auditor.report.breakdown import _fold_repeats, natural_key
from auditor.report.headline import headline
from auditor.report.views import dossier_html

AS_OF = "2026-06-01"




def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# 27B parameters on 6e13 tokens: 6ND = 9.72e24, range 6.8e24..1.26e25: the EU presumption at risk
AT_RISK = "run: r27b\nmodel: {parameters: 27e9}\ndata: {tokens: 6e13}\n"


def test_the_headline_names_the_blocking_rule_at_risk_before_non_blocking_crossings(tmp_path):
    data = json.loads(invoke("preflight", write(tmp_path, AT_RISK), "--format", "json", "--as-of", AS_OF).stdout)
    summary = headline(data["verdicts"])
    assert summary["status"] == "at_risk" and not summary["passes"]
    assert summary["text"] == "At risk of crossing eu-ai-act-systemic-risk."
    assert summary["deadline"] == "notify the Commission by 2026-06-15 (eu-ai-act-systemic-risk)"
    assert summary["also"] == "Not blocking: eu-ai-act-gpai-indicative crossed."
    text = invoke("preflight", tmp_path / "run.yaml", "--as-of", AS_OF).stdout
    assert "FAIL: At risk of crossing eu-ai-act-systemic-risk." in text
    assert text.index("FAIL:") < text.index("rules, as of")


def test_a_clear_run_passes_and_a_non_blocking_crossing_does_not_fail_it(tmp_path):
    path = write(tmp_path, "run: small\nmodel: {parameters: 7e9}\ndata: {tokens: 3e12}\n")   # 1.26e23
    data = json.loads(invoke("preflight", path, "--format", "json", "--as-of", AS_OF).stdout)
    summary = headline(data["verdicts"])
    assert summary["passes"] and summary["status"] == "clear"
    assert summary["text"].startswith("Clear of every blocking rule in force (")
    assert "eu-ai-act-gpai-indicative" in summary["also"]


def test_the_example_policy_is_not_judged_unless_named(tmp_path):
    path = write(tmp_path, "run: big\nmodel: {parameters: 7e9}\ndata: {tokens: 1e15}\n")     # 4.2e25
    by_default = json.loads(invoke("preflight", path, "--format", "json", "--as-of", AS_OF).stdout)
    assert not any(v["rule"].startswith("example-lab-policy") for v in by_default["verdicts"])
    named = json.loads(invoke("preflight", path, "--format", "json", "--as-of", AS_OF, "--rules",
                              "example-lab-policy").stdout)
    assert [v["rule"] for v in named["verdicts"]] == ["example-lab-policy-review", "example-lab-policy-budget"]


def test_a_plans_json_is_a_sealed_record_that_verify_accepts_and_one_byte_breaks(tmp_path):
    result = invoke("preflight", write(tmp_path, AT_RISK), "--format", "json", "--as-of", AS_OF)
    assert result.exit_code == 1                             # at risk of a blocking rule
    plan = tmp_path / "plan.json"
    plan.write_text(result.stdout)                          # as `> plan.json` writes it
    data = json.loads(plan.read_text())
    for key in ("run", "total_flops", "low", "high", "estimates", "verdicts", "uncovered_ops"):  # the contract
        assert key in data
    assert data["total_flops"] == 6 * 27 * 10 ** 9 * 6 * 10 ** 13 and data["kind"] == "preflight"
    assert invoke("verify", plan).exit_code == 0
    raw = plan.read_bytes()
    at = raw.index(b'"total_flops": ') + len(b'"total_flops": ')
    plan.write_bytes(raw[:at] + (b"8" if raw[at:at + 1] != b"8" else b"7") + raw[at + 1:])
    result = invoke("verify", plan)
    assert result.exit_code == 1 and "tampered" in result.output


def test_a_signed_plan_verifies_with_its_key(tmp_path):
    from auditor.record.signing import new_keypair

    key, pub = new_keypair(tmp_path / "reviewer")
    result = invoke("preflight", write(tmp_path, AT_RISK), "--format", "json", "--signing-key", key)
    (tmp_path / "plan.json").write_text(result.stdout)
    verified = invoke("verify", tmp_path / "plan.json", "--trusted-key", pub)
    assert verified.exit_code == 0 and "signed by reviewer" in verified.output


def test_methods_that_disagree_are_said_out_loud(tmp_path):
    # 6ND = 6 x 7e9 x 1e12 = 4.2e22; the plan: 1,024 H100 for 2,000 h at 40 % = 2.918e24 (69.5x)
    path = write(tmp_path, "run: mismatch\nmodel: {parameters: 7e9}\ndata: {tokens: 1e12}\n"
                           "hardware: {accelerator: H100-SXM, count: 1024, hours: 2000, utilization: 0.4}\n")
    data = json.loads(invoke("preflight", path, "--format", "json").stdout)
    (said,) = data["disagreements"]
    at_full = 1024 * 2000 * 3600 * 989_400_000_000_000
    assert said["methods"] == ["hardware", "analytic"]
    assert said["ratio"] == pytest.approx(at_full * 0.4 / 4.2e22)
    assert f"would run at {4.2e22 / at_full * 100:.2g}% utilization" in said["text"]
    assert "Methods disagree" in dossier_html(dossier.build(data, run="mismatch"))


def test_methods_within_thirty_percent_say_nothing(tmp_path):
    # 6ND 4.2e22 against a plan giving 4.16e22 at full utilization x 0.4 ... within 30 %
    hours = 4.2e22 / (64 * 3600 * 989.4e12 * 0.4)
    path = write(tmp_path, f"run: ok\nmodel: {{parameters: 7e9}}\ndata: {{tokens: 1e12}}\n"
                           f"hardware: {{accelerator: H100-SXM, count: 64, hours: {hours:.1f}, utilization: 0.4}}\n")
    assert json.loads(invoke("preflight", path, "--format", "json").stdout)["disagreements"] == []


def test_energy_from_the_plan_is_count_times_hours_times_rated_power():
    energy = energy_from_plan("H100-SXM", 16384, 1882)
    assert energy["wh"] == 16384 * 1882 * 700 == 21_584_281_600
    assert energy["low_wh"] == 16384 * 1882 * 700 * 6 // 10
    assert energy["high_wh"] == 16384 * 1882 * 700 * 16 // 10
    assert energy_from_plan("TPU-v5p", 1, 1) is None        # no confirmed rated power: none estimated


def test_the_documentation_form_carries_compute_time_and_energy(tmp_path):
    path = write(tmp_path, "run: planned\nmodel: {parameters: 7e9}\ndata: {tokens: 1e12}\n"
                           "hardware: {accelerator: A100-80GB, count: 64, hours: 300, utilization: 0.4}\n")
    text = invoke("preflight", path).stdout
    assert "Training time: 300 h planned on 64 x NVIDIA A100 SXM4 (40GB / 80GB)" in text
    assert f"Energy consumption: {64 * 300 * 400 / 1e6:,.1f} MWh" in text
    assert "accelerator table row A100-SXM" in text          # the row chosen for the spelling given


@pytest.mark.parametrize("spelling, row", [
    ("A100-80GB", "A100-SXM"), ("NVIDIA A100 40GB", "A100-SXM"), ("H100 PCIe", "H100-PCIe"),
    ("MI300X", "MI300X"), ("AMD Instinct MI300X", "MI300X"), ("h100_sxm", "H100-SXM"), ("Tesla V100", "V100-SXM2"),
])
def test_accelerator_names_are_matched_leniently(spelling, row):
    assert find_accelerator(spelling).id == row


def test_an_unknown_accelerator_is_still_refused_with_the_table(tmp_path):
    path = write(tmp_path, "run: x\nmodel: {parameters: 7e9}\ndata: {tokens: 1e12}\n"
                           "hardware: {accelerator: A10, count: 1, hours: 1}\n")
    result = invoke("preflight", path)
    assert result.exit_code == 2 and "expected an accelerator id from the table" in result.stderr


def test_module_tables_sort_naturally_and_fold_identical_blocks():
    rows = [(f"model.layers.{i}", 10, 20) for i in range(46)] + [("model.layers.3.mlp", 1, 2), ("lm_head", 5, 10)]
    folded = sorted(_fold_repeats(rows), key=lambda r: natural_key(r[0]))
    assert folded == [("lm_head", 5, 10, 1), ("model.layers.3.mlp", 1, 2, 1), ("model.layers.{0..45}", 10, 20, 46)]
    assert sorted(["layers.10", "layers.2", "layers.1"], key=natural_key) == ["layers.1", "layers.2", "layers.10"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("AUDITOR_REQUIRE_BROWSER") == "1"


@pytest.mark.skipif(not CHROMIUM and not REQUIRED, reason="no chromium on PATH")
def test_threshold_labels_never_overlap_in_chromium(tmp_path):
    """Every rule's line is labelled with its names; their boxes, as Chromium lays them out, are
    disjoint (1e25, 1e26 and a budget at 2e25 close together)."""
    playwright = pytest.importorskip("playwright.sync_api")
    budget = tmp_path / "budget.yaml"
    budget.write_text("id: our-budget-with-a-long-name\ntitle: b\njurisdiction: lab\n"
                      "citation: {text: x, url: 'https://example.org'}\nthreshold_flops: 2e25\ncomparison: '>'\n"
                      "basis: training\nstatus: in_force\nblocking: true\n")
    config = write(tmp_path, AT_RISK)
    out = tmp_path / "plan.html"
    invoke("preflight", config, "--html", out, "--as-of", AS_OF, "--rules", budget, "--rules", "eu-ai-act",
           "--rules", "us-ca-sb53", "--rules", "kr-ai-basic-act")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1000, "height": 1400})
        page.goto(out.as_uri())
        boxes = page.evaluate("""() => [...document.querySelectorAll('svg text.threshold')].map(t => {
            const b = t.getBoundingClientRect(); return {text: t.textContent, x0: b.left, x1: b.right,
            y0: b.top, y1: b.bottom}; })""")
        svg = page.evaluate("() => document.querySelector('svg').getBoundingClientRect().right")
        banner = page.inner_text("#headline")
        browser.close()
    assert len(boxes) == 4 and any("our-budget-with-a-long-name" in b["text"] for b in boxes)
    for i, a in enumerate(boxes):
        assert a["x1"] <= svg + 1                            # not cut off at the right edge
        for b in boxes[i + 1:]:
            apart = a["x1"] <= b["x0"] or b["x1"] <= a["x0"] or a["y1"] <= b["y0"] or b["y1"] <= a["y0"]
            assert apart, (a, b)
    assert banner.startswith("FAIL: At risk of crossing eu-ai-act-systemic-risk")
