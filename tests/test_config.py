"""Training-run configs: good ones load exactly, bad ones fail with one line naming file and field.

BAD_CONFIGS is a table other tests reuse (the CLI must exit 2 on each row):

    from test_config import BAD_CONFIGS, write_case
    path = write_case(tmp_path, spec)      # spec: row[1]

Each row is (id, spec, field, fragment): spec is YAML text (written to run.yaml), raw bytes, or a
Files(...) describing a small tree; field is the field path the message must name (None for
problems with the file as a whole); fragment is a piece of the message.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import field as dc_field
from fractions import Fraction
from pathlib import Path

import pytest

from auditor.inputs.run_config import (
    ConfigError,
    RunConfig,
    load_run_config,
    parse_run_config,
    run_config_from_mapping,
    run_config_json_schema,
)
from auditor.inputs.values import (
    NumberError,
    parse_number,
    positive_count,
    positive_number,
)

REPO = Path(__file__).resolve().parents[1]
DIR = "<directory>"      # a Files entry with this content is made as an empty directory


@dataclass(frozen=True)
class Files:
    """A small tree for one case: {relative path: text, bytes or DIR}; ``config`` is the file to load."""
    files: dict = dc_field(default_factory=dict)
    config: str = "run.yaml"


def write_case(tmp_path: Path, spec: str | bytes | Files) -> Path:
    """Write one case under tmp_path and return the path of the config to load."""
    if not isinstance(spec, Files):
        spec = Files({"run.yaml": spec})
    for name, content in spec.files.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if content == DIR:
            target.mkdir()
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return tmp_path / spec.config


def doc(run: str = "run: test-run", model: str = "model: {parameters: 1e9}", data: str = "data: {tokens: 1e12}",
        *more: str) -> str:
    """A config from its top-level lines; pass '' to leave a section out."""
    return "\n".join(line for line in (run, model, data, *more) if line) + "\n"


def tokens(value: str) -> str:
    return doc(data=f"data: {{tokens: {value}}}")


def hardware(body: str) -> str:
    return doc("run: r", "model: {parameters: 1e9}", "data: {tokens: 1e12}", f"hardware: {body}")


def lineage(body: str) -> str:
    return doc("run: r", "model: {parameters: 1e9}", "data: {tokens: 1e12}", f"lineage: {body}")


H100 = "accelerator: H100-SXM, count: 8, hours: 10"

BAD_CONFIGS = [
    # model: exactly one of hf_config, factory, parameters
    ("missing-model", doc(model=""), "model", "missing; expected a mapping with exactly one of"),
    ("null-model", doc(model="model:"), "model", "missing"),
    ("two-models", doc(model="model: {hf_config: {model_type: llama}, parameters: 1e9}"), "model",
     "give exactly one of hf_config, factory, parameters (got hf_config and parameters)"),
    ("three-models", doc(model="model: {hf_config: {model_type: llama}, factory: 'a.b:c', parameters: 1e9}"),
     "model", "(got hf_config, factory and parameters)"),
    ("no-model-kind", doc(model="model: {}"), "model", "(got none)"),
    ("model-not-mapping", doc(model="model: llama.json"), "model", "expected a mapping"),
    ("hf-config-path-missing", doc(model="model: {hf_config: nope.json}"), "model.hf_config", "no such file"),
    ("hf-config-path-dir", Files({"cfgdir": DIR, "run.yaml": doc(model="model: {hf_config: cfgdir}")}),
     "model.hf_config", "is a directory"),
    ("hf-config-inline-no-model-type", doc(model="model: {hf_config: {hidden_size: 8}}"),
     "model.hf_config.model_type", "expected the transformers model type"),
    ("hf-config-number", doc(model="model: {hf_config: 5}"), "model.hf_config", "config.json path"),
    ("factory-without-colon", doc(model="model: {factory: mypkg.models.build}"), "model.factory",
     "expected an import path 'package.module:function'"),
    ("factory-with-spaces", doc(model="model: {factory: 'my pkg.models:build'}"), "model.factory", "no spaces"),
    ("factory-two-colons", doc(model="model: {factory: 'a:b:c'}"), "model.factory", "import path"),
    ("kwargs-without-factory", doc(model="model: {parameters: 1e9, kwargs: {a: 1}}"), "model.kwargs",
     "only with factory"),
    ("kwargs-not-mapping", doc(model="model: {factory: 'a.b:c', kwargs: [1]}"), "model.kwargs",
     "keyword arguments"),
    ("active-over-parameters", doc(model="model: {parameters: 1e9, active_parameters: 2e9}"),
     "model.active_parameters", "at most parameters (1000000000)"),
    ("active-without-parameters", doc(model="model: {hf_config: {model_type: llama}, active_parameters: 1e9}"),
     "model.active_parameters", "only with parameters"),
    ("parameters-fraction", doc(model="model: {parameters: '1.5'}"), "model.parameters", "whole"),
    ("model-typo", doc(model="model: {paramters: 1e9}"), "model.paramters", "did you mean parameters"),
    # data: tokens, or steps x batch_size x seq_len
    ("missing-data", doc(data=""), "data", "missing"),
    ("empty-data", doc(data="data: {}"), "data.tokens", "missing; expected tokens, or steps and batch_size"),
    ("tokens-negative", tokens("-5"), "data.tokens", "got -5; expected a positive whole number of tokens"),
    ("tokens-zero", tokens("0"), "data.tokens", "positive"),
    ("tokens-lots", tokens("lots"), "data.tokens", "got 'lots'; expected a positive whole number of tokens, written"),
    ("tokens-fraction-string", tokens("'1.5'"), "data.tokens", "whole number of tokens (no fractions)"),
    ("tokens-fraction-float", tokens("1.5"), "data.tokens", "no fractions"),
    ("tokens-boolean", tokens("true"), "data.tokens", "not a boolean"),
    ("tokens-nan", tokens(".nan"), "data.tokens", "finite"),
    ("tokens-nan-string", tokens("NaN"), "data.tokens", "finite"),
    ("tokens-inf", tokens(".inf"), "data.tokens", "finite"),
    ("tokens-1e50", tokens("1e50"), "data.tokens", "at most 10^40"),
    ("tokens-power-absurd", tokens("'10^99'"), "data.tokens", "at most 10^40"),
    ("tokens-huge-exponent", tokens("1e999999999"), "data.tokens", "at most 10^40"),
    ("tokens-list", tokens("[1, 2]"), "data.tokens", "written like"),
    ("tokens-bad-underscores", tokens("'1__000'"), "data.tokens", "written like"),
    ("tokens-and-steps", doc(data="data: {tokens: 1e12, steps: 10, batch_size: 4, seq_len: 8}"), "data",
     "not both (got tokens, steps and batch_size)"),
    ("steps-without-batch-size", doc(data="data: {steps: 10, seq_len: 8}"), "data.batch_size", "missing"),
    ("steps-without-seq-len", doc(data="data: {steps: 10, batch_size: 4}"), "data.seq_len", "missing"),
    ("batch-size-without-steps", doc(data="data: {batch_size: 4, seq_len: 8}"), "data.steps", "missing"),
    ("steps-fraction", doc(data="data: {steps: 10.5, batch_size: 4, seq_len: 8}"), "data.steps", "whole"),
    ("batch-size-zero", doc(data="data: {steps: 10, batch_size: 0, seq_len: 8}"), "data.batch_size", "positive"),
    ("seq-len-zero", doc(data="data: {tokens: 1e12, seq_len: 0}"), "data.seq_len", "positive"),
    ("seq-len-huge", doc(data="data: {tokens: 1e12, seq_len: 2e7}"), "data.seq_len", "at most 10_000_000"),
    ("epochs-zero", doc(data="data: {tokens: 1e12, epochs: 0}"), "data.epochs", "positive number of epochs"),
    ("epochs-negative", doc(data="data: {tokens: 1e12, epochs: -1.5}"), "data.epochs", "positive"),
    ("epochs-boolean", doc(data="data: {tokens: 1e12, epochs: yes}"), "data.epochs", "not a boolean"),
    ("modality-smell", doc(data="data: {tokens: 1e12, modality: smell}"), "data.modality",
     "got 'smell'; expected text, code"),
    ("data-typo", doc(data="data: {tokns: 1e12}"), "data.tokns", "unknown key; expected one of tokens, steps"),
    # hardware
    ("unknown-accelerator", hardware("{accelerator: NoSuchChip-9000, count: 8, hours: 10}"),
     "hardware.accelerator", "expected an accelerator id"),
    ("hardware-count-zero", hardware("{accelerator: H100-SXM, count: 0, hours: 10}"), "hardware.count",
     "positive whole number of accelerators"),
    ("hardware-count-fraction", hardware("{accelerator: H100-SXM, count: 2.5, hours: 10}"), "hardware.count",
     "whole"),
    ("hardware-hours-negative", hardware("{accelerator: H100-SXM, count: 8, hours: -3}"), "hardware.hours",
     "positive number of hours"),
    ("hardware-hours-words", hardware("{accelerator: H100-SXM, count: 8, hours: long}"), "hardware.hours",
     "written like"),
    ("hardware-missing-hours", hardware("{accelerator: H100-SXM, count: 8}"), "hardware.hours", "missing"),
    ("utilization-1.5", hardware(f"{{{H100}, utilization: 1.5}}"), "hardware.utilization", "at most 1"),
    ("utilization-zero", hardware(f"{{{H100}, utilization: 0}}"), "hardware.utilization", "positive"),
    ("utilization-band-reversed", hardware(f"{{{H100}, utilization_band: [0.5, 0.3]}}"),
     "hardware.utilization_band", "0 < low <= high <= 1 (low comes first)"),
    ("utilization-band-one-value", hardware(f"{{{H100}, utilization_band: [0.5]}}"), "hardware.utilization_band",
     "[low, high]"),
    ("utilization-band-over-one", hardware(f"{{{H100}, utilization_band: [0.5, 1.2]}}"),
     "hardware.utilization_band", "high <= 1"),
    ("utilization-outside-band", hardware(f"{{{H100}, utilization: 0.9, utilization_band: [0.3, 0.5]}}"),
     "hardware.utilization", "inside utilization_band [0.3, 0.5]"),
    ("hardware-not-mapping", hardware("H100"), "hardware", "expected a mapping"),
    ("hardware-typo", hardware(f"{{{H100}, utilisation: 0.4}}"), "hardware.utilisation", "did you mean utilization"),
    # lineage
    ("developer-maybe", lineage("{base_model: llama, developer: maybe}"), "lineage.developer",
     "got 'maybe'; expected same or other"),
    ("base-compute-negative", lineage("{base_compute_flops: -3.8e25}"), "lineage.base_compute_flops", "positive"),
    ("base-compute-lots", lineage("{base_compute_flops: lots}"), "lineage.base_compute_flops", "written like"),
    ("base-model-number", lineage("{base_model: 405}"), "lineage.base_model", "a string"),
    ("lineage-typo", lineage("{base_modle: llama}"), "lineage.base_modle", "did you mean base_model"),
    # run
    ("run-missing", doc(run=""), "run", "missing"),
    ("run-empty", doc(run="run: ''"), "run", "not empty"),
    ("run-blank", doc(run="run: '   '"), "run", "not empty"),
    ("run-newline", doc(run='run: "two\\nlines"'), "run", "U+000A is a control or formatting character: hostile"),
    ("run-ansi-escape", doc(run='run: "red\\e[31m"'), "run", "U+001B"),
    ("run-nul", doc(run='run: "a\\0b"'), "run", "U+0000"),
    ("run-bidi-override", doc(run='run: "abc\\u202Edef"'), "run", "hostile"),
    ("run-tab", doc(run='run: "a\\tb"'), "run", "hostile"),
    ("run-too-long", doc(run="run: " + "x" * 201), "run", "at most 200 characters"),
    ("run-number", doc(run="run: 42"), "run", "a string; quote it"),
    ("run-list", doc(run="run: [a]"), "run", "a string"),
    # rules
    ("rules-not-a-list", doc("run: r", "model: {parameters: 1e9}", "data: {tokens: 1e12}", "rules: eu-ai-act"),
     "rules", "expected a non-empty list of rule ids"),
    ("rules-with-a-number", doc("run: r", "model: {parameters: 1e9}", "data: {tokens: 1e12}", "rules: [eu, 3]"),
     "rules[1]", "rule id"),
    ("rules-empty", doc("run: r", "model: {parameters: 1e9}", "data: {tokens: 1e12}", "rules: []"), "rules",
     "non-empty list"),
    # unknown keys
    ("unknown-top-level-key", doc("run: r", "model: {parameters: 1e9}", "data: {tokens: 1e12}", "tokens: 5"),
     "tokens", "unknown key; expected one of run, model, data, hardware, lineage, rules"),
    ("top-level-typo", doc("run: r", "model: {parameters: 1e9}", "data: {tokens: 1e12}",
                           "hardwre: {accelerator: H100-SXM}"), "hardwre", "did you mean hardware"),
    ("non-string-key", doc("run: r", "model: {parameters: 1e9}", "data: {tokens: 1e12}", "1: x"), "1",
     "unknown key"),
    # the file itself
    ("file-does-not-exist", Files({}), None, "cannot read the file: No such file or directory"),
    ("file-is-a-directory", Files({"run.yaml": DIR}), None, "cannot read the file"),
    ("top-level-list", "- run: a\n- run: b\n", None, "expected a mapping at the top level, got list"),
    ("top-level-scalar", "just some text\n", None, "expected a mapping at the top level, got str"),
    ("empty-file", "", None, "expected a mapping at the top level, got an empty file"),
    ("comments-only", "# nothing here\n", None, "got an empty file"),
    ("invalid-yaml", "run: r\nmodel: [\n", None, "not valid YAML (line"),
    ("invalid-yaml-indent", "run: r\n  model: x\n bad: 1\n", None, "not valid YAML (line 2"),
    ("duplicate-key", "run: a\nrun: b\nmodel: {parameters: 1e9}\ndata: {tokens: 1e12}\n", None,
     "duplicate key 'run'"),
    ("duplicate-nested-key", doc(data="data: {tokens: 1e12, tokens: 2e12}"), None, "duplicate key 'tokens'"),
    ("python-tag", "run: !!python/object/apply:os.system [ls]\n", None, "not valid YAML"),
    ("two-documents", "run: a\n---\nrun: b\n", None, "not valid YAML"),
    ("not-utf8", b"run: \xff\xfe\n", None, "not UTF-8 text (byte 0xff at offset 5)"),
    ("raw-nul-byte", b"run: a\x00b\n", None, "not valid YAML (offset 6): U+0000"),
    ("nested-too-deeply", "[" * 2000, None, "not valid YAML"),
]

NEEDS_ACCELERATOR_TABLE = {"unknown-accelerator"}


def _have_accelerator_table() -> bool:
    try:
        from auditor.methods.hardware import accelerator_ids  # noqa: F401
    except ImportError:
        return False
    return True


def test_table_is_well_formed():
    ids = [row[0] for row in BAD_CONFIGS]
    assert len(ids) == len(set(ids)) and len(ids) >= 55
    assert all(len(row) == 4 for row in BAD_CONFIGS)


@pytest.mark.parametrize("case_id,spec,field,fragment", BAD_CONFIGS, ids=[row[0] for row in BAD_CONFIGS])
def test_bad_config(tmp_path, case_id, spec, field, fragment):
    if case_id in NEEDS_ACCELERATOR_TABLE and not _have_accelerator_table():
        pytest.skip("auditor.methods.hardware is not installed")
    path = write_case(tmp_path, spec)
    with pytest.raises(ConfigError) as caught:
        load_run_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "run.yaml" in message
    if field is not None:
        assert f" {field}: " in message, message
        assert caught.value.field == field or f"; {field}: " in message
    assert fragment in message, message
    assert "\n" not in message and "\x1b" not in message and "\x00" not in message
    for leak in ("Traceback", "validation error", "pydantic", "For further information", "Value error,"):
        assert leak not in message
    assert len(message) < 600 + len(str(path))


# ----- good configs

def load(tmp_path: Path, text: str, name: str = "run.yaml") -> RunConfig:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return load_run_config(path)


DESIGN_EXAMPLE = """\
run: llama-3.1-405b-pretrain      # the name reports show
model:                            # exactly one of:
  hf_config: llama-405b.json      #   a Hugging Face config.json path, or an inline mapping
data:
  tokens: 15.6e12                 # or steps + batch_size (sequences a step); epochs multiply
  seq_len: 8192
hardware:                         # optional: enables the hardware method
  accelerator: H100-SXM           # a row of the cited accelerator table
  count: 16384
  hours: 1200
  utilization: 0.40
lineage:                          # optional: fine-tunes and other modifications
  base_model: llama-3.1-405b
  base_compute_flops: 3.8e25
  developer: same                 # same | other (the EU one-third rule applies to other)
rules: [eu-ai-act-systemic-risk]  # optional; default: every rule in thresholds/ (not_in_force shown)
"""


def test_design_example(tmp_path, monkeypatch):
    (tmp_path / "llama-405b.json").write_text(json.dumps({"model_type": "llama"}))
    monkeypatch.chdir("/")                                   # paths are relative to the file, not the cwd
    config = load(tmp_path, DESIGN_EXAMPLE)
    assert config.run == "llama-3.1-405b-pretrain"
    assert config.model.kind == "hf_config" and config.model.hf_config == "llama-405b.json"
    assert config.hf_config_path == (tmp_path / "llama-405b.json").resolve() and config.hf_config_path.is_absolute()
    assert config.data.tokens == 15_600_000_000_000 and type(config.data.tokens) is int
    assert config.data.seq_len == 8192 and config.data.epochs == 1 and config.data.modality == "text"
    assert config.total_tokens == 15_600_000_000_000
    assert config.hardware.accelerator == "H100-SXM" and config.hardware.count == 16384
    assert config.hardware.hours == 1200 and config.hardware.utilization == Fraction(2, 5)
    assert config.hardware.utilization_band is None
    assert config.lineage.base_compute_flops == 38 * 10 ** 24 and config.lineage.developer == "same"
    assert config.rules == ["eu-ai-act-systemic-risk"]
    assert config.source_path == (tmp_path / "run.yaml").resolve()


def test_steps_form_and_epochs(tmp_path):
    config = load(tmp_path, doc(data="data: {steps: 1000, batch_size: 512, seq_len: 4096, epochs: 2}"))
    assert config.data.tokens is None
    assert config.data.tokens_per_epoch == 1000 * 512 * 4096
    assert config.total_tokens == 2 * 1000 * 512 * 4096


@pytest.mark.parametrize("tokens_, epochs, total", [
    (10, "0.3", 3),                     # a float would make this 2.9999... and round down to 2
    (15, 1.5, 22),                      # rounded down
    (15_600_000_000_000, "1.1", 17_160_000_000_000),
    (9, "'2/3'", 6),                    # a fraction, as JSON dumps write them
    (7, "'1/0'", None),                 # refused (checked below)
])
def test_epochs_multiply_exactly(tmp_path, tokens_, epochs, total):
    text = doc(data=f"data: {{tokens: {tokens_}, epochs: {epochs}}}")
    if total is None:
        with pytest.raises(ConfigError, match="data.epochs"):
            load(tmp_path, text)
        return
    assert load(tmp_path, text).total_tokens == total


def test_inline_hf_config(tmp_path):
    config = load(tmp_path, doc(model="model: {hf_config: {model_type: llama, hidden_size: 64, num_hidden_layers: 2}}"))
    assert config.model.kind == "hf_config"
    assert config.model.hf_config == {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2}
    assert config.hf_config_path is None


def test_pathed_hf_config_relative_to_the_file(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()                           # one repository: ../.. stays inside it
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.json").write_text('{"model_type": "gpt2"}')
    monkeypatch.chdir(tmp_path / "configs")               # a cwd where the relative path would be wrong
    config = load(tmp_path, doc(model="model: {hf_config: ../../configs/tiny.json}"), name="runs/a/run.yaml")
    assert config.hf_config_path == (tmp_path / "configs" / "tiny.json").resolve()
    assert config.model.hf_config == "../../configs/tiny.json"


def test_factory_with_kwargs(tmp_path):
    config = load(tmp_path, doc(model="model: {factory: 'mypkg.models:build', kwargs: {layers: 4, width: 256}}"))
    assert config.model.kind == "factory"
    assert config.model.factory == "mypkg.models:build"
    assert config.model.kwargs == {"layers": 4, "width": 256}
    assert load(tmp_path, doc(model="model: {factory: 'a.b:Builder.make'}")).model.kwargs is None


def test_parameters_and_active_parameters(tmp_path):
    config = load(tmp_path, doc(model="model: {parameters: 46.7e9, active_parameters: 12.9e9}"))
    assert config.model.kind == "parameters"
    assert config.model.parameters == 46_700_000_000 and config.model.active_parameters == 12_900_000_000


@pytest.mark.parametrize("written,exact", [
    ("1.5e25", 15 * 10 ** 24),
    ("1.0e+25", 10 ** 25),                          # a YAML float
    ("3.8e25", 38 * 10 ** 24),
    ("3.8e+25", 38 * 10 ** 24),                     # a YAML float, read through its repr
    ("'1e25'", 10 ** 25),
    ("'10^25'", 10 ** 25),
    ("'10**25'", 10 ** 25),
    ("'1.5 x 10^25'", 15 * 10 ** 24),
    ("'1.5x10^25'", 15 * 10 ** 24),
    ("'1.5 × 10^25'", 15 * 10 ** 24),
    ("'1.5 * 10^25'", 15 * 10 ** 24),
    ("'2.3E+24'", 23 * 10 ** 23),
    ("15_600_000_000_000", 15_600_000_000_000),     # a YAML int
    ("'15_600_000_000_000'", 15_600_000_000_000),
    ("15600000000000", 15_600_000_000_000),
    ("15.6e12", 15_600_000_000_000),
    ("' 42 '", 42),
    ("'1e40'", 10 ** 40),
])
def test_number_syntaxes_are_exact_ints(tmp_path, written, exact):
    config = load(tmp_path, lineage(f"{{base_compute_flops: {written}}}"))
    assert config.lineage.base_compute_flops == exact and type(config.lineage.base_compute_flops) is int


def test_null_means_left_out(tmp_path):
    config = load(tmp_path, doc("run: r", "model: {parameters: 1e9, active_parameters: null}",
                                "data: {tokens: 1e12, seq_len: ~}", "hardware:", "lineage: null"))
    assert config.model.active_parameters is None and config.data.seq_len is None
    assert config.hardware is None and config.lineage is None and config.rules is None


def test_hardware_band_and_case_of_accelerator(tmp_path):
    config = load(tmp_path, hardware("{accelerator: H100-SXM, count: 8, hours: 1.5, utilization: 0.4, "
                                     "utilization_band: [0.3, '0.5']}"))
    assert config.hardware.hours == Fraction(3, 2)
    assert config.hardware.utilization_band == (Fraction(3, 10), Fraction(1, 2))
    if _have_accelerator_table():
        config = load(tmp_path, hardware("{accelerator: h100-sxm, count: 8, hours: 1}"))
        assert config.hardware.accelerator == "H100-SXM"                # the table's spelling


def test_punctuation_in_names_is_kept(tmp_path):
    config = load(tmp_path, doc(run="run: '<b>llama</b> \"v2\" & co: é 🚀'"))
    assert config.run == '<b>llama</b> "v2" & co: é 🚀'


def test_anchors_and_merge_keys(tmp_path):
    text = "base: &b {tokens: 1e12, seq_len: 8}\n"
    with pytest.raises(ConfigError, match="base: unknown key"):
        load(tmp_path, text + doc())
    config = load(tmp_path, doc(data="data: {<<: {tokens: 1e12, seq_len: 8}, seq_len: 16}"))
    assert config.data.seq_len == 16


def test_round_trip(tmp_path):
    (tmp_path / "llama-405b.json").write_text('{"model_type": "llama"}')
    config = load(tmp_path, DESIGN_EXAMPLE)
    again = RunConfig.model_validate(config.model_dump(), context={"base_dir": tmp_path})
    assert again.model_dump() == config.model_dump()
    assert run_config_from_mapping(json.loads(config.model_dump_json()), base_dir=tmp_path).model_dump() \
        == config.model_dump()


def test_parse_text_and_mapping_sources():
    config = parse_run_config(doc(), source="inline.yaml")
    assert config.total_tokens == 10 ** 12 and config.source_path is None
    with pytest.raises(ConfigError, match=r"^ci\.yaml: data\.tokens: got -1;"):
        parse_run_config(tokens("-1"), source="ci.yaml")
    with pytest.raises(ConfigError) as caught:
        run_config_from_mapping({"run": "r", "model": {"parameters": 0}, "data": {"tokens": 0}}, source="x")
    assert caught.value.field == "model.parameters" and caught.value.source == "x"
    assert "; data.tokens: " in str(caught.value)


def test_many_errors_are_capped(tmp_path):
    text = doc(run="run: ''", model="model: {parameters: 0}",
               data="data: {tokens: 0, epochs: 0}") + "rules: [1]\nhardware: 5\n"
    message = str(pytest.raises(ConfigError, load_run_config, tmp_path / "x.yaml").value)   # missing file first
    assert "cannot read" in message
    with pytest.raises(ConfigError, match=r"\(and \d+ more\)$"):
        load(tmp_path, text)


def test_json_schema_file_is_current():
    schema = run_config_json_schema()
    assert set(schema["properties"]) == {"run", "model", "data", "hardware", "lineage", "rules"}
    assert schema["required"] == ["run", "model", "data"] and schema["additionalProperties"] is False
    written = json.loads((REPO / "docs" / "config-schema.json").read_text())
    assert written == schema, "regenerate: python -m auditor.inputs.run_config > docs/config-schema.json"


# ----- numbers

def test_numbers_directly():
    assert parse_number("1.5 x 10^-3") == Fraction(3, 2000)
    assert parse_number(0.1) == Fraction(1, 10)                 # the decimal written, not the binary float
    assert positive_number("0.4", "utilization", maximum=1) == Fraction(2, 5)
    assert positive_count(" 2.3E+24 ", "number of FLOPs") == 23 * 10 ** 23
    for bad in (True, None, "1e-999", "--1", "0x10", "1,000", "", "e5", "10^", "1.5 x 10^25.5", "x" * 200):
        with pytest.raises(NumberError):
            positive_count(bad, "number of tokens")
    with pytest.raises(NumberError, match=r"^got 1e\+41; expected a number of tokens of at most 10\^40"):
        positive_count(1e41, "number of tokens")
