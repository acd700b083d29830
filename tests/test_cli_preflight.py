"""`auditor preflight`: exit codes and one-line errors on bad input, the JSON contract, Markdown and text views."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

if str(Path(__file__).resolve().parent) not in sys.path:      # pytest's importlib mode does not add it
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_config import (  # noqa: E402
    BAD_CONFIGS,
    NEEDS_ACCELERATOR_TABLE,
    _have_accelerator_table,
    write_case,
)
from helpers import invoke  # noqa: E402

D, FF, L, H, KV, V = 64, 128, 2, 4, 2, 100
HD = D // H
TINY = (f"{{model_type: llama, hidden_size: {D}, intermediate_size: {FF}, num_hidden_layers: {L}, "
        f"num_attention_heads: {H}, num_key_value_heads: {KV}, vocab_size: {V}}}")
T, K = 16, 1000
TINY_MATMUL = L * (D * H * HD + 2 * D * KV * HD + H * HD * D + 3 * D * FF) + V * D
TINY_PER_TOKEN = 6 * TINY_MATMUL + 12 * L * H * HD * T          # PaLM App. B




def tiny_config(tmp_path: Path, run: str = "tiny-run", extra: str = "") -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(f"run: {run}\nmodel: {{hf_config: {TINY}}}\ndata: {{tokens: {K * T}, seq_len: {T}}}\n" + extra)
    return path


HARDWARE = "hardware: {accelerator: H100-SXM, count: 8, hours: 10, utilization: 0.4}\n"
LINEAGE = "lineage: {base_model: tiny-base, base_compute_flops: 1.5e20, developer: other}\n"


def error_lines(stderr: str) -> list[str]:
    """stderr without the progress lines ('... building the model')."""
    return [line for line in stderr.splitlines() if not line.startswith("... ")]


# ----- every bad config of the loader's table: exit 2, one line

@pytest.mark.parametrize("case_id,spec,field,fragment", BAD_CONFIGS, ids=[row[0] for row in BAD_CONFIGS])
def test_bad_config_exits_2_with_one_line(tmp_path, case_id, spec, field, fragment):
    if case_id in NEEDS_ACCELERATOR_TABLE and not _have_accelerator_table():
        pytest.skip("auditor.methods.hardware is not installed")
    path = write_case(tmp_path, spec)
    result = invoke("preflight", path)
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    err = result.stderr
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"error: {path}: "), err
    assert "run.yaml" in err
    if field is not None:
        assert f" {field}: " in err, err
    assert fragment in err, err
    assert "\x1b" not in err and "\x00" not in err
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_the_table_is_large():
    assert len(BAD_CONFIGS) >= 55


# ----- bad inputs only the preflight can find

FACTORIES = '''\
import torch

def boom(**kwargs):
    raise RuntimeError("the factory failed")

def number():
    return 42

def a_class():
    return torch.nn.Linear
'''

PREFLIGHT_CASES = [
    # id, model line, field, fragment
    ("factory-module-missing", "model: {factory: 'no_such_module_for_auditor_tests:build'}", "model.factory",
     "no_such_module_for_auditor_tests"),
    ("factory-function-missing", "model: {factory: '{mod}:not_there'}", "model.factory", "not_there"),
    ("factory-raises", "model: {factory: '{mod}:boom'}", "model.factory", "the factory failed"),
    ("factory-raises-with-kwargs", "model: {factory: '{mod}:boom', kwargs: {width: 8}}", "model.factory",
     "RuntimeError"),
    ("factory-bad-kwargs", "model: {factory: '{mod}:number', kwargs: {width: 8}}", "model.factory", "TypeError"),
    ("factory-returns-int", "model: {factory: '{mod}:number'}", "model.factory", "int"),
    ("factory-returns-a-class", "model: {factory: '{mod}:a_class'}", "model.factory", "nn.Module"),
    ("hf-unknown-model-type", "model: {hf_config: {model_type: no-such-model-type}}", "model.hf_config",
     "no-such-model-type"),
    ("hf-rejected-by-transformers",
     "model: {hf_config: {model_type: llama, hidden_size: 65, num_attention_heads: 4}}", "model.hf_config", "65"),
    ("hf-field-of-wrong-type", "model: {hf_config: {model_type: llama, hidden_size: abc}}", "model.hf_config",
     "hidden_size"),
    ("hf-file-not-json", "model: {hf_config: bad.json}", "model.hf_config", "not valid JSON"),
    ("hf-file-a-list", "model: {hf_config: list.json}", "model.hf_config", "got list"),
    ("hf-file-unknown-type", "model: {hf_config: unknown.json}", "model.hf_config", "no-such-model-type"),
]

# transformers' validation errors span two lines ("Class validation error ...:\n    ValueError: ...")


def preflight_case(tmp_path: Path, monkeypatch, case_id: str, model: str) -> Path:
    mod = "auditor_test_factories_" + re.sub(r"\W", "_", case_id)
    (tmp_path / f"{mod}.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, mod, raising=False)
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "unknown.json").write_text('{"model_type": "no-such-model-type"}')
    path = tmp_path / "run.yaml"
    path.write_text(f"run: r\n{model.replace('{mod}', mod)}\ndata: {{tokens: 1e9, seq_len: 16}}\n")
    return path


@pytest.mark.parametrize("case_id,model,field,fragment", PREFLIGHT_CASES, ids=[c[0] for c in PREFLIGHT_CASES])
def test_preflight_bad_input_exits_2(tmp_path, monkeypatch, case_id, model, field, fragment):
    path = preflight_case(tmp_path, monkeypatch, case_id, model)
    result = invoke("preflight", path)
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    errors = [line for line in error_lines(result.stderr) if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: {path}: {field}: "), errors[0]
    assert fragment in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case_id,model,field,fragment", [
    *PREFLIGHT_CASES], ids=[c[0] for c in PREFLIGHT_CASES])
def test_preflight_bad_input_is_one_line(tmp_path, monkeypatch, case_id, model, field, fragment):
    path = preflight_case(tmp_path, monkeypatch, case_id, model)
    result = invoke("preflight", path)
    assert result.exit_code == 2
    assert error_lines(result.stderr) == [error_lines(result.stderr)[0]]
    assert error_lines(result.stderr)[0].startswith("error: ")


@pytest.mark.parametrize("source", ['raise ValueError("broken at import")\n', "def (:\n"],
                         ids=["raises-at-import", "syntax-error"])
def test_factory_module_broken_at_import_exits_2(tmp_path, monkeypatch, source):
    mod = "auditor_test_broken_" + ("raise" if "raise" in source else "syntax")
    (tmp_path / f"{mod}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, mod, raising=False)
    path = tmp_path / "run.yaml"
    path.write_text(f"run: r\nmodel: {{factory: '{mod}:build'}}\ndata: {{tokens: 1e9, seq_len: 16}}\n")
    result = invoke("preflight", path)
    assert result.exit_code == 2, (result.output, repr(result.exception))
    assert "model.factory" in result.stderr


# ----- --format json: the sealed record's contract

COUNT_KEYS = {"total_flops", "low", "high", "flops", "flops_per_token", "tokens", "parameters",
              "active_parameters", "embedding_parameters", "base_compute_flops", "threshold_flops",
              "sequence_flops", "context_quadratic_flops", "forward", "backward", "hardware", "six_nd",
              "six_nd_total_params", "kaplan", "palm", "n_used", "n_params_total", "flops_at_full_utilization",
              "count", "peak_flops_per_s"}


def counts_in(node, path="$"):
    """(path, value) for every value under a count key, and every number in a breakdown."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            if key == "notification":        # the EU form's text: two significant figures, a string on purpose
                continue
            if key in COUNT_KEYS and not isinstance(value, (dict, list)) and value is not None:
                yield here, value
            yield from counts_in(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from counts_in(value, f"{path}[{i}]")


def numbers_in(node, path="$"):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from numbers_in(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from numbers_in(value, f"{path}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


def is_int(value) -> bool:
    return type(value) is int


@pytest.fixture(scope="module")
def json_output(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("json")
    path = tiny_config(tmp_path, extra=HARDWARE + LINEAGE)
    result = invoke("preflight", path, "--format", "json")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def test_json_contract(json_output):
    data = json_output
    assert isinstance(data["run"], str) and data["run"] == "tiny-run"
    for key in ("total_flops", "low", "high"):
        assert is_int(data[key]), key
    assert data["low"] <= data["total_flops"] <= data["high"]
    assert isinstance(data["verdicts"], list)
    assert isinstance(data["uncovered_ops"], list) and data["uncovered_ops"] == []
    methods = [e["method"] for e in data["estimates"]]
    assert sorted(methods) == ["analytic", "counted", "hardware"]
    for e in data["estimates"]:
        assert e["method"] in ("counted", "analytic", "hardware")
        for key in ("flops", "low", "high"):
            assert is_int(e[key]), (e["method"], key)
        assert e["low"] <= e["flops"] <= e["high"]
        assert isinstance(e["assumptions"], list) and e["assumptions"]
        assert all(isinstance(a, str) for a in e["assumptions"])
        if e["method"] in ("counted", "analytic"):          # the tokens are known to these
            assert is_int(e["flops_per_token"])
    assert data["low"] == min(e["low"] for e in data["estimates"])
    assert data["high"] == max(e["high"] for e in data["estimates"])


def test_json_figures_are_the_closed_forms(json_output):
    from fractions import Fraction

    from auditor.methods.hardware import get_accelerator

    est = {e["method"]: e for e in json_output["estimates"]}
    assert est["counted"]["flops_per_token"] == TINY_PER_TOKEN
    assert est["counted"]["flops"] == json_output["total_flops"] == K * T * TINY_PER_TOKEN
    assert est["hardware"]["flops"] == 8 * 10 * 3600 * get_accelerator("H100-SXM").peak() * Fraction(2, 5)
    assert json_output["lineage"]["base_compute_flops"] == 15 * 10 ** 19


def test_json_counts_are_ints_everywhere(json_output):
    found = list(counts_in(json_output))
    assert len(found) > 20
    bad = [(p, v) for p, v in found if not is_int(v)]
    assert not bad, bad
    assert re.fullmatch(r"\d\.\de\d+", json_output["notification"]["flops"])
    for e in json_output["estimates"]:
        for p, v in numbers_in(e.get("breakdown", {}), f"$.{e['method']}.breakdown"):
            assert is_int(v), (p, v)


def test_json_round_trips_big_ints(tmp_path):
    """A count past 2^53 survives json.loads exactly: it was written as an int, not a float."""
    path = tmp_path / "big.yaml"
    path.write_text("run: big\nmodel: {parameters: 405e9}\ndata: {tokens: 15.6e12}\n")
    result = invoke("preflight", path, "--format", "json")
    assert result.exit_code == 1  # 3.8e25 crosses the EU's blocking 1e25 presumption
    data = json.loads(result.stdout)
    assert data["total_flops"] == 6 * 405 * 10 ** 9 * 156 * 10 ** 11
    eu = next(v for v in data["verdicts"] if v["rule"] == "eu-ai-act-systemic-risk")
    assert eu["status"] == "crossed" and eu["threshold_flops"] == 10 ** 25
    assert re.search(r'"total_flops": 37908000000000000000000000\b', result.stdout)


# ----- --format md

HOSTILE = "<script>alert(1)</script> | pipe"


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_markdown_table_and_escaping(tmp_path):
    path = tiny_config(tmp_path, run=f"'{HOSTILE}'", extra=HARDWARE)
    result = invoke("preflight", path, "--format", "md")
    assert result.exit_code == 0, (result.output, result.exception)
    out = result.stdout
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| method"))
    assert lines[header + 1].startswith("|---|")
    assert re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", lines[header + 1])
    columns = unescaped_pipes(lines[header])
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    assert len(rows) == 3 and all(unescaped_pipes(r) == columns for r in rows), rows
    assert any("counted" in r for r in rows) and any("hardware" in r for r in rows)
    # the hostile name: no HTML, no extra cell
    assert "<script" not in out and "</script" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    title = next(line for line in lines if "alert(1)" in line)
    assert unescaped_pipes(title) == 0 and "\\|" in title
    tags = set(re.findall(r"<[^>]*>", out))
    assert tags <= {"<details>", "<summary>", "</summary>", "</details>"}, tags


# ----- --format text (the default)

def two_significant(n: int) -> str:
    mantissa, exponent = f"{n:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def test_text_default_shows_every_method_and_the_eu_line(tmp_path):
    path = tiny_config(tmp_path, extra=HARDWARE)
    result = invoke("preflight", path)
    assert result.exit_code == 0, (result.output, result.exception)
    out = result.stdout
    for method in ("counted", "analytic", "hardware"):
        assert re.search(rf"^{method}\*?\s", out, re.M), method
    central = K * T * TINY_PER_TOKEN
    assert f"total: {central:,} FLOPs (counted" in out
    eu = next(line for line in out.splitlines() if line.startswith("EU notification form:"))
    assert f"{two_significant(central)} FLOP, estimated by the counted method" in eu
    assert invoke("preflight", path, "--format", "text").stdout == out


def test_text_of_a_bare_count_names_the_skipped_count(tmp_path):
    path = tmp_path / "bare.yaml"
    path.write_text("run: bare\nmodel: {parameters: 7e9}\ndata: {tokens: 2e12}\n")
    result = invoke("preflight", path)
    assert result.exit_code == 0
    assert "counted method not used" in result.stdout
    assert f"total: {6 * 7 * 10 ** 9 * 2 * 10 ** 12:,} FLOPs (analytic" in result.stdout


def test_bad_format_exits_2(tmp_path):
    result = invoke("preflight", tiny_config(tmp_path), "--format", "xml")
    assert result.exit_code == 2 and "--format" in result.stderr


# ----- help

@pytest.mark.parametrize("command", ["preflight", "demo"])
def test_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert f"Usage: main {command}" in result.output or "Usage:" in result.output


def test_preflight_help_lists_the_formats():
    out = invoke("preflight", "--help").output
    assert "text" in out and "json" in out and "md" in out
