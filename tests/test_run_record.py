"""A tracked run's dossier says what was run: the breakdown of a training step (never an eval
pass), the model, tokens, context, stage, hardware, energy, who ran it and how it ended; verify
holds the times and resumes to the ledger."""
import json
import sys
import types
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from budgets import budget_rule
from helpers import invoke

from auditor import ComputeAudit
from auditor.methods.measured_energy import EnergyMeter, combine
from auditor.record import dossier
from auditor.report.breakdown import breakdown_rows
from auditor.report.views import dossier_html, dossier_markdown, dossier_text
from auditor.tracking import ComputeBudgetExceeded

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "dossier-schema.json").read_text())

V, D, H, B, S = 50, 16, 32, 4, 6      # vocabulary, width, hidden, batch, sequence
EVAL_B = 3


class TokenMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(V, D)
        self.up = torch.nn.Linear(D, H)
        self.down = torch.nn.Linear(H, V)

    def forward(self, input_ids):
        return self.down(torch.relu(self.up(self.embed(input_ids))))


def model_and_opt():
    torch.manual_seed(0)
    model = TokenMLP()
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


# Closed forms a batch of t tokens: each linear is 2 x in x out a token forward; its backward the
# weight's gradient (the same) and the input's (the same again: the embedding's output needs one).
def forward(t):
    return 2 * t * (D * H + H * V)


def backward(t):
    return 2 * forward(t)


PARAMETERS = V * D + D * H + H + H * V + V


def ids(batch, seed):
    return torch.randint(0, V, (batch, S), generator=torch.Generator().manual_seed(seed))


def train(run, model, opt, steps, *, evaluate=True):
    for step in range(steps):
        loss = model(ids(B, step)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        if evaluate:
            with torch.no_grad():  # an evaluation pass of another shape: its own counting window
                model(ids(EVAL_B, 100 + step))


def test_the_breakdown_is_of_a_training_step_not_the_eval_pass_after_it(tmp_path):
    model, opt = model_and_opt()
    with ComputeAudit(tmp_path / "run", model, opt) as run:
        train(run, model, opt, 3)
    assert run.eval_flops == 3 * forward(EVAL_B * S)
    d = dossier.load(tmp_path / "run")
    rows = {r["name"]: r for r in breakdown_rows(d, "by_module")}
    t = B * S
    assert (rows["up"]["forward"], rows["up"]["backward"]) == (2 * t * D * H, 4 * t * D * H)
    assert (rows["down"]["forward"], rows["down"]["backward"]) == (2 * t * H * V, 4 * t * H * V)
    ops = breakdown_rows(d, "by_op")
    assert sum(r["backward"] for r in ops) == backward(t) and sum(r["forward"] for r in ops) == forward(t)
    assert d["estimates"][0]["breakdown"]["step"] == 1
    html = dossier_html(d)
    assert "Breakdown of one counted training step" in html and "Of training step 1: " in html


def test_a_tracked_dossier_says_what_was_run(tmp_path):
    model, opt = model_and_opt()
    with ComputeAudit(tmp_path / "run", model, opt, stage="sft", operator="alice@lab",
                      lineage={"base_model": "base-7b", "developer": "same"}) as run:
        train(run, model, opt, 3)
    t = dossier.load(tmp_path / "run")["tracked"]
    assert t["model"] == {"class": "test_run_record.TokenMLP", "parameters": PARAMETERS,
                          "trainable_parameters": PARAMETERS}
    assert t["tokens"]["count"] == 3 * B * S and t["tokens"]["how"].startswith("counted: ")  # eval tokens not
    assert t["context_length"] == {"longest_seen": S}
    assert (t["stage"], t["operator"], t["lineage"]) == ("sft", "alice@lab", {"base_model": "base-7b",
                                                                               "developer": "same"})
    assert t["hardware"] == {"world_size": 1, "devices": [{"name": t["hardware"]["devices"][0]["name"], "count": 1}]}
    assert t["hardware"]["devices"][0]["name"].startswith("CPU (")
    assert "no rated power for CPU" in t["energy"]["reason"]
    records = [json.loads(line) for line in (tmp_path / "run" / "ledger.jsonl").read_text().splitlines()]
    assert (t["started"], t["ended"]) == (records[0]["time"], records[-1]["time"])
    assert t["ending"] == {"how": "finished", "step": 3} and t["resumes"] == []
    text = dossier_text(dossier.load(tmp_path / "run"))
    assert "stage: fine-tuning (supervised)" in text and f"tokens seen: {3 * B * S:,} (counted" in text
    assert "how it ended: finished at step 3" in text and "run by: alice@lab" in text


def test_declared_tokens_and_an_unknown_stage_are_said_so(tmp_path):
    model, opt = model_and_opt()
    with ComputeAudit(tmp_path / "run", model, opt, tokens=1_000_000) as run:
        train(run, model, opt, 1, evaluate=False)
    d = dossier.load(tmp_path / "run")
    assert d["tracked"]["tokens"] == {"count": 1_000_000, "how": "declared (tokens=)"}
    assert d["tracked"]["stage"] == "unknown"
    assert "stage: unknown (not given: ComputeAudit(stage=...)" in dossier_text(d)


@pytest.mark.parametrize("option, value, said", [
    ("stage", "pretrain", "stage: got 'pretrain'; expected one of pretraining, sft, rl, distillation, merge, other"),
    ("tokens", -1, "tokens: got -1; expected a whole number of tokens >= 0"),
    ("tokens", 1.5, "tokens: got 1.5; expected a whole number of tokens >= 0"),
])
def test_bad_run_facts_are_refused_when_the_audit_is_made(option, value, said):
    with pytest.raises(ValueError) as caught:
        ComputeAudit(**{option: value})
    assert str(caught.value) == said


def stopped_run(tmp_path, steps_allowed=3):
    per_step = forward(B * S) + backward(B * S)
    rule = budget_rule(tmp_path / "budget.yaml", "tiny-budget", steps_allowed * per_step + per_step // 2)
    model, opt = model_and_opt()
    with pytest.raises(ComputeBudgetExceeded, match="tiny-budget"):
        with ComputeAudit(tmp_path / "run", model, opt, rules=[rule], on_exceed="stop") as run:
            train(run, model, opt, 10)
    return run, per_step


def test_a_stopped_run_says_so_in_its_headline_and_record(tmp_path):
    run, per_step = stopped_run(tmp_path)
    assert run.total_flops == 3 * per_step and not run.running
    d = dossier.load(tmp_path / "run")
    ending = d["tracked"]["ending"]
    assert (ending["how"], ending["limit"], ending["step"], ending["flops"]) == ("stopped", "tiny-budget", 3,
                                                                                3 * per_step)
    first = "Stopped by the guard at step 3, at "
    assert dossier_text(d).splitlines()[1].startswith("PASS: " + first)
    assert f"<b>PASS</b>: {first}" in dossier_html(d)
    assert f"**PASS**: {first}" in dossier_markdown(d)
    assert invoke("verify", tmp_path / "run").exit_code == 0


def test_a_run_that_fails_is_recorded_as_failed(tmp_path):
    model, opt = model_and_opt()
    with pytest.raises(RuntimeError, match="data loader died"):
        with ComputeAudit(tmp_path / "run", model, opt) as run:
            train(run, model, opt, 2)
            raise RuntimeError("data loader died")
    d = dossier.load(tmp_path / "run")
    assert d["tracked"]["ending"] == {"how": "failed", "error": "RuntimeError", "step": 2}
    assert "Ended by an error (RuntimeError) at step 2" in dossier_text(d).splitlines()[1]


def crashed_and_resumed(tmp_path):
    """Two steps and a checkpoint, a third step, a crash mid-write (a torn line), then a restart
    from the checkpoint that runs two steps more."""
    run_dir = tmp_path / "run"
    model, opt = model_and_opt()
    run = ComputeAudit(run_dir, model, opt).start()
    train(run, model, opt, 2, evaluate=False)
    run.checkpoint()
    train(run, model, opt, 1, evaluate=False)
    run.sync()
    run._ledger.flush()
    with open(run_dir / "ledger.jsonl", "ab") as fh:
        fh.write(b'{"seq": 9, "ti')             # what kill -9 in the middle of a write leaves
    run._ledger._release()                       # the process is gone: nothing else is written
    for handle in run._handles:                  # and its hooks with it
        handle.remove()
    with ComputeAudit(run_dir, model, opt, resume_step=2) as resumed:
        train(resumed, model, opt, 2, evaluate=False)
    return run_dir, resumed


def test_a_crashed_and_resumed_run_says_where_it_resumed(tmp_path):
    run_dir, resumed = crashed_and_resumed(tmp_path)
    d = dossier.load(run_dir)
    records = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    resume = next(r for r in records if r["kind"] == "resume")
    assert d["tracked"]["resumes"] == [{"step": 2, "time": resume["time"], "after_crash": True,
                                        "rolled_back_records": 1}]
    assert d["total_flops"] == resumed.total_flops == 4 * (forward(B * S) + backward(B * S))
    said = f"resumed: 1 time: at step 2 ({resume['time']}, after a crash, 1 record after the checkpoint rolled back)"
    assert said in dossier_text(d)
    assert d["tracked"]["tokens"] == {"count": 2 * B * S, "how": "counted: the elements of the integer token input "
                                      "(input_ids, else the first positional argument) of every training call, "
                                      "padding included; since the resume at step 2"}
    assert invoke("verify", run_dir).exit_code == 0


@pytest.mark.parametrize("field, value", [("resumes", []), ("started", "2020-01-01T00:00:00Z"),
                                          ("ended", "2030-01-01T00:00:00Z")])
def test_attack_a_resealed_dossier_that_hides_a_resume_or_moves_its_times_is_caught(tmp_path, field, value):
    run_dir, _ = crashed_and_resumed(tmp_path)
    data = dossier.load(run_dir)
    data["tracked"][field] = value
    dossier.write(dossier.seal(data), run_dir / "dossier.json")   # a consistent seal: only the ledger can tell
    result = invoke("verify", run_dir)
    assert result.exit_code == 1
    assert f"tracked.{field} is {str(value)[:60]} but the ledger says " in result.output


class FakeNVML(types.ModuleType):
    """NVML's energy counter as the driver reports it: millijoules since it loaded, per handle."""

    def __init__(self, counters):
        super().__init__("pynvml")
        self.counters = counters

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self.counters[handle]


def test_nvml_energy_is_the_counters_difference_summed_over_ranks():
    nvml = FakeNVML({"gpu0": 1_000, "gpu1": 2_000})
    meter = EnergyMeter("nvml", (nvml, ["gpu0", "gpu1"]), [1_000, 2_000])
    nvml.counters = {"gpu0": 1_000 + 5 * 3_600_000, "gpu1": 2_000 + 7 * 3_600_000}  # 5 Wh and 7 Wh
    reading = meter.read(0.5)
    assert reading == {"kind": "nvml", "wh": Fraction(12), "devices": 2}
    other_rank = {"kind": "nvml", "wh": Fraction(6), "devices": 1}
    hardware, energy = combine([{"device": "NVIDIA H100 80GB HBM3", "energy": reading},
                                {"device": "NVIDIA H100 80GB HBM3", "energy": other_rank}], 0.5)
    assert hardware == {"world_size": 2, "devices": [{"name": "NVIDIA H100 80GB HBM3", "count": 2}]}
    assert (energy["wh"], energy["low_wh"], energy["high_wh"], energy["measured"]) == (18, 17, 19, True)
    assert energy["method"].startswith("measured: each GPU's NVML total-energy counter")


def test_without_a_counter_the_energy_is_rated_power_times_the_runs_hours():
    _, energy = combine([{"device": "NVIDIA H100 80GB HBM3", "energy": None}] * 4, 2.5)
    assert (energy["wh"], energy["low_wh"], energy["high_wh"]) == (4 * 700 * 5 // 2, 4 * 700 * 5 * 6 // 20,
                                                                    4 * 700 * 5 * 16 // 20)
    assert "wall-clock hours" in energy["method"] and "not measured" in energy["method"]
    _, mixed = combine([{"device": "NVIDIA H100 80GB HBM3", "energy": {"kind": "nvml", "wh": Fraction(1)}},
                        {"device": "NVIDIA H100 80GB HBM3", "energy": None}], 1)
    assert "wh" in mixed and not mixed.get("measured")   # one rank unmeasured: no sum passed off as measured


def test_without_pynvml_or_codecarbon_there_is_no_meter(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)      # not installed
    monkeypatch.setitem(sys.modules, "codecarbon", None)
    assert EnergyMeter.start(None).kind is None


def test_the_tracked_markdown_renders_in_a_gfm_parser_with_the_verdict_first(tmp_path):
    from markdown_it import MarkdownIt

    per_step = forward(B * S) + backward(B * S)
    rule = budget_rule(tmp_path / "budget.yaml", "tiny-budget", per_step,
                       "obligations: ['sign-off by the compute committee']\n")
    model, opt = model_and_opt()
    with pytest.warns(UserWarning, match="tiny-budget"):
        with ComputeAudit(tmp_path / "run", model, opt, rules=[rule], on_exceed="warn", stage="pretraining") as run:
            train(run, model, opt, 2)
    html = MarkdownIt("commonmark").enable("table").render(dossier_markdown(dossier.load(tmp_path / "run")))
    assert html.count("<table>") == 4  # what was run, the estimates, the rules, the documentation form
    assert "<td>Stage</td>\n<td>pre-training</td>" in html
    assert "<td>How it ended</td>\n<td>finished at step 2</td>" in html
    assert "<p><strong>FAIL</strong>: Crosses tiny-budget.</p>" in html
    assert "<li>sign-off by the compute committee</li>" in html
    assert html.index("FAIL") < html.index("Why:") < html.index("What follows:") < html.index("<table>")


def test_the_schema_names_every_tracked_field_the_tracker_writes():
    from auditor.record.run_facts import DOSSIER_KEYS

    described = SCHEMA["properties"]["tracked"]["properties"]
    assert set(DOSSIER_KEYS) <= set(described)
    assert all(described[k].get("description") for k in DOSSIER_KEYS)


def test_finished_stopped_failed_and_resumed_dossiers_meet_the_schema(tmp_path):
    import jsonschema

    validator = jsonschema.Draft202012Validator(SCHEMA)
    model, opt = model_and_opt()
    with ComputeAudit(tmp_path / "finished", model, opt, stage="rl", tokens=5) as run:
        train(run, model, opt, 2)
    stopped_run(tmp_path)
    with pytest.raises(RuntimeError), ComputeAudit(tmp_path / "failed", model, opt) as run:
        train(run, model, opt, 1)
        raise RuntimeError("out of memory")
    resumed_dir, _ = crashed_and_resumed(tmp_path / "resumed")
    for run_dir in (tmp_path / "finished", tmp_path / "run", tmp_path / "failed", resumed_dir):
        data = dossier.load(run_dir)
        assert [e.message for e in validator.iter_errors(data)] == [], run_dir
    bad = {**data, "tracked": {**data["tracked"], "ending": {"how": "vanished", "step": 1}}}
    assert [e.message for e in validator.iter_errors(bad)] == [
        "'vanished' is not one of ['finished', 'stopped', 'failed']"]


def test_attack_a_resealed_dossier_with_a_malformed_ending_is_refused_not_crashed(tmp_path):
    model, opt = model_and_opt()
    with ComputeAudit(tmp_path / "run", model, opt) as run:
        train(run, model, opt, 1, evaluate=False)
    data = dossier.load(tmp_path / "run")
    data["tracked"]["ending"] = {"how": "stopped"}             # no step, limit or figure
    dossier.write(dossier.seal(data), tmp_path / "run" / "dossier.json")
    checked = invoke("verify", tmp_path / "run")
    assert checked.exit_code == 1 and "not a well-formed dossier: its text view cannot be made (KeyError: 'step')" \
        in checked.output
    report = invoke("report", tmp_path / "run")
    assert report.exit_code == 2 and "Traceback" not in report.stderr
    assert report.stderr.startswith(f"error: {tmp_path / 'run' / 'dossier.json'}: not a well-formed dossier")


def test_the_nvml_meter_finds_each_gpu_by_its_pci_address(monkeypatch):
    from types import SimpleNamespace

    from auditor.methods import measured_energy

    nvml = FakeNVML({"00000000:17:00.0": 50_000, "00000000:b3:00.0": 70_000})
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetHandleByPciBusId = lambda bus: bus
    buses = {0: 0x17, 1: 0xB3}
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(pci_domain_id=0, pci_bus_id=buses[i], pci_device_id=0))
    meter = measured_energy._nvml_meter([0, 1])
    assert meter.kind == "nvml" and meter.start_mj == [50_000, 70_000]
    nvml.counters = {"00000000:17:00.0": 50_000 + 3_600_000, "00000000:b3:00.0": 70_000 + 1_800_000}
    assert meter.read(1.0)["wh"] == Fraction(3, 2)


def test_codecarbon_serves_where_nvml_cannot(monkeypatch):
    from types import SimpleNamespace

    class Tracker:
        def __init__(self, **options):
            self.options, self.final_emissions_data = options, None

        def start(self):
            pass

        def stop(self):
            self.final_emissions_data = SimpleNamespace(energy_consumed=0.0125)   # kWh

    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setitem(sys.modules, "codecarbon", SimpleNamespace(OfflineEmissionsTracker=Tracker))
    meter = EnergyMeter.start(None)
    assert meter.kind == "codecarbon" and meter.handle.options["save_to_file"] is False
    reading = meter.read(0.1)
    assert reading["wh"] == Fraction(25, 2)
    _, energy = combine([{"device": "CPU (x86_64)", "energy": reading}], 0.1)
    assert (energy["wh"], energy["low_wh"], energy["high_wh"]) == (12, 10, 15)   # 12.5 rounds to even; +-20 %
    assert energy["method"].startswith("measured or estimated by codecarbon")
