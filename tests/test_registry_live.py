"""Live recording and rules on histories: ComputeAudit(registry=RunRecorder(...)) records a run's
ledger as it is flushed; gate and preflight with --registry judge a fine-tune on its base model's
recorded compute."""
import json
import warnings

import torch
from helpers import invoke
from registry_runs import E, at, daily, registry_url, three_stages, write_run  # noqa: F401  (a fixture)
from test_attacks_records import TOTAL

from auditor import ComputeAudit
from auditor.record.ledger import read_ledger
from auditor.registry.live import LIVE, RunRecorder

SB53 = "us-ca-sb53-frontier-model"




def tiny_training(run_dir, registry, steps=5):
    """The MLP of tests/test_attacks_records.py: 5 steps of batch 8 are TOTAL = 481,280 FLOPs."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ComputeAudit(run_dir, model, opt, flush_every_steps=2, registry=registry, rules=["eu-ai-act"]) as audit:
        for _ in range(steps):
            model(torch.randn(8, 32)).sum().backward()
            opt.step()
            opt.zero_grad()
    return audit


def test_a_tracked_run_is_recorded_live_as_its_ledger_flushes(registry_url, tmp_path):
    seen = []
    recorder = RunRecorder(registry_url, model="live-model", stage="pretraining")
    original = recorder._write
    recorder._write = lambda ledger: (seen.append(len(recorder._pending)), original(ledger))
    audit = tiny_training(tmp_path / "run", recorder)
    assert audit.total_flops == TOTAL
    state = read_ledger(tmp_path / "run")
    assert sum(seen) == state.count and len(seen) >= 3      # flushed in pieces: start, every 2 steps, close
    runs = json.loads(invoke("registry", "runs", "--format", "json", "--registry", registry_url).stdout)["runs"]
    [run] = runs
    assert run["counted_flops"] == TOTAL and run["closed"] and run["verified"] == LIVE
    assert run["ledger_head"] == state.head and run["dossier_digest"] is None
    # adding it afterwards verifies it and attaches its sealed dossier: still one run
    added = invoke("registry", "add", tmp_path / "run", "--model", "live-model", "--stage", "pretraining",
                   "--registry", registry_url)
    assert added.exit_code == 0 and added.output.startswith("sealed:"), added.output
    [run] = json.loads(invoke("registry", "runs", "--format", "json", "--registry", registry_url).stdout)["runs"]
    assert run["dossier_digest"] and run["verified"].startswith("verified") and run["counted_flops"] == TOTAL


def test_a_registry_that_cannot_be_reached_never_stops_training(tmp_path):
    recorder = RunRecorder("postgresql+psycopg://nobody@/x?host=/nonexistent-dir", model="m", stage="sft")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        audit = tiny_training(tmp_path / "run", recorder)
    assert audit.total_flops == TOTAL and read_ledger(tmp_path / "run").total == TOTAL
    said = [str(w.message) for w in caught if "registry: could not record" in str(w.message)]
    assert len(said) == 1 and "auditor registry add" in said[0]          # warned once, not at every flush


def test_gate_and_preflight_judge_a_fine_tune_on_its_models_recorded_history(registry_url, tmp_path):
    runs = three_stages(tmp_path / "runs")
    for stage in ("pretraining", "sft"):
        assert invoke("registry", "add", runs[stage], "--model", "m", "--stage", stage,
                      "--registry", registry_url).exit_code == 0
    configs = tmp_path / "configs"
    configs.mkdir()
    # an RL stage of m by its developer: 6ND = 6e24, range 4.2e24 .. 7.8e24; the config does not copy m's figure
    (configs / "rl.yaml").write_text("run: m-rl\nmodel: {parameters: 1.0e+11}\ndata: {tokens: 1.0e+13}\n"
                                     "lineage: {base_model: m, developer: same}\n")
    alone = json.loads(invoke("preflight", configs / "rl.yaml", "--rules", SB53, "--format", "json").stdout)
    assert alone["verdicts"][0]["status"] == "clear"       # without the registry: the run alone, a lower bound
    result = invoke("preflight", configs / "rl.yaml", "--rules", SB53, "--format", "json", "--registry", registry_url)
    assert result.exit_code == 1
    judged = json.loads(result.stdout)
    assert judged["lineage"]["base_compute_flops"] == 95 * E
    [sb53] = judged["verdicts"]
    assert sb53["status"] == "at_risk"                     # 9.5e25 + 4.2e24 .. 7.8e24 straddles 1e26
    assert sb53["basis_flops"] == {"low": 95 * E + 42 * E // 10, "central": 101 * E, "high": 95 * E + 78 * E // 10}
    assert any("as the registry" in a for a in sb53["assumptions"])
    gate = invoke("gate", configs, "--rules", SB53, "--registry", registry_url)
    assert gate.exit_code == 1 and "us-ca-sb53-frontier-model at_risk" in gate.output
    assert invoke("gate", configs, "--rules", SB53).exit_code == 0
    # another developer's fine-tune of m: 6ND = 1.5e25 (1.05e25 .. 1.95e25). A third of the 2e25 the config
    # copied by hand (6.67e24) it would cross; a third of m's recorded 9.5e25 (3.17e25) it is clear of
    (configs / "rl.yaml").unlink()
    (configs / "theirs.yaml").write_text("run: theirs\nmodel: {parameters: 1.0e+12}\ndata: {tokens: 2.5e+12}\n"
                                         "lineage: {base_model: m, developer: other, base_compute_flops: 2.0e+25}\n")
    rule = "eu-ai-act-modification-systemic-risk"

    def one_third(*registry):
        data = json.loads(invoke("preflight", configs / "theirs.yaml", "--rules", "eu-ai-act", "--format", "json",
                                 *registry).stdout)
        return {v["rule"]: v for v in data["verdicts"]}[rule]

    by_hand, recorded = one_third(), one_third("--registry", registry_url)
    assert (by_hand["status"], by_hand["threshold_exact"]) == ("crossed", f"{20 * E}/3")
    assert (recorded["status"], recorded["threshold_exact"]) == ("clear", f"{95 * E}/3")
    assert recorded["basis_flops"]["high"] == 195 * E // 10
    assert any("differs and is not used" in a for a in recorded["assumptions"])
    gate = invoke("gate", configs, "--rules", rule, "--registry", registry_url)
    assert gate.exit_code == 0, gate.output
    assert invoke("gate", configs, "--rules", rule).exit_code == 1


def test_gate_with_a_registry_that_cannot_be_opened_is_bad_input(tmp_path):
    (tmp_path / "c.yaml").write_text("run: r\nmodel: {parameters: 1.0e+9}\ndata: {tokens: 1.0e+9}\n")
    result = invoke("gate", tmp_path, "--registry", "mysql://x@y/z")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1


def test_live_recording_follows_a_resume_that_rolls_records_back(registry_url, tmp_path):
    from auditor.record.ledger_writer import Ledger

    run_dir = tmp_path / "run"
    led = Ledger(run_dir, on_flush=RunRecorder(registry_url, model="m", stage="rl"))
    for step in range(1, 6):                        # 5 steps of 100 training FLOPs and 10 of rollouts each
        led.append(step, 100, eval_flops=10)
    led._release()                                  # a crash: flushed, never closed
    led, carried = Ledger.resume(run_dir, 3, on_flush=RunRecorder(registry_url, model="m", stage="rl"))
    assert carried == 300                           # steps 4 and 5 rolled back, to be trained again
    for step in (4, 5, 6):
        led.append(step, 100, eval_flops=10)
    led.close()
    state = read_ledger(run_dir)
    assert state.total == 600
    [run] = json.loads(invoke("registry", "runs", "--format", "json", "--registry", registry_url).stdout)["runs"]
    # training 600 and the rollouts of the 6 steps that count (the rolled-back two's are gone): 60
    assert (run["training_flops"], run["rollout_flops"], run["counted_flops"]) == (600, 60, 660)
    assert run["ledger_head"] == state.head and run["closed"]
    import sqlalchemy as sa

    from auditor.registry.schema import Point
    from auditor.registry.store import Registry
    with Registry(registry_url).engine.connect() as conn:
        seqs = conn.execute(sa.select(Point.seq, Point.counted).order_by(Point.seq)).all()
    assert [s for s, _ in seqs] == [r["seq"] for r in state.records]
    assert seqs[-1][1] == 660 and [c for _, c in seqs][:5] == [0, 110, 220, 330, 330]
