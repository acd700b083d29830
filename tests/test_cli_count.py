"""The CLI: `auditor count` and `auditor demo`, their outputs, exit codes and error messages."""
import json

import pytest

from helpers import invoke

TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}


def run(*args):
    result = invoke(*args)
    return result.exit_code, result.output, result.stderr


def test_count_json(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    code, out, _ = run("count", cfg, "--seq-len", 8, "--format", "json")
    assert code == 0
    data = json.loads(out)
    t, d, f, v, hd = 8, 64, 128, 100, 16
    per_layer = 2 * t * (d * d + 2 * d * 2 * hd + d * d + 3 * d * f) + 2 * (2 * 4 * t * t * hd)
    fwd = 2 * per_layer + 2 * t * d * v
    assert data["forward_flops"] == fwd and data["total_flops"] == 3 * fwd
    assert data["uncovered_ops"] == [] and data["complete"] is True


def test_count_text_breakdown(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    code, out, _ = run("count", cfg, "--seq-len", 8)
    assert code == 0
    assert "by operator" in out and "model.layers" in out and "uncovered ops: none" in out


@pytest.mark.parametrize("content,message", [
    (None, "cannot read the Hugging Face config"),
    ("{not json", "not valid JSON (line 1, column 2)"),
    ("[1, 2]", "expected a JSON object with model_type, got list"),
    ('{"hidden_size": 8}', "field model_type is missing"),
    ('{"model_type": "no-such-model"}', "model_type 'no-such-model' is not known"),
    ('{"model_type": "llama", "hidden_size": 65, "num_attention_heads": 4}', "llama"),
])
def test_count_bad_config_exits_2_with_message(tmp_path, content, message):
    cfg = tmp_path / "config.json"
    if content is not None:
        cfg.write_text(content)
    code, _, err = run("count", cfg)
    assert code == 2
    assert message in err
    assert str(cfg) in err or "llama" in err
    assert "Traceback" not in err


def test_count_bad_option_exits_2():
    code, _, err = run("count", "x.json", "--seq-len", 0)
    assert code == 2 and "--seq-len" in err


def test_every_command_has_help():
    for args in (["--help"], ["count", "--help"], ["demo", "--help"], ["report", "--help"], ["verify", "--help"]):
        code, out, _ = run(*args)
        assert code == 0 and "Usage:" in out


def test_demo_preflight_tracked_run_and_dossier(tmp_path):
    code, out, _ = run("demo", "--out", tmp_path, "--steps", 2)
    assert code == 0
    last = out.strip().splitlines()[-1]
    assert last.startswith("HTML dossier: ") and last.endswith("dossier.html")
    html = tmp_path / "run" / "dossier.html"
    assert html.is_file() and (tmp_path / "preflight.html").is_file()
    # The bundled GPT-2: 4 layers, width 256, vocabulary 8192 (tied); 2 steps of 4 x 256 tokens.
    d, vocab, b, s, layers = 256, 8192, 4, 256, 4
    t = b * s
    fwd = layers * (2 * t * 12 * d * d + 2 * (2 * b * s * s * d)) + 2 * t * d * vocab
    from auditor.record import dossier

    sealed = dossier.load(tmp_path / "run")
    assert sealed["total_flops"] == 2 * 3 * fwd
    assert sealed["tracked"]["steps"] == 2
    assert "equal" in out and "DIFFERENT" not in out
    assert run("verify", tmp_path / "run")[0] == 0
