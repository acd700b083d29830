"""Who decides what: the trust a preflight extends to the config it reads (docs/security.md).

On one's own config (``auditor preflight``) the config is the user's: its factory is imported and
its ``rules:`` are its judge. Under review (``auditor gate``) the config is anyone's: the gate
imports no code it names unless the gate's own invocation allows it, and the gate's rules stay
the gate's, a config's ``rules:`` adding to them, never removing or replacing one.

A policy file holds the gate's side, for a repository to keep beside its workflow:

    rules: [eu-ai-act, us-ca-sb53, ./our-budget.yaml]   # the gate's rules (default: every bundled rule)
    allow_factory: ["ourlab.models:*"]                  # import paths the gate may import (fnmatch)
    allow_paths: [../shared-configs]                    # folders configs may name besides their repository
    max_modules: 600000                                 # the model size cap (counting/limits.py)

Paths in it are relative to the policy file. The gate must read it from the reviewed branch's
base, never from the pull request (docs/ci.md shows how).
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, ValidationError

from auditor.inputs.run_config import ConfigError
from auditor.inputs.schema import _Section, text_list, validation_error
from auditor.inputs.values import import_path, positive_count
from auditor.inputs.yaml_reader import read_yaml_file


@dataclass(frozen=True)
class Trust:
    """What a preflight may do with what a config names.

    ``allow_factory``: fnmatch patterns of 'module:function' the preflight may import; None, any
    (the user's own config). ``allow_paths``: folders a config may name files in besides its own
    repository. ``config_rules``: 'replace' (a config's rules: are its judge) or 'add' (they add to
    the caller's). ``max_modules``: the model size cap (None: counting.limits.DEFAULT_MAX_MODULES)."""
    allow_factory: tuple[str, ...] | None = None
    allow_paths: tuple[Path, ...] = ()
    config_rules: Literal["replace", "add"] = "replace"
    max_modules: int | None = None

    def factory_allowed(self, factory: str) -> bool:
        return self.allow_factory is None or any(fnmatchcase(factory, p) for p in self.allow_factory)


def gate_trust(allow_factory=(), allow_paths=(), max_modules: int | None = None) -> Trust:
    """The gate's trust: no factory imported but those allowed, config rules only added."""
    return Trust(allow_factory=tuple(allow_factory), allow_paths=tuple(Path(p).resolve() for p in allow_paths),
                 config_rules="add", max_modules=max_modules)


def _texts(expected: str, item: str):
    return lambda value: text_list(value, expected=expected, item=item, limit=1000)


class PolicyFile(_Section):
    """A gate policy file: the gate's rules and what it trusts."""
    _what: ClassVar[str] = "a mapping with rules, allow_factory, allow_paths or max_modules"

    rules: Annotated[list[str] | None, BeforeValidator(_texts(
        "a list of rule ids or rule file paths", "a rule id or a rule file path"))] = Field(
        None, description="the gate's rules: bundled ids, rule-set ids or rule file paths (default: every bundled rule)")
    allow_factory: Annotated[list[str] | None, BeforeValidator(_texts(
        "a list of import-path patterns, e.g. ['ourlab.models:*']",
        "an import-path pattern such as 'ourlab.models:*'"))] = Field(
        None, description="fnmatch patterns of 'module:function' the gate may import")
    allow_paths: Annotated[list[str] | None, BeforeValidator(_texts("a list of folders", "a folder"))] = Field(
        None, description="folders configs may name files in, besides their own repository")
    max_modules: Annotated[int | None, BeforeValidator(
        lambda v: positive_count(v, "number of modules and parameter tensors"))] = Field(
        None, description="the model size cap")


@dataclass(frozen=True)
class Policy:
    """A loaded policy: the gate's rules (None: every bundled rule) and its trust settings."""
    rules: list | None
    allow_factory: tuple[str, ...]
    allow_paths: tuple[Path, ...]
    max_modules: int | None


def load_policy(path: str | Path) -> Policy:
    """Read and check a policy file; ConfigError names the file and the field on any problem."""
    from auditor.rules.selection import load_rules

    path, source = Path(path), str(path)
    data = read_yaml_file(path, "a YAML policy file", error=ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level (rules, allow_factory, allow_paths, "
                          f"max_modules)", source=source)
    try:
        parsed = PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, source, ConfigError) from None
    for i, pattern in enumerate(parsed.allow_factory or ()):
        if "*" not in pattern and "?" not in pattern and "[" not in pattern:
            try:
                import_path(pattern)
            except ValueError as exc:
                raise ConfigError(f"{source}: allow_factory[{i}]: {exc}", source=source) from None
    base = path.resolve().parent
    rules = load_rules(parsed.rules, base_dir=base) if parsed.rules else None
    return Policy(rules=rules, allow_factory=tuple(parsed.allow_factory or ()),
                  allow_paths=tuple((base / p).resolve() for p in parsed.allow_paths or ()),
                  max_modules=parsed.max_modules)
