"""Training-run configs: one YAML file a run, validated into a ``RunConfig`` (docs/config.md).

Every problem is a ``ConfigError`` with a one-line message, ``<file>: <field>: got <repr>; expected <what>``.
A key set to null counts as left out. Counts (tokens, parameters, FLOPs) become exact ints; other numbers
(epochs, hours, utilization) exact Fractions. ``python -m auditor.config`` prints the JSON schema.
"""
import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError,
                      ValidationInfo, WithJsonSchema, model_validator)

from .safefiles import FileRefused, kind_of, outside, read_regular, repository_root
from .numbers import (import_path, join_words, printable, positive_count, positive_number, printable_text, short,
                      suggest, unit_band)

MODALITIES = ("text", "code", "image", "video", "audio", "speech", "biology", "multimodal", "other")
MODEL_KINDS = ("hf_config", "factory", "parameters")
MAX_SEQ_LEN = 10_000_000
MAX_FILE_BYTES = 1_000_000


def allowed_roots(base_dir: Path, allow_paths=()) -> list[Path]:
    """Where files a config names may be: its repository (safefiles.repository_root), and the
    folders the caller allows besides."""
    return [repository_root(base_dir), *(Path(p).resolve() for p in allow_paths)]


def printable_path(path: Path | str, limit: int = 100) -> str:
    """A path for a message: control and bidi characters escaped, long ones cut at the front."""
    text = printable(path)
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


class ConfigError(Exception):
    """A bad training config. str(): one line naming the file, the field, what was given and what was expected."""
    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        super().__init__(message)
        self.source, self.field = source, field


class _FieldError(ValueError):
    """Raised inside a section's validator about one of its keys: ``sub`` extends the field path."""
    def __init__(self, message: str, *sub: str | int):
        super().__init__(message)
        self.sub = sub


# ----- field types: a validator that gives our message, and what the JSON schema says is accepted

_NUMBER_JSON = {"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^\s*[-+0-9._eE]+\s*$|10\s*(\^|\*\*)"}]}


def _number(kind: type, what: str, **limits: Any) -> Any:
    """int: a positive whole count; Fraction: a positive number, exact."""
    check, adjective = (positive_count, "positive whole") if kind is int else (positive_number, "positive")
    return Annotated[kind, BeforeValidator(lambda v: check(v, what, **limits)),
                     WithJsonSchema({**_NUMBER_JSON, "description": f"a {adjective} {what}"})]


def _choice(options: tuple[str, ...], meaning: str) -> Any:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise ValueError(f"got {short(value)}; expected {join_words(options, 'or')}{meaning}")
        return value
    return Annotated[str, BeforeValidator(check), WithJsonSchema({"enum": list(options)})]


def _string(what: str, limit: int) -> Any:
    return Annotated[str, BeforeValidator(lambda v: printable_text(v, what, limit)),
                     WithJsonSchema({"type": "string", "maxLength": limit})]


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
    try:
        from .methods import hardware
    except ImportError:             # no accelerator table installed: checked where it is used
        return text
    found = getattr(hardware, "find_accelerator", lambda name: None)(text)   # ids and aliases, spelled loosely
    ids = list(hardware.accelerator_ids())
    if found is not None or text in ids:
        return found.id if found is not None else text     # stored as the table spells it
    listed = ", ".join(ids[:12]) + (f" and {len(ids) - 12} more" if len(ids) > 12 else "")
    raise ValueError(f"got {short(value)}; expected an accelerator id from the table: {listed}{suggest(text, ids)}")


def text_list(value: Any, *, expected: str, item: str, limit: int, non_empty: bool = False) -> list[str]:
    """A list of printable strings (printable_text each), a bad item named by its index."""
    if not isinstance(value, list) or (non_empty and not value):
        raise ValueError(f"got {short(value)}; expected {expected}")
    for i, text in enumerate(value):
        try:
            printable_text(text, item, limit)
        except ValueError as exc:
            raise _FieldError(str(exc), i) from None
    return value


def _rules(value: Any) -> list[str]:
    return text_list(value, expected="a non-empty list of rule ids or rule file paths, e.g. "
                                     "[eu-ai-act-systemic-risk] (leave rules out for every rule)",
                     item="a rule id or a rule file path", limit=1000, non_empty=True)


# ----- sections

def _only_with(data: dict[str, Any], pairs: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """``data``, where each (extra, needs) pair's extra key comes only with its needs key."""
    for extra, needs in pairs:
        if extra in data and needs not in data:
            raise _FieldError(f"got {short(data[extra])}; expected {extra} only with {needs}", extra)
    return data


class _Section(BaseModel):
    """A mapping with known keys: null values dropped, unknown keys and missing required ones named."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _what: ClassVar[str] = "a mapping"

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        if isinstance(data, BaseModel):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"got {short(data)}; expected {cls._what}")
        keys = {(info.alias or name): name for name, info in cls.model_fields.items()}  # as written in YAML
        for key in data:
            if not isinstance(key, str) or key not in keys:
                raise _FieldError(f"unknown key; expected one of {', '.join(keys)}{suggest(str(key), keys)}", str(key))
        data = {k: v for k, v in data.items() if v is not None}
        for key, name in keys.items():
            if cls.model_fields[name].is_required() and key not in data:
                raise _FieldError(f"missing; expected {cls.model_fields[name].description}", key)
        return cls._check(data)

    _check = classmethod(lambda cls, data: data)      # sections override it for checks across keys


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


# ----- loading

MAX_YAML_NODES = 100_000   # values in a document with every alias expanded; a training config has hundreds


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys (which safe_load would silently take the last of)
    and documents whose aliases expand past MAX_YAML_NODES values.

    An alias is one shared object to the loader, so nine nested aliases of nine items (under 1 KB,
    "billion laughs") load at once, and then cost gigabytes in whatever walks them: validation, the
    count cache's JSON. The expanded size is computed on the node graph (each node once), before
    anything is built."""

    def construct_document(self, node):
        _check_expansion(node)
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = (key_node.tag, key_node.value)
            if isinstance(key_node, yaml.ScalarNode) and key[0] != "tag:yaml.org,2002:merge":
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"found duplicate key {key[1]!r}",
                                                            key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def _check_expansion(root) -> None:
    sizes: dict[int, int | None] = {}   # id(node) -> expanded size; None while being measured

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            if sizes[key] is None:
                raise yaml.constructor.ConstructorError(None, None, "found a recursive alias (an anchor used "
                                                        "inside itself)", node.start_mark)
            return sizes[key]
        sizes[key] = None
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else ()
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_YAML_NODES:
                raise yaml.constructor.ConstructorError(
                    None, None, f"over {MAX_YAML_NODES:_} values once its aliases are expanded (an alias bomb?)",
                    node.start_mark)
        sizes[key] = total
        return total

    size(root)


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors(include_url=False):
        loc, error = tuple(err["loc"]), (err.get("ctx") or {}).get("error")
        if isinstance(error, _FieldError):
            loc += error.sub
        text = str(error) if isinstance(error, Exception) else \
            f"got {short(err.get('input'))}; expected {err['msg'][:1].lower()}{err['msg'][1:]}"
        problems.append((_path(loc), text.replace("\n", " ")))
    return problems


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


def validation_error(exc: ValidationError, source: str, error: type) -> Exception:
    """One line for a failed validation: the file, then its first three problems (field: what)."""
    problems = _problems(exc)
    shown = [f"{field}: {text}" if field else text for field, text in problems[:3]]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return error(f"{source}: " + "; ".join(shown) + more, source=source, field=problems[0][0] or None)


def read_yaml_file(path: str | Path, what: str, *, loader=None, error: type = None) -> Any:
    """The parsed YAML of a file of at most MAX_FILE_BYTES: a regular file, UTF-8, safe YAML with
    unique keys and bounded aliases. ``error`` (default ConfigError) is raised with one line naming
    the file; ``what`` says what was expected ('a YAML config')."""
    error = error or ConfigError
    path, source = Path(path), str(path)
    try:
        raw = read_regular(path, MAX_FILE_BYTES)
    except FileRefused as exc:
        raise error(f"{source}: the file {exc}; expected {what}", source=source) from None
    except OSError as exc:
        raise error(f"{source}: cannot read the file: {exc.strerror or exc}", source=source) from None
    return parse_yaml_text(raw, source, loader=loader, error=error)


def parse_yaml_text(text: str | bytes, source: str, *, loader=None, error: type = None) -> Any:
    """YAML text (or UTF-8 bytes) parsed with ``loader`` (default: unique keys, bounded aliases);
    ``error`` (default ConfigError) with one line for anything that is not valid YAML."""
    error, loader = error or ConfigError, loader or _UniqueKeyLoader

    def fail(message: str):
        return error(f"{source}: {message}", source=source)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise fail(f"not UTF-8 text (byte 0x{text[exc.start]:02x} at offset {exc.start})") from None
    try:
        return yaml.load(text, Loader=loader)
    except yaml.MarkedYAMLError as exc:
        mark, problem = exc.problem_mark or exc.context_mark, exc.problem or exc.context or "unreadable"
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        if exc.context and problem.startswith("but "):          # "expected a single document ... but found another"
            problem = f"{exc.context}, {problem}"
        raise fail(f"not valid YAML{where}: {problem}") from None
    except yaml.reader.ReaderError as exc:
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise fail(f"not valid YAML (offset {exc.position}): U+{char:04X} is not allowed in YAML") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:    # huge ints, deep nesting
        detail = "nested too deeply" if isinstance(exc, RecursionError) else " ".join(str(exc).split())
        raise fail(f"not valid YAML: {detail}") from None


def parse_run_config(text: str, *, source: str = "<config>", base_dir: str | Path | None = None,
                     allow_paths=()) -> RunConfig:
    """A RunConfig from YAML text; ``source`` names it in messages."""
    data = parse_yaml_text(text, source)
    return run_config_from_mapping(data, source=source, base_dir=base_dir, allow_paths=allow_paths)


def load_run_config(path: str | Path, *, allow_paths=()) -> RunConfig:
    """Read and check one training-run YAML file; raise ConfigError naming the file and field on any problem.
    Files the config names must lie in its repository, or under one of ``allow_paths``."""
    path = Path(path)
    data = read_yaml_file(path, "a YAML config")
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
