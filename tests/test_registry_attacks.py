"""Attacks on the registry: a forger's re-chained run, the same run added again (or under another
model), a run cut back after it was recorded, hostile names, damaged input. Each is refused or
recorded once, with one line saying why, and nothing else in the registry changes."""
import json
import shutil

import pytest
from helpers import invoke
from registry_runs import E, at, daily, registry_url, write_run  # noqa: F401  (a fixture)
from test_attacks_records import TOTAL, forge, keys, rechain, signed_run, train  # noqa: F401  (fixtures)

from auditor.record.ledger import FILENAME


def runs_in(url) -> list[dict]:
    result = invoke("registry", "runs", "--format", "json", "--registry", url)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["runs"]


def one_line_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    return result.stderr


def test_attack_a_forged_unsigned_run_is_refused_with_the_trusted_key(signed_run, keys, tmp_path, registry_url):
    forged = shutil.copytree(signed_run, tmp_path / "forged")
    assert forge(forged) == TOTAL // 2                     # every interval halved, chain and seal recomputed
    alice = keys["alice"][1]
    refused = invoke("registry", "add", forged, "--model", "m", "--stage", "pretraining", "--trusted-key", alice,
                     "--registry", registry_url)
    assert "refused" in one_line_error(refused, 1) and "unsigned" in refused.stderr
    # the same with the key given through the environment
    env_refused = invoke("registry", "add", forged, "--model", "m", "--stage", "pretraining", "--registry",
                         registry_url, env={"AUDITOR_TRUSTED_KEYS": str(alice)})
    assert env_refused.exit_code == 1
    assert runs_in(registry_url) == []                       # nothing recorded, not even the model
    assert json.loads(invoke("registry", "models", "--format", "json", "--registry", registry_url).stdout) == \
        {"models": []}
    # the genuine run is accepted with the same key, at its real total
    genuine = invoke("registry", "add", signed_run, "--model", "m", "--stage", "pretraining", "--trusted-key", alice,
                     "--registry", registry_url)
    assert genuine.exit_code == 0, genuine.output
    [run] = runs_in(registry_url)
    assert run["counted_flops"] == TOTAL and "signed by a trusted key (alice)" in run["verified"]


def test_attack_a_run_forged_with_the_forgers_own_key_is_refused(signed_run, keys, tmp_path, registry_url):
    forged = shutil.copytree(signed_run, tmp_path / "forged")
    forge(forged, key=keys["mallory"][0])
    refused = invoke("registry", "add", forged, "--model", "m", "--stage", "pretraining", "--trusted-key",
                     keys["alice"][1], "--registry", registry_url)
    assert refused.exit_code == 1 and runs_in(registry_url) == []


def test_attack_the_same_run_added_twice_is_recorded_once(tmp_path, registry_url):
    run = write_run(tmp_path / "r", at("2026-02-01"), daily(2, 4, 3 * E, "2026-02"), close=at("2026-02-06"))
    for target in (run, run, run / "dossier.json", run / FILENAME):     # the folder, its dossier, its ledger
        result = invoke("registry", "add", target, "--model", "m", "--stage", "pretraining", "--registry", registry_url)
        assert result.exit_code == 0, result.output
    assert result.output.startswith("already recorded")
    [recorded] = runs_in(registry_url)
    assert recorded["counted_flops"] == 12 * E
    status = json.loads(invoke("registry", "status", "--rules", "eu-ai-act-systemic-risk", "--format", "json",
                               "--registry", registry_url).stdout)
    assert status["models"][0]["cumulative_flops"] == 12 * E           # not 24e24 or 48e24
    # a copy of the run folder is the same run (its first record is the same): still once
    copy = shutil.copytree(run, tmp_path / "copy")
    invoke("registry", "add", copy, "--model", "m", "--stage", "pretraining", "--registry", registry_url)
    assert len(runs_in(registry_url)) == 1


def test_attack_the_same_run_under_another_model_is_refused(tmp_path, registry_url):
    run = write_run(tmp_path / "r", at("2026-02-01"), daily(2, 2, E, "2026-02"), close=at("2026-02-04"))
    assert invoke("registry", "add", run, "--model", "a", "--stage", "sft", "--registry", registry_url).exit_code == 0
    again = invoke("registry", "add", run, "--model", "b", "--stage", "sft", "--registry", registry_url)
    assert "recorded already as model 'a', stage sft" in one_line_error(again, 2)
    [recorded] = runs_in(registry_url)
    assert recorded["model"] == "a"


def test_attack_a_run_cut_back_after_it_was_recorded_is_refused(tmp_path, registry_url):
    run = write_run(tmp_path / "r", at("2026-02-01"), daily(2, 5, 2 * E, "2026-02"), close=at("2026-02-07"))
    assert invoke("registry", "add", run, "--model", "m", "--stage", "pretraining",
                  "--registry", registry_url).exit_code == 0
    (run / "dossier.json").unlink()
    rechain(run, lambda recs: recs.pop(-2))     # the last interval gone, the chain recomputed from the same start
    result = invoke("registry", "add", run, "--model", "m", "--stage", "pretraining", "--registry", registry_url)
    message = one_line_error(result, 1)
    assert "no longer holds" in message and "cut back or rewritten" in message
    [recorded] = runs_in(registry_url)
    assert recorded["counted_flops"] == 10 * E                         # what was recorded stands


def test_attack_a_tampered_run_is_refused_even_without_keys(tmp_path, registry_url):
    run = write_run(tmp_path / "r", at("2026-02-01"), daily(2, 3, E, "2026-02"), close=at("2026-02-05"))
    ledger = run / FILENAME
    ledger.write_bytes(ledger.read_bytes().replace(b'"flops":1000000000000000000000000',
                                                   b'"flops":1000000000000000000000001', 1))
    result = invoke("registry", "add", run, "--model", "m", "--stage", "pretraining", "--registry", registry_url)
    assert "hash mismatch" in one_line_error(result, 1) and runs_in(registry_url) == []


@pytest.mark.parametrize("name", ["m\u202eevil", "m\u2066x", "m\x1b[31mred", "two\nlines", "nul\x00", " padded",
                                  "\u200f", "x" * 201])
def test_attack_a_model_name_with_control_or_bidi_characters_is_refused(tmp_path, name):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    run = write_run(tmp_path / "r", at("2026-02-01"), [(at("2026-02-02"), 5)], close=at("2026-02-03"))
    for option in ("--model", "--from"):
        args = ["--model", name] if option == "--model" else ["--model", "ok", "--from", name, "--developer", "same"]
        result = invoke("registry", "add", run, *args, "--stage", "sft", "--registry", url)
        message = one_line_error(result, 2)
        assert message.startswith(f"error: {option}: ")
        assert not any(c in message[:-1] for c in "\u202e\u2066\x1b\x00\u200f")   # shown as escapes, never raw
    assert runs_in(url) == []


def test_attack_a_hostile_run_name_is_shown_escaped(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    run = write_run(tmp_path / "r", at("2026-02-01"), [(at("2026-02-02"), 5)], name="run\u202eevil",
                    close=at("2026-02-03"))
    assert invoke("registry", "add", run, "--model", "m", "--stage", "other", "--registry", url).exit_code == 0
    text = invoke("registry", "runs", "--registry", url).output
    assert "\u202e" not in text
    page = tmp_path / "r.html"
    assert invoke("registry", "html", "-o", page, "--registry", url).exit_code == 0
    html = page.read_text()
    assert "\u202e" not in html and "run\\u202eevil" in html


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    plan = tmp_path / "plan.json"
    cases = [
        (["add", tmp_path / "missing", "--model", "m", "--stage", "sft"], "does not exist"),
        (["add", tmp_path, "--model", "m", "--stage", "sft"], "no ledger.jsonl or dossier.json"),
        (["add", plan, "--model", "m", "--stage", "sft"], "total_flops: got"),
        (["add", tmp_path / "r", "--model", "m", "--stage", "sft", "--developer", "same"], "give that model with --from"),
        (["add", tmp_path / "r", "--model", "m", "--stage", "sft", "--from", "m"], "cannot come from itself"),
        (["show", "nobody"], "expected a model in the registry"),
        (["status", "--rules", "no-such-rule"], "--rules"),
    ]
    plan.write_text(json.dumps({"run": "p", "low": 1, "high": 2, "estimates": []}))
    write_run(tmp_path / "r", at("2026-02-01"), [(at("2026-02-02"), 5)], close=at("2026-02-03"))
    for args, words in cases:
        result = invoke("registry", *args, "--registry", url)
        assert words in one_line_error(result, 2), (args, result.stderr)
    for bad in ("mysql://u@h/db", "sqlite://"):
        assert "--registry" in one_line_error(invoke("registry", "models", "--registry", bad), 2)
    unreachable = invoke("registry", "models", "--registry", "postgresql://nobody@/x?host=/nonexistent-dir")
    assert "cannot open the registry" in one_line_error(unreachable, 2)
    fifo = tmp_path / "fifo.json"
    import os
    os.mkfifo(fifo)
    assert "not a regular file" in one_line_error(invoke("registry", "add", fifo, "--model", "m", "--stage", "sft",
                                                         "--registry", url), 2)


def test_every_registry_command_has_help():
    for command in ("", "add", "link", "models", "runs", "show", "status", "html"):
        result = invoke("registry", *([command] if command else []), "--help")
        assert result.exit_code == 0 and "Usage:" in result.output and len(result.output) > 200, command
