"""Training-run configs: one YAML file a run, validated into a ``RunConfig`` (docs/config.md).

Every problem is a ``ConfigError`` with a one-line message, ``<file>: <field>: got <repr>; expected <what>``.
A key set to null counts as left out. Counts (tokens, parameters, FLOPs) become exact ints; other numbers
(epochs, hours, utilization) exact Fractions. ``python -m auditor.inputs.run_config`` prints the JSON schema.
"""
import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from auditor.files import kind_of, outside, repository_root
from auditor.inputs.schema import (
    _NUMBER_JSON,
    InputError,
    _choice,
    _FieldError,
    _number,
    _Section,
    _string,
    text_list,
    validation_error,
)
from auditor.inputs.values import (
    import_path,
    unit_band,
)
from auditor.inputs.yaml_reader import parse_yaml_text, read_yaml_file
from auditor.text import join_words, printable, printable_text, short, suggest

MODALITIES = ("text", "code", "image", "video", "audio", "speech", "biology", "multimodal", "other")


MODEL_KINDS = ("hf_config", "factory", "parameters")


MAX_SEQ_LEN = 10_000_000


def allowed_roots(base_dir: Path, allow_paths=()) -> list[Path]:
    """Where files a config names may be: its repository (safefiles.repository_root), and the
    folders the caller allows besides."""
    return [repository_root(base_dir), *(Path(p).resolve() for p in allow_paths)]


def printable_path(path: Path | str, limit: int = 100) -> str:
    """A path for a message: control and bidi characters escaped, long ones cut at the front."""
    text = printable(path)
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


class ConfigError(InputError):
    """A bad training config (or policy). str(): one line naming the file, the field, what was given and
    what was expected."""


def _hf_config(value: Any) -> str | dict[str, Any]:
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"got {short(value)}; expected an inline Hugging Face config with string keys")
        if not value.get("model_type") or not isinstance(value["model_type"], str):
            raise _FieldError(f"got {short(value.get('model_type'))}; expected the transformers model type "
                              f"of the inline hf_config, e.g. llama, mixtral, t5", "model_type")
        return value
    if not isinstance(value, str):
        raise ValueError(f"got {short(value)}; expected a config.json path or an inline mapping with model_type")
    return printable_text(value, "a path to a Hugging Face config.json", 1000)


def _kwargs(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and k.isidentifier() for k in value):
        raise ValueError(f"got {short(value)}; expected a mapping of keyword arguments (names as keys)")
    return value


def _accelerator(value: Any) -> str:
    text = printable_text(value, "an accelerator id, e.g. H100-SXM", 100)
    from auditor.methods import hardware  # here, not at import: reading a config needs no accelerator table

    found = hardware.find_accelerator(text)   # ids and aliases, spelled loosely
    if found is not None:
        return found.id                       # stored as the table spells it
    ids = list(hardware.accelerator_ids())
    listed = ", ".join(ids[:12]) + (f" and {len(ids) - 12} more" if len(ids) > 12 else "")
    raise ValueError(f"got {short(value)}; expected an accelerator id from the table: {listed}{suggest(text, ids)}")


def _rules(value: Any) -> list[str]:
    return text_list(value, expected="a non-empty list of rule ids or rule file paths, e.g. "
                                     "[eu-ai-act-systemic-risk] (leave rules out for every rule)",
                     item="a rule id or a rule file path", limit=1000, non_empty=True)


def _only_with(data: dict[str, Any], pairs: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """``data``, where each (extra, needs) pair's extra key comes only with its needs key."""
    for extra, needs in pairs:
        if extra in data and needs not in data:
            raise _FieldError(f"got {short(data[extra])}; expected {extra} only with {needs}", extra)
    return data


class ModelSection(_Section):
    """The model: exactly one of hf_config, factory, parameters."""
    _what: ClassVar[str] = "a mapping with exactly one of hf_config, factory, parameters"
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": [k]} for k in MODEL_KINDS]})

    hf_config: Annotated[str | dict[str, Any] | None, BeforeValidator(_hf_config), WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "object", "required": ["model_type"]}]})] = Field(
        None, description="a Hugging Face config.json path (relative to the config's folder) or a mapping")
    factory: Annotated[str | None, BeforeValidator(import_path)] = Field(
        None, description="an import path 'package.module:function' of a function returning an nn.Module")
    kwargs: Annotated[dict[str, Any] | None, BeforeValidator(_kwargs)] = Field(
        None, description="keyword arguments for the factory")
    parameters: _number(int, "number of parameters") | None = Field(None, description="the model's parameter count")
    active_parameters: _number(int, "number of parameters") | None = Field(
        None, description="parameters active per token (mixture of experts), at most parameters")
    _hf_config_path: Path | None = PrivateAttr(None)

    @classmethod
    def _check(cls, data: dict[str, Any]) -> dict[str, Any]:
        given = [k for k in MODEL_KINDS if k in data]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(MODEL_KINDS)} (got {join_words(given) or 'none'})")
        return _only_with(data, (("kwargs", "factory"), ("active_parameters", "parameters")))

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> "ModelSection":
        if self.active_parameters is not None and self.active_parameters > self.parameters:
            raise _FieldError(f"got {self.active_parameters}; expected at most parameters ({self.parameters})",
                              "active_parameters")
        if isinstance(self.hf_config, str):
            context = info.context or {}
            base = Path(context.get("base_dir") or Path.cwd())
            roots = context.get("roots") or allowed_roots(base)
            try:
                path = (base / self.hf_config).resolve()
                # confined first: nothing is said about a file outside (not even whether it exists)
                problem = "outside the config's repository" if outside(path, roots) else kind_of(path)
            except (OSError, RuntimeError) as exc:      # a name too long, a symlink loop
                path, problem = base / self.hf_config, getattr(exc, "strerror", None) or "a symlink loop"
            if problem:
                shown = printable_path(path)
                where = f"{problem}: {shown}" if problem != "outside the config's repository" else \
                    f"{problem}, {printable_path(roots[0])}; allow another folder with --allow-path"
                raise _FieldError(f"got {short(self.hf_config)} ({where}); expected a Hugging Face "
                                  f"config.json path, relative to the config's folder, or an inline mapping "
                                  f"with model_type", "hf_config")
            self._hf_config_path = path
        return self

    @property
    def kind(self) -> str:
        """Which of hf_config, factory, parameters was given."""
        return next(k for k in MODEL_KINDS if getattr(self, k) is not None)

    @property
    def hf_config_path(self) -> Path | None:
        """The absolute path of a pathed hf_config (None for inline configs and other model kinds)."""
        return self._hf_config_path


class DataSection(_Section):
    """Training data: tokens, or steps x batch_size (sequences a step) x seq_len; epochs multiply."""
    _what: ClassVar[str] = "a mapping with tokens, or steps, batch_size and seq_len"
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["tokens"]},
                                                           {"required": ["steps", "batch_size", "seq_len"]}]})

    tokens: _number(int, "number of tokens") | None = Field(None, description="training tokens in one epoch")
    steps: _number(int, "number of optimizer steps") | None = Field(None, description="optimizer steps in one epoch")
    batch_size: _number(int, "number of sequences a step") | None = Field(None, description="sequences a step")
    seq_len: _number(int, "number of tokens a sequence", maximum=MAX_SEQ_LEN,
                    maximum_text=f"a sequence length of at most {MAX_SEQ_LEN:_}") | None = Field(
        None, description="tokens a sequence")
    decoder_len: _number(int, "number of decoder tokens a sequence", maximum=MAX_SEQ_LEN,
                         maximum_text=f"a decoder length of at most {MAX_SEQ_LEN:_}") | None = Field(
        None, description="an encoder-decoder's decoder tokens a sequence (default seq_len)")
    epochs: _number(Fraction, "number of epochs") = Field(Fraction(1), description="passes over the data")
    modality: _choice(MODALITIES, " (the kind of training data)") = Field("text", description="the kind of data")

    @classmethod
    def _check(cls, data: dict[str, Any]) -> dict[str, Any]:
        stepped = [k for k in ("steps", "batch_size") if k in data]
        if "tokens" in data and stepped:
            raise ValueError(f"give tokens, or steps and batch_size, not both (got {join_words(['tokens', *stepped])})")
        if "tokens" not in data:
            if not stepped:
                raise _FieldError("missing; expected tokens, or steps and batch_size with seq_len", "tokens")
            needed = {"steps": "the number of optimizer steps (needed with batch_size)",
                      "batch_size": "the number of sequences a step (needed with steps)",
                      "seq_len": "the tokens a sequence (needed with steps and batch_size)"}
            for key, what in needed.items():
                if key not in data:
                    raise _FieldError(f"missing; expected {what}", key)
        return _only_with(data, (("decoder_len", "seq_len"),))

    @property
    def tokens_per_epoch(self) -> int:
        """tokens, or steps x batch_size x seq_len."""
        return self.tokens if self.tokens is not None else self.steps * self.batch_size * self.seq_len

    @property
    def total_tokens(self) -> int:
        """tokens_per_epoch x epochs, computed exactly (epochs is a Fraction) and rounded down to an int."""
        return math.floor(self.tokens_per_epoch * self.epochs)


class HardwareSection(_Section):
    """The hardware plan: accelerators x hours x peak FLOP/s x utilization."""
    _what: ClassVar[str] = "a mapping with accelerator, count, hours and optionally utilization"

    accelerator: Annotated[str, BeforeValidator(_accelerator)] = Field(
        description="an accelerator id from the accelerator table, e.g. H100-SXM")
    count: _number(int, "number of accelerators") = Field(description="the number of accelerators")
    hours: _number(Fraction, "number of hours") = Field(description="the wall-clock hours of training")
    utilization: _number(Fraction, "utilization", maximum=1, maximum_text="a utilization of at most 1 (0.4: 40 %)") \
        | None = Field(None, description="the fraction of peak FLOP/s achieved, 0 < u <= 1")
    utilization_band: Annotated[tuple[Fraction, Fraction] | None, BeforeValidator(unit_band), WithJsonSchema(
        {"type": "array", "items": _NUMBER_JSON, "minItems": 2, "maxItems": 2})] = Field(
        None, description="[low, high] utilization, 0 < low <= high <= 1")

    @model_validator(mode="after")
    def _inside_band(self) -> "HardwareSection":
        if self.utilization is not None and self.utilization_band is not None:
            low, high = self.utilization_band
            if not low <= self.utilization <= high:
                raise _FieldError(f"got {float(self.utilization):g}; expected a value inside utilization_band "
                                  f"[{float(low):g}, {float(high):g}]", "utilization")
        return self


class LineageSection(_Section):
    """Where the model came from: the base model and its training compute, for cumulative rules."""
    _what: ClassVar[str] = "a mapping with base_model, base_compute_flops and developer"
    base_model: _string("the base model's name", 200) | None = Field(None, description="the base model's name")
    base_compute_flops: _number(int, "number of FLOPs") | None = Field(None, description="the base model's FLOPs")
    developer: _choice(("same", "other"), " (who made this modification: the base model's developer or another)") \
        | None = Field(None, description="same or other: who made this modification")


class RunConfig(_Section):
    """One training run's config. ``source_path``: the YAML file it came from (None when built from text)."""
    _what: ClassVar[str] = "a mapping with run, model and data"

    run: _string("a run name", 200) = Field(description="the run's name as reports show it (1-200 characters)")
    model: ModelSection = Field(description="a mapping with exactly one of hf_config, factory, parameters")
    data: DataSection = Field(description="a mapping with tokens, or steps, batch_size and seq_len")
    hardware: HardwareSection | None = Field(None, description="the hardware plan")
    lineage: LineageSection | None = Field(None, description="the base model and its compute")
    rules: Annotated[list[str] | None, BeforeValidator(_rules)] = Field(
        None, description="rule ids or rule file paths (default: every rule)")
    _source_path: Path | None = PrivateAttr(None)

    @property
    def source_path(self) -> Path | None:
        return self._source_path

    @property
    def total_tokens(self) -> int:
        """Training tokens over all epochs: tokens x epochs, or steps x batch_size x seq_len x epochs,
        in exact arithmetic and rounded down (1.5 epochs of 15 tokens is 22)."""
        return self.data.total_tokens

    @property
    def hf_config_path(self) -> Path | None:
        return self.model.hf_config_path


def run_config_from_mapping(data: Any, *, source: str = "<config>", base_dir: str | Path | None = None,
                            allow_paths=()) -> RunConfig:
    """Validate parsed YAML. ``base_dir``: where relative paths start (default: the working directory).
    Files it names must lie in base_dir's repository or under one of ``allow_paths``."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise ConfigError(f"{source}: expected a mapping at the top level, got {got}", source=source)
    base = Path(base_dir) if base_dir else Path.cwd()
    try:
        return RunConfig.model_validate(data, context={"base_dir": base, "roots": allowed_roots(base, allow_paths)})
    except ValidationError as exc:
        raise validation_error(exc, source, ConfigError) from None


def parse_run_config(text: str, *, source: str = "<config>", base_dir: str | Path | None = None,
                     allow_paths=()) -> RunConfig:
    """A RunConfig from YAML text; ``source`` names it in messages."""
    data = parse_yaml_text(text, source, error=ConfigError)
    return run_config_from_mapping(data, source=source, base_dir=base_dir, allow_paths=allow_paths)


def load_run_config(path: str | Path, *, allow_paths=()) -> RunConfig:
    """Read and check one training-run YAML file; raise ConfigError naming the file and field on any problem.
    Files the config names must lie in its repository, or under one of ``allow_paths``."""
    path = Path(path)
    data = read_yaml_file(path, "a YAML config", error=ConfigError)
    config = run_config_from_mapping(data, source=str(path), base_dir=path.parent.resolve(), allow_paths=allow_paths)
    config._source_path = path.resolve()
    return config


def run_config_json_schema() -> dict[str, Any]:
    """The JSON schema of a training config (input form: numbers may be strings such as "1.5e25")."""
    schema = RunConfig.model_json_schema(mode="validation")
    schema.pop("title", None)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "auditor training-run config", **schema}


if __name__ == "__main__":
    print(json.dumps(run_config_json_schema(), indent=2))
