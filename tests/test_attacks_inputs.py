"""Attacks by input: files that cost the machine, reach outside the repository, or break the
outputs. Each is a bad input: exit 2, one line naming the file and the field, no traceback."""
import json
import os
import xml.etree.ElementTree as ET

import pytest
from helpers import invoke

AS_OF = "2026-06-01"
DATA = "data: {tokens: 1e9, seq_len: 16}\n"
TINY = ("{model_type: llama, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, "
        "num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 100}")
BOMB = """run: bomb
model:
  hf_config:
    model_type: llama
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
""" + DATA




def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    return line


def test_attack_a_billion_laughs_in_an_inline_hf_config(tmp_path):
    """Under 1 KB; nine levels of nine aliases would be 9^9 values once expanded."""
    config = tmp_path / "bomb.yaml"
    config.write_text(BOMB)
    assert len(BOMB) < 1024
    line = one_error_line(invoke("preflight", config))
    assert f"{config}: not valid YAML (line " in line and "once its aliases are expanded" in line
    gate = invoke("gate", config, tmp_path / "missing.yaml")
    assert gate.exit_code == 2 and "alias bomb" in gate.output and "no such file" in gate.output


def test_a_recursive_alias_is_refused(tmp_path):
    config = tmp_path / "loop.yaml"
    config.write_text("run: r\nmodel: {hf_config: &m {model_type: llama, self: *m}}\n" + DATA)
    assert "recursive alias" in one_error_line(invoke("preflight", config))


def test_ordinary_aliases_still_load(tmp_path):
    config = tmp_path / "ok.yaml"
    config.write_text("run: r\nmodel: {hf_config: {model_type: llama, hidden_size: &h 64, intermediate_size: 128, "
                      "num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 100, max_position_embeddings: *h}}\n"
                      + DATA)
    assert invoke("preflight", config, "--as-of", AS_OF).exit_code == 0


def test_attack_two_million_layers(tmp_path):
    config = tmp_path / "deep.yaml"
    config.write_text("run: deep\nmodel: {hf_config: {model_type: llama, hidden_size: 64, num_attention_heads: 4, "
                      "intermediate_size: 128, vocab_size: 100, num_hidden_layers: 2000000}}\n" + DATA)
    line = one_error_line(invoke("preflight", config))
    assert "num_hidden_layers: 2,000,000" in line and "over the cap of 500,000" in line and "--max-modules" in line


def test_the_module_cap_stops_a_build_and_a_flag_raises_it(tmp_path):
    hf = tmp_path / "config.json"
    hf.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
                              "intermediate_size": 128, "vocab_size": 100, "num_hidden_layers": 2}))
    line = one_error_line(invoke("count", hf, "--seq-len", 16, "--max-modules", 20))
    assert "the model being built has more modules and parameter tensors, over the cap of 20" in line
    assert invoke("count", hf, "--seq-len", 16, "--max-modules", 1000).exit_code == 0


def test_attack_a_factory_building_without_bound_is_cut_off(tmp_path, monkeypatch):
    (tmp_path / "wide_models_mod.py").write_text(
        "import torch\ndef build():\n    return torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(10**9))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "wide.yaml"
    config.write_text("run: w\nmodel: {factory: 'wide_models_mod:build'}\n" + DATA)
    line = one_error_line(invoke("preflight", config, "--max-modules", 1000))
    assert "model.factory: the model being built has more modules" in line


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    return path


def test_attack_a_fifo_named_as_a_config_a_rule_file_or_a_policy(tmp_path, fifo):
    """Each would block the command forever on open() or read()."""
    assert "is a FIFO (named pipe), not a regular file" in one_error_line(invoke("preflight", fifo))
    gate = invoke("gate", fifo)
    assert gate.exit_code == 2 and "is a FIFO" in gate.output
    assert "is a FIFO" in one_error_line(invoke("thresholds", "validate", fifo))
    config = tmp_path / "run.yaml"
    config.write_text("run: r\nmodel: {parameters: 1e9}\n" + DATA)
    assert "is a FIFO" in one_error_line(invoke("preflight", config, "--rules", fifo))
    assert "is a FIFO" in one_error_line(invoke("gate", config, "--policy", fifo))


def test_attack_a_fifo_as_hf_config_ledger_or_dossier(tmp_path, fifo):
    config = tmp_path / "run.yaml"
    config.write_text(f"run: r\nmodel: {{hf_config: {fifo.name}}}\n" + DATA)
    assert "is a FIFO (named pipe), not a regular file" in one_error_line(invoke("preflight", config))
    json_fifo = tmp_path / "config.json"
    os.mkfifo(json_fifo)
    assert "is a FIFO" in one_error_line(invoke("count", json_fifo, "--seq-len", 16))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.mkfifo(run_dir / "ledger.jsonl")
    os.mkfifo(run_dir / "dossier.json")
    result = invoke("verify", run_dir)
    assert result.exit_code == 2 and "not a regular file" in result.output
    assert invoke("report", run_dir).exit_code == 2


def test_attack_a_config_naming_a_file_outside_its_repository(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    secret = tmp_path / "secret.json"
    secret.write_text('{"model_type": "llama", "token": "hunter2-very-secret"}')
    configs = {"absolute": f"run: a\nmodel: {{hf_config: {secret}}}\n" + DATA,
               "dotdot": "run: b\nmodel: {hf_config: ../secret.json}\n" + DATA}
    (repo / "link.json").symlink_to(secret)                  # a link inside that leads out
    configs["symlink"] = "run: c\nmodel: {hf_config: link.json}\n" + DATA
    for name, text in configs.items():
        path = repo / f"{name}.yaml"
        path.write_text(text)
        line = one_error_line(invoke("preflight", path))
        assert "outside the config's repository" in line and "--allow-path" in line, name
        assert "hunter2" not in line
    allowed = invoke("preflight", repo / "symlink.yaml", "--allow-path", tmp_path, "--as-of", AS_OF)
    assert allowed.exit_code == 0 and "hunter2" not in allowed.output   # allowed: read and counted


@pytest.mark.parametrize("command", [
    ["gate", "{config}", "--junit", "{blocker}/gate.xml"],
    ["preflight", "{config}", "--html", "{blocker}/plan.html"],
    ["report", "{run}", "-o", "{blocker}/report.txt"],
])
def test_an_unwritable_output_file_is_exit_2_and_one_line(tmp_path, command):
    import torch

    from auditor import ComputeAudit

    config = tmp_path / "run.yaml"
    config.write_text("run: r\nmodel: {parameters: 1e9}\n" + DATA)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    model = torch.nn.Linear(4, 4)
    with ComputeAudit(tmp_path / "run", model):
        model(torch.randn(2, 4)).sum().backward()
    args = [a.format(config=config, blocker=blocker, run=tmp_path / "run") for a in command]
    line = one_error_line(invoke(*args))
    assert f"cannot write {blocker}/" in line


def test_attack_control_and_bidi_characters_in_file_names(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    names = ["evil\u202eflow.yaml", "new\nline.yaml", "esc\x1b[31mred.yaml"]
    for name in names:
        (folder / name).write_text("run: r\nmodel: {parameters: 405e9}\ndata: {tokens: 15.6e12}\n")
    (folder / "broken\u202e.yaml").write_text("run: r\nmodel: {parameters: -1}\n" + DATA)
    junit = tmp_path / "gate.xml"
    result = invoke("gate", folder, "--as-of", AS_OF, "--junit", junit, "--github")
    assert result.exit_code == 2
    assert "\u202e" not in result.output and "\x1b" not in result.output
    assert not any(line.startswith("line.yaml") for line in result.output.splitlines())   # no raw newline
    assert "evil\\u202eflow.yaml" in result.output and "new\\nline.yaml" in result.output
    classnames = {case.get("classname") for case in ET.parse(junit).getroot().iter("testcase")}   # well-formed
    assert str(folder / "esc\\x1b[31mred.yaml") in classnames and len(classnames) == 4


def test_attack_bidi_characters_in_a_config_file_name_and_comment_are_shown_escaped(tmp_path):
    """A right-to-left override in a comment would reorder the config the reviewer reads."""
    config = tmp_path / "plan\u202e.yaml"
    config.write_text("run: r  # \u202eevil comment\nmodel: {parameters: 1e9}\n" + DATA)
    html_path = tmp_path / "plan.html"
    result = invoke("preflight", config, "--html", html_path, "--format", "json")
    assert result.exit_code == 0, result.output
    html = html_path.read_text()
    assert "\u202e" not in html and "\\u202eevil comment" in html and "plan\\u202e.yaml" in html
    assert "\u202e" not in result.stdout and json.loads(result.stdout)["source"].endswith("plan\\u202e.yaml")
