"""The run's side of an authorization: refused at start without a valid one (attacks as tests),
stopped exactly at the approved budget, and the record (ledger, dossier, verify) showing what was
approved against what was used, checked end to end with the approver's public key.

Closed form (the MLP 32-64-10 on data, as tests/test_tracking.py): a row costs 2x32x64 + 2x64x10
forward; backward, the first layer's weight gradient (its input is data) and the second's weight
and input gradients: 2x32x64 + 2x(2x64x10). A step of 8 rows is 8 times that.
"""
import json
from datetime import date

import pytest
import torch
from helpers import invoke

import auditor
import auditor.text
from auditor import AuthorizationError, ComputeAudit, ComputeBudgetExceeded
from auditor.record.authorization import make
from auditor.record.signing import SigningKey, canonical, new_keypair

IN, HID, OUT, ROWS = 32, 64, 10, 8
STEP = ROWS * (2 * IN * HID + 2 * HID * OUT + 2 * IN * HID + 2 * (2 * HID * OUT))
PLAN = "run: small\nmodel: {parameters: 1e6}\ndata: {tokens: 1e9}\n"


@pytest.fixture
def keys(tmp_path):
    (tmp_path / "keys").mkdir()  # apart from the run folders: a key kept in a run folder is refused
    return {name: new_keypair(tmp_path / "keys" / name) for name in ("alice", "mallory")}


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(PLAN)
    return path


def authorize(config, key, budget: int, name="run.authorization.json"):
    out = config.with_name(name)
    result = invoke("authorize", config, "--key", key, "--budget", str(budget), "-o", out)
    assert result.exit_code == 0, result.output
    return out


def mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.ReLU(), torch.nn.Linear(HID, OUT))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def train(run, model, opt, steps):
    for _ in range(steps):
        model(torch.randn(ROWS, IN)).sum().backward()
        opt.step()
        opt.zero_grad()


def refused(tmp_path, **options):
    """The AuthorizationError a start raises; nothing ran, nothing was written."""
    model, opt = mlp()
    run_dir = tmp_path / "refused-run"
    with pytest.raises(AuthorizationError) as info:
        ComputeAudit(run_dir, model, opt, **options).start()
    assert not run_dir.exists()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_refused_without_an_authorization_where_one_is_required(tmp_path, config):
    message = refused(tmp_path, config=config, require_authorization=True)
    assert message.startswith("this run needs an authorization (require_authorization=True) and holds none")
    assert auditor.AuthorizationError is AuthorizationError


def test_attack_refused_with_a_forged_authorization(tmp_path, config, keys):
    forged = authorize(config, keys["mallory"][0], 3 * STEP)
    message = refused(tmp_path, config=config, authorization=forged, trusted_keys=[keys["alice"][1]])
    assert "does not verify: it is signed by" in message and "not by a trusted key" in message


def test_attack_refused_with_a_raised_budget(tmp_path, config, keys):
    good = authorize(config, keys["alice"][0], 3 * STEP)
    envelope = json.loads(good.read_text())
    import base64

    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["budget_flops"] = 300 * STEP
    envelope["payload"] = base64.b64encode(canonical(statement)).decode()
    good.write_bytes(canonical(envelope) + b"\n")
    message = refused(tmp_path, config=config, authorization=good, trusted_keys=[keys["alice"][1]])
    assert "does not verify: its signature does not verify with the trusted key alice" in message


def test_refused_with_an_expired_authorization(tmp_path, config, keys):
    from auditor.cli.common import preflight_dict

    data = preflight_dict(config, quiet=True)
    envelope = make(config, SigningKey.load(keys["alice"][0]), budget=3 * STEP, preflight=data,
                    valid_from=date(2020, 1, 1), expires=date(2020, 12, 31))
    path = tmp_path / "old.json"
    path.write_bytes(canonical(envelope) + b"\n")
    message = refused(tmp_path, config=config, authorization=path, trusted_keys=[keys["alice"][1]])
    assert "expired on 2020-12-31 (today is 20" in message


def test_refused_with_an_authorization_for_another_config(tmp_path, config, keys):
    auth = authorize(config, keys["alice"][0], 3 * STEP)
    other = tmp_path / "bigger.yaml"
    other.write_text(PLAN.replace("1e9", "1e10"))  # ten times the tokens
    message = refused(tmp_path, config=other, authorization=auth, trusted_keys=[keys["alice"][1]])
    assert "made for another config: it approves small.yaml" in message and "bigger.yaml has sha256" in message


def test_refused_without_the_config_it_approves(tmp_path, config, keys):
    auth = authorize(config, keys["alice"][0], 3 * STEP)
    message = refused(tmp_path, authorization=auth, trusted_keys=[keys["alice"][1]])
    assert "pass config=CONFIG" in message


def test_the_run_stops_exactly_at_its_budget_and_the_record_shows_it(tmp_path, config, keys, capsys):
    auth = authorize(config, keys["alice"][0], 3 * STEP)
    model, opt = mlp()
    run_dir = tmp_path / "run"
    with pytest.raises(ComputeBudgetExceeded, match="crossing the budget authorized by alice"), \
            ComputeAudit(run_dir, model, opt, config=config, authorization=auth, trusted_keys=[keys["alice"][1]],
                         progress_every=1, signing_key=keys["alice"][0]) as run:
        train(run, model, opt, 10)
    assert run.total_flops == 3 * STEP and run.steps == 3          # the 4th step never ran
    err = capsys.readouterr().err
    assert "100.0% of the authorized" in err and "33.3% of the authorized" in err

    first = json.loads((run_dir / "ledger.jsonl").read_text().splitlines()[0])
    held = first["meta"]["authorization"]
    import hashlib

    assert held["sha256"] == hashlib.sha256(auth.read_bytes()).hexdigest()
    assert held["budget_flops"] == 3 * STEP and held["phases"][0] == "train"
    assert (run_dir / "authorization.json").read_bytes() == auth.read_bytes()

    dossier = json.loads((run_dir / "dossier.json").read_text())
    shown = dossier["tracked"]["authorization"]
    assert (shown["budget_flops"], shown["used_flops"], shown["within_budget"]) == (3 * STEP, 3 * STEP, True)
    assert shown["approver"]["name"] == "alice"

    result = invoke("verify", run_dir, "--trusted-key", keys["alice"][1])
    assert result.exit_code == 0, result.output
    assert f"within its authorization: {3 * STEP:,} of {3 * STEP:,} FLOPs approved (100.0%" in result.output
    assert "signed by alice (trusted)" in result.output

    html = tmp_path / "dossier.html"
    assert invoke("report", run_dir / "dossier.json", "--format", "html", "-o", html).exit_code in (0, 1)
    text = html.read_text()
    assert "<h2>Authorization</h2>" in text and "alice" in text and f"{3 * STEP:,} FLOPs" in text
    assert "within the budget" in text and "(100.0 %)" in text
    shown = invoke("report", run_dir / "dossier.json", "--format", "text").output
    assert f"authorized {auditor.text.sci(3 * STEP)} FLOP by alice" in shown and "(100.0%, train" in shown
    shown = invoke("report", run_dir / "dossier.json", "--format", "md").output
    assert "\n\n**Authorization**: authorized \\~2.888e5 FLOP by alice" in shown and "within it" in shown


def test_warned_past_the_budget_then_verify_fails_it(tmp_path, config, keys):
    auth = authorize(config, keys["alice"][0], 3 * STEP)
    model, opt = mlp()
    run_dir = tmp_path / "run"
    with pytest.warns(UserWarning, match="crossing the budget"), \
            ComputeAudit(run_dir, model, opt, config=config, authorization=auth, trusted_keys=[keys["alice"][1]],
                         on_exceed="warn") as run:
        train(run, model, opt, 5)
    assert run.total_flops == 5 * STEP
    result = invoke("verify", run_dir, "--trusted-key", keys["alice"][1])
    assert result.exit_code == 1
    assert f"the run used {5 * STEP:,} FLOPs (train" in result.output and f"over the {3 * STEP:,}" in result.output


def test_attack_the_authorization_beside_the_ledger_swapped_for_a_bigger_one(tmp_path, config, keys):
    auth = authorize(config, keys["alice"][0], 3 * STEP)
    model, opt = mlp()
    run_dir = tmp_path / "run"
    with ComputeAudit(run_dir, model, opt, config=config, authorization=auth, trusted_keys=[keys["alice"][1]]) as run:
        train(run, model, opt, 2)
    bigger = authorize(config, keys["mallory"][0], 300 * STEP, name="bigger.json")
    (run_dir / "authorization.json").write_bytes(bigger.read_bytes())
    result = invoke("verify", run_dir, "--trusted-key", keys["alice"][1])
    assert result.exit_code == 1 and "not the authorization the ledger names" in result.output


def test_the_budget_covers_the_phases_its_rules_count(tmp_path, config, keys):
    """The EU's and SB 53's rules count rollouts: a rollout's FLOPs use the budget; evaluation does not."""
    auth = authorize(config, keys["alice"][0], 10 * STEP)
    model, opt = mlp()
    forward = ROWS * (2 * IN * HID + 2 * HID * OUT)
    with ComputeAudit(None, model, opt, config=config, authorization=auth, trusted_keys=[keys["alice"][1]]) as run:
        train(run, model, opt, 1)
        with torch.no_grad():
            with run.phase("rollout"):
                model(torch.randn(ROWS, IN))
            model(torch.randn(ROWS, IN))              # evaluation
        assert run.budget_used() == (STEP + forward) / (10 * STEP)
    assert run.authorization.budget_flops == 10 * STEP


def test_attack_a_resume_without_the_authorization_is_refused(tmp_path, config, keys):
    """Restarting without the authorization would leave the budget behind: the ledger names it."""
    auth = authorize(config, keys["alice"][0], 10 * STEP)
    model, opt = mlp()
    run_dir = tmp_path / "run"
    trusted = [keys["alice"][1]]
    with ComputeAudit(run_dir, model, opt, config=config, authorization=auth, trusted_keys=trusted,
                      signing_key=keys["alice"][0]) as run:
        train(run, model, opt, 2)
    ledger = (run_dir / "ledger.jsonl").read_bytes()
    with pytest.raises(AuthorizationError, match="its ledger names an authorization"):
        ComputeAudit(run_dir, model, opt, resume_step=2).start()
    other = authorize(config, keys["alice"][0], 100 * STEP, name="other.json")   # valid, but not a successor
    with pytest.raises(AuthorizationError, match="neither the authorization this run's ledger names"):
        ComputeAudit(run_dir, model, opt, resume_step=2, config=config, authorization=other,
                     trusted_keys=trusted).start()
    assert (run_dir / "ledger.jsonl").read_bytes() == ledger               # refused before the ledger moved
    more = config.with_name("more.json")
    result = invoke("authorize", config, "--key", keys["alice"][0], "--budget", str(100 * STEP),
                    "--supersedes", auth, "-o", more)
    assert result.exit_code == 0, result.output
    with ComputeAudit(run_dir, model, opt, resume_step=2, config=config, authorization=more,
                      trusted_keys=trusted, signing_key=keys["alice"][0]) as run:
        train(run, model, opt, 2)
    assert run.total_flops == 4 * STEP
    result = invoke("verify", run_dir, "--trusted-key", keys["alice"][1])
    assert result.exit_code == 0, result.output
    assert f"within its authorization: {4 * STEP:,} of {100 * STEP:,} FLOPs" in result.output
