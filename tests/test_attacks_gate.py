"""Attacks on the CI gate: a pull request's configs trying to run code, pick their own judge, end
the gate early, or poison what it caches. Each payload is one the gate once gave way to."""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import invoke

AS_OF = "2026-06-01"
TINY = ("{model_type: llama, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, "
        "num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 100}")
DATA = "data: {tokens: 15.6e12, seq_len: 8192}\n"
BIG = "run: big-run\nmodel: {parameters: 405e9}\n" + DATA          # 3.8e25: crosses the EU presumption
# 16,384 H100s for 1,200 h at 40 %: about 4.6e25 by the hardware method
PLAN = "hardware: {accelerator: H100-SXM, count: 16384, hours: 1200, utilization: 0.4}\n"




def cases(junit: Path) -> dict[str, list[tuple[str, str | None]]]:
    """config path -> [(test case name, 'failure'/'error'/'skipped' type or None)]."""
    out: dict[str, list] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = next((child.get("type") or child.tag for child in case if child.tag in
                        ("failure", "error", "skipped")), None)
        out.setdefault(case.get("classname"), []).append((case.get("name"), outcome))
    return out


@pytest.fixture
def payload_module(tmp_path, monkeypatch):
    """A module the configs name, importable from the gate's process: importing it, or calling
    its function, leaves a marker file."""
    marker = tmp_path / "PWNED"
    (tmp_path / "evil_payload_mod.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
        f"def build(**kw):\n    Path({str(marker)!r}).write_text('called')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("evil_payload_mod", None)
    yield marker
    sys.modules.pop("evil_payload_mod", None)


def hostile_configs(folder: Path, marker: Path) -> dict[str, str]:
    script = folder.parent / "script.py"
    script.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    configs = {
        "os-system": f"run: a\nmodel: {{factory: 'os:system', kwargs: {{command: 'touch {marker}'}}}}\n{DATA}",
        "runpy": f"run: b\nmodel: {{factory: 'runpy:run_path', kwargs: {{path_name: '{script}'}}}}\n{DATA}",
        "subprocess": f"run: c\nmodel: {{factory: 'subprocess:getoutput', kwargs: {{cmd: 'touch {marker}'}}}}\n{DATA}",
        "import-side-effect": f"run: d\nmodel: {{factory: 'evil_payload_mod:build'}}\n{DATA}",
        "this": f"run: e\nmodel: {{factory: 'this:s'}}\n{DATA}",
        "exit-zero": f"run: f\nmodel: {{factory: 'builtins:exit', kwargs: {{code: 0}}}}\n{DATA}",
        # a factory and a hardware plan: judged by the plan, and crossing
        "exit-with-plan": f"run: g\nmodel: {{factory: 'builtins:exit', kwargs: {{code: 0}}}}\n{DATA}{PLAN}",
        "zz-big": BIG,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in configs.items():
        (folder / f"{name}.yaml").write_text(text)
    return configs


def test_attack_the_gate_runs_no_code_a_config_names(tmp_path, payload_module):
    folder = tmp_path / "configs"
    configs = hostile_configs(folder, payload_module)
    junit = tmp_path / "gate.xml"
    result = invoke("gate", folder, "--as-of", AS_OF, "--junit", junit)
    assert not payload_module.exists()                            # nothing ran, nothing was imported
    assert "evil_payload_mod" not in sys.modules and "The Zen of Python" not in result.output
    assert result.exit_code == 1, result.output                  # every config checked; the big one crosses
    found = cases(junit)
    assert sorted(Path(k).stem for k in found) == sorted(configs)
    for name in ("os-system", "runpy", "subprocess", "import-side-effect", "this", "exit-zero"):
        assert found[str(folder / f"{name}.yaml")] == [("trusted-run", "needs_trusted_run")], name
    planned = dict(found[str(folder / "exit-with-plan.yaml")])
    assert planned["eu-ai-act-systemic-risk"] == "crossed"        # judged by its hardware plan
    assert dict(found[str(folder / "zz-big.yaml")])["eu-ai-act-systemic-risk"] == "crossed"
    assert "needs a trusted run: " in result.output and "is not imported" in result.output


def test_attack_an_allowed_factory_that_exits_does_not_end_the_gate(tmp_path, payload_module):
    folder = tmp_path / "configs"
    (folder).mkdir()
    (folder / "a-exit.yaml").write_text(f"run: f\nmodel: {{factory: 'builtins:exit', kwargs: {{code: 0}}}}\n{DATA}")
    (folder / "b-big.yaml").write_text(BIG)
    junit = tmp_path / "gate.xml"
    result = invoke("gate", folder, "--as-of", AS_OF, "--junit", junit, "--allow-factory", "builtins:*")
    assert result.exit_code == 2, result.output                  # the exit is that config's error, not the gate's
    found = cases(junit)
    assert found[str(folder / "a-exit.yaml")] == [("config", "bad_input")]
    assert dict(found[str(folder / "b-big.yaml")])["eu-ai-act-systemic-risk"] == "crossed"
    assert "builtins:exit raised SystemExit" in result.output


def test_an_allowed_factory_is_imported_and_counted(tmp_path, payload_module, monkeypatch):
    (tmp_path / "good_models_mod.py").write_text(
        "import torch\ndef build(width=8):\n"
        "    return torch.nn.Sequential(torch.nn.Embedding(100, width), torch.nn.Linear(width, width))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "run.yaml"
    config.write_text("run: ok\nmodel: {factory: 'good_models_mod:build', kwargs: {width: 8}}\n"
                      "data: {tokens: 1600, seq_len: 16}\n")
    refused = invoke("gate", config, "--as-of", AS_OF)
    assert refused.exit_code == 1 and "needs a trusted run" in refused.output
    policy = tmp_path / "policy.yaml"
    policy.write_text("allow_factory: ['good_models_*:build']\nrules: [eu-ai-act]\n")
    allowed = invoke("gate", config, "--as-of", AS_OF, "--policy", policy)
    assert allowed.exit_code == 0, allowed.output
    # 1,600 tokens x (forward 2*8*8, weight and input gradients 2 x 2*8*8) = 614,400
    assert " 6.144e5 " in allowed.output


@pytest.mark.parametrize("rules, outcome", [
    ("[us-eo-14110-reporting]", "crossed"),        # a revoked rule as its only judge
    ("[eu-ai-act-gpai-indicative]", "crossed"),    # a non-blocking rule as its only judge
])
def test_attack_a_config_cannot_choose_a_lenient_judge(tmp_path, rules, outcome):
    config = tmp_path / "big.yaml"
    config.write_text(BIG + f"rules: {rules}\n")
    junit = tmp_path / "gate.xml"
    result = invoke("gate", config, "--as-of", AS_OF, "--junit", junit)
    assert result.exit_code == 1, result.output
    assert dict(cases(junit)[str(config)])["eu-ai-act-systemic-risk"] == outcome


def test_attack_a_config_cannot_shadow_a_bundled_rule_with_its_own_copy(tmp_path):
    from auditor.resources import resource_dir

    (tmp_path / ".git").mkdir()
    copy = (resource_dir("thresholds") / "eu-ai-act.yaml").read_text().replace("1.0e+25", "1.0e+40")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "eu-ai-act.yaml").write_text(copy)
    config = tmp_path / "big.yaml"
    config.write_text(BIG + "rules: [rules/eu-ai-act.yaml]\n")
    junit = tmp_path / "gate.xml"
    result = invoke("gate", config, "--as-of", AS_OF, "--junit", junit)
    assert result.exit_code == 2, result.output
    assert cases(junit)[str(config)] == [("config", "bad_input")]   # never a passing eu-ai-act-systemic-risk
    assert "cannot replace one" in result.output
    # The gate's own --rules: a config's rules add to them (a rule of its own is fine)
    (tmp_path / "rules" / "own.yaml").write_text(
        "id: own-budget\ntitle: own\njurisdiction: lab\ncitation: {text: x, url: 'https://example.org'}\n"
        "threshold_flops: 1e20\ncomparison: '>'\nbasis: training\nstatus: in_force\nblocking: true\n")
    config.write_text(BIG + "rules: [rules/own.yaml]\n")
    result = invoke("gate", config, "--as-of", AS_OF, "--junit", junit, "--rules", "us-ca-sb53")
    assert [name for name, _ in cases(junit)[str(config)]] == ["us-ca-sb53-frontier-model", "own-budget"]
    # preflight of one's own config keeps the config's rules as its judge
    own = json.loads(invoke("preflight", config, "--format", "json", "--as-of", AS_OF).stdout)
    assert [v["rule"] for v in own["verdicts"]] == ["own-budget"]


def test_attack_a_config_rule_file_outside_the_repository(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (tmp_path / "outside.yaml").write_text("id: x\n")
    config = repo / "big.yaml"
    config.write_text(BIG + "rules: [../outside.yaml]\n")
    result = invoke("gate", config, "--as-of", AS_OF)
    assert result.exit_code == 2 and "outside the config's repository" in result.output


def tiny_config(tmp_path: Path) -> Path:
    config = tmp_path / "tiny.yaml"
    config.write_text(f"run: tiny\nmodel: {{hf_config: {TINY}}}\ndata: {{tokens: 16000, seq_len: 16}}\n")
    return config


def counted(path: Path) -> int:
    result = invoke("preflight", path, "--format", "json")
    assert result.exit_code == 0, result.output
    return next(e["flops"] for e in json.loads(result.stdout)["estimates"] if e["method"] == "counted")


def test_attack_an_edited_count_cache_entry_is_recounted(tmp_path, monkeypatch):
    from auditor import preflight

    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(preflight, "_COUNTED", {})
    config = tiny_config(tmp_path)
    truth = counted(config)
    (entry,) = (tmp_path / "cache").glob("*.json")
    data = json.loads(entry.read_text())
    for record in data["value"]["step"]["records"]:               # [op, module, phase, FLOPs]
        record[-1] //= 10 ** 4
    entry.write_text(json.dumps(data))                           # the numbers divided, the MAC left as it was
    monkeypatch.setattr(preflight, "_COUNTED", {})
    assert counted(config) == truth


def test_attack_a_cache_restored_from_elsewhere_is_not_trusted(tmp_path, monkeypatch):
    """A cache written under another secret (a CI cache a pull request filled) verifies nowhere else."""
    from auditor import preflight
    from auditor.counting import cache

    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AUDITOR_CACHE_SECRET", "the attacker's")
    monkeypatch.setattr(preflight, "_COUNTED", {})
    config = tiny_config(tmp_path)
    truth = counted(config)
    (entry,) = (tmp_path / "cache").glob("*.json")
    data = json.loads(entry.read_text())
    for record in data["value"]["step"]["records"]:               # forged, and MACed with the attacker's secret
        record[-1] //= 10 ** 4
    data["mac"] = cache._mac(b"the attacker's", data["key"], data["value"])
    entry.write_text(json.dumps(data))
    monkeypatch.setenv("AUDITOR_CACHE_SECRET", "this machine's")
    assert cache.load(data["key"]) is None
    monkeypatch.setattr(preflight, "_COUNTED", {})
    assert counted(config) == truth


def test_the_cache_key_holds_the_counting_codes_fingerprint(monkeypatch):
    from auditor.counting import cache

    payload = {"hf_config": {"model_type": "llama"}, "seq_len": 16}
    before = cache.cache_key(payload)
    assert len(cache.fingerprint()) == 64
    monkeypatch.setattr(cache, "fingerprint", lambda: "0" * 64)   # a formula changed: another key
    assert cache.cache_key(payload) != before
