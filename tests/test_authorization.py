"""Authorizations: a reviewer's signed budget for one config, verified before anything relies on
it; refused when forged, expired, not yet valid or made for another config (attacks as tests)."""
import hashlib
import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from helpers import invoke

from auditor.record.authorization import AuthorizationError, beside, load, make
from auditor.record.signing import SigningKey, TrustedKey, canonical, new_keypair

PLAN = "run: plan-7b\nmodel: {parameters: 7e9}\ndata: {tokens: 1e15}\n"   # 6ND = 4.2e25, range 2.94e25..5.46e25




@pytest.fixture
def keys(tmp_path):
    return {name: new_keypair(tmp_path / name) for name in ("alice", "mallory")}


@pytest.fixture
def config(tmp_path):
    (tmp_path / ".git").mkdir()
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN)
    return path


def authorize(config: Path, key: Path, *extra) -> Path:
    out = config.with_name(config.stem + ".authorization.json")
    result = invoke("authorize", config, "--key", key, "--budget", "6e25", "-o", out, *extra)
    assert result.exit_code == 0, result.output
    return out


def test_authorize_shows_the_plan_and_writes_a_signed_budget(config, keys):
    result = invoke("authorize", config, "--key", keys["alice"][0], "--budget", "5e25", "--expires", "2099-01-01",
                    "--condition", "stop at the budget", "-o", config.with_name("a.json"))
    assert result.exit_code == 0, result.output
    assert "total: 42,000,000,000,000,000,000,000,000 FLOPs" in result.stdout            # the preflight shown
    assert "below the plan's high end 5.46e25" in result.stderr                         # 5e25 < 5.46e25
    auth = load(config.with_name("a.json"), [TrustedKey.load(keys["alice"][1])], config=config)
    assert auth.budget_flops == 5 * 10 ** 25 and auth.run == "plan-7b" and auth.expires == date(2099, 1, 1)
    assert auth.config_sha256 == hashlib.sha256(config.read_bytes()).hexdigest()
    assert auth.conditions == ("stop at the budget",) and auth.approver.name == "alice"
    assert auth.preflight == {"total_flops": 42 * 10 ** 24, "low": 294 * 10 ** 23, "high": 546 * 10 ** 23,
                              "central_method": "analytic"}
    verified = invoke("authorization", "verify", config.with_name("a.json"), "--trusted-key", keys["alice"][1],
                      "--config", config)
    assert verified.exit_code == 0 and "approved by alice" in verified.output


def test_attack_an_authorization_signed_by_an_untrusted_key(config, keys):
    forged = authorize(config, keys["mallory"][0])
    result = invoke("authorization", "verify", forged, "--trusted-key", keys["alice"][1])
    assert result.exit_code == 1 and "not by a trusted key" in result.output


def test_attack_a_raised_budget_breaks_the_signature(config, keys):
    path = authorize(config, keys["alice"][0])
    envelope = json.loads(path.read_text())
    import base64

    body = json.loads(base64.b64decode(envelope["payload"]))
    body["predicate"]["budget_flops"] = 10 ** 27
    envelope["payload"] = base64.b64encode(canonical(body)).decode()
    path.write_text(json.dumps(envelope))
    with pytest.raises(AuthorizationError, match="does not verify with the trusted key alice"):
        load(path, [TrustedKey.load(keys["alice"][1])])


def test_attack_an_authorization_for_another_config(config, keys):
    path = authorize(config, keys["alice"][0])
    config.write_text(PLAN.replace("1e15", "1e16"))           # ten times the tokens, same file name
    with pytest.raises(AuthorizationError, match="made for another config"):
        load(path, [TrustedKey.load(keys["alice"][1])], config=config)


def test_an_expired_or_not_yet_valid_authorization(config, keys):
    key = SigningKey.load(keys["alice"][0])
    plan = {"run": "plan-7b", "total_flops": 1, "low": 1, "high": 1, "verdicts": []}
    today = date(2026, 6, 1)
    path = config.with_name("auth.json")
    path.write_bytes(canonical(make(config, key, budget=10, preflight=plan, valid_from=today,
                                    expires=today + timedelta(days=30))))
    trusted = [TrustedKey.load(keys["alice"][1])]
    assert load(path, trusted, today=today + timedelta(days=30)).budget_flops == 10
    with pytest.raises(AuthorizationError, match="expired on 2026-07-01"):
        load(path, trusted, today=today + timedelta(days=31))
    with pytest.raises(AuthorizationError, match="not valid before 2026-06-01"):
        load(path, trusted, today=today - timedelta(days=1))


def test_bad_inputs_are_one_line(config, keys, tmp_path):
    result = invoke("authorize", config, "--key", keys["alice"][0], "--budget", "lots", "-o", tmp_path / "x.json")
    assert result.exit_code == 2 and result.stderr.startswith("error: --budget: got 'lots'")
    result = invoke("authorization", "verify", tmp_path / "missing.json", "--trusted-key", keys["alice"][1])
    assert result.exit_code == 2 and "no such file" in result.stderr
    (tmp_path / "junk.json").write_text("{}")
    result = invoke("authorization", "verify", tmp_path / "junk.json", "--trusted-key", keys["alice"][1])
    assert result.exit_code == 1 and "not an authorization" in result.output


def test_the_gate_requires_authorizations_above_a_line(config, keys, tmp_path):
    small = config.with_name("small.yaml")
    small.write_text("run: small\nmodel: {parameters: 7e9}\ndata: {tokens: 1e9}\n")      # 4.2e19: below
    junit = tmp_path / "gate.xml"
    args = ("gate", config.parent, "--rules", "us-ca-sb53", "--require-authorization-above", "1e25",
            "--trusted-key", keys["alice"][1], "--junit", junit)
    missing = invoke(*args)
    assert missing.exit_code == 1 and "has no authorization (plan.authorization.json missing)" in missing.output
    assert '<failure message=' in junit.read_text() and 'type="unauthorized"' in junit.read_text()
    authorize(config, keys["mallory"][0])
    forged = invoke(*args)
    assert forged.exit_code == 1 and "not by a trusted key" in forged.output
    authorize(config, keys["alice"][0])
    assert beside(config).is_file()
    ok = invoke(*args)
    assert ok.exit_code == 0, ok.output
    assert "unauthorized" not in junit.read_text()
    assert invoke("gate", config.parent, "--require-authorization-above", "1e25").exit_code == 2   # no keys: refused
