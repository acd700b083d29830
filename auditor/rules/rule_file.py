"""Rule files: the bundled thresholds/*.yaml and users' own, checked into ``Rule`` objects (docs/rules.md).

A file holds one rule as its top-level mapping, or a rule set: ``id``, ``title``, ``jurisdiction`` and a
``rules:`` list. Every problem is a ``RuleError`` with one line, ``<file>: <field>: got <x>; expected <y>``.
Thresholds become exact ints, ratios exact Fractions, dates ``datetime.date`` (YAML timestamps are not
used: a bad date is reported against its field). ``python -m auditor.rules.rule_file`` prints the JSON schema.
"""
import json
import re
from collections.abc import Iterable
from datetime import date, datetime
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, ClassVar, Union

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from auditor.estimate import DEVELOPERS
from auditor.inputs.run_config import MODALITIES
from auditor.inputs.schema import (
    _NUMBER_JSON,
    InputError,
    _FieldError,
    _Section,
    text_list,
    validation_error,
)
from auditor.inputs.values import positive_count, positive_number
from auditor.inputs.yaml_reader import _UniqueKeyLoader, read_yaml_file
from auditor.rules.vocabulary import BASES, COMPARISONS, DEADLINE_STARTS, STATUSES
from auditor.text import join_words, printable_text, short, suggest

_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,98}[a-z0-9])?$")
_URL_RE = re.compile(r"^https?://[^\s/$.?#][^\s]*$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PHASE_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# The phases a tracked run tags its passes with (ComputeAudit.phase); a run may add its own names.
PHASES = ("train", "rollout", "synthetic_data", "eval", "reward_model", "teacher")


class RuleError(InputError):
    """A bad rule file or rule selection. str(): one line naming the file, the field, what was given and expected."""


# ----- field types: a validator that gives our message, and what the JSON schema says is accepted

def _choice(options: tuple[str, ...], meaning: str = "") -> Any:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            hint = suggest(value, options) if isinstance(value, str) and any(c.isalpha() for c in value) else ""
            raise ValueError(f"got {short(value)}; expected {join_words(options, 'or')}{meaning}{hint}")
        return value
    return Annotated[str, BeforeValidator(check), WithJsonSchema({"enum": list(options)})]


def _text(what: str, limit: int) -> Any:
    return Annotated[str, BeforeValidator(lambda v: printable_text(v, what, limit)),
                     WithJsonSchema({"type": "string", "minLength": 1, "maxLength": limit})]


def _texts(what: str, limit: int = 500) -> Any:
    def check(value: Any) -> list[str]:
        return text_list(value, expected=f"a list of {what}s (one string each)", item=f"each {what} as text",
                         limit=limit)
    return Annotated[list[str], BeforeValidator(check),
                     WithJsonSchema({"type": "array", "items": {"type": "string", "maxLength": limit}})]


def _count(what: str, **limits: Any) -> Any:
    return Annotated[int, BeforeValidator(lambda v: positive_count(v, what, **limits)),
                     WithJsonSchema({**_NUMBER_JSON, "description": f"a positive whole {what}"})]


def _matching(regex: re.Pattern, what: str, limit: int, expected: str):
    def check(value: Any) -> str:
        if not regex.match(printable_text(value, what, limit)):
            raise ValueError(f"got {short(value)}; expected {expected}")
        return value
    return check


_rule_id = _matching(_ID_RE, "an id", 100, "an id of lowercase letters, digits, '-', '.' or '_' (e.g. eu-ai-act-x)")
_url = _matching(_URL_RE, "an http(s) address", 1000, "an http(s) address of the text, e.g. https://eur-lex.europa.eu")


def _date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE_RE.match(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(f"got {short(value)}; expected a real date YYYY-MM-DD ({exc})") from None
    raise ValueError(f"got {short(value)}; expected a date written YYYY-MM-DD, e.g. 2025-08-02")


def _ratio(value: Any) -> Fraction:
    try:
        return positive_number(value, "ratio", maximum=1000)
    except ValueError:
        raise ValueError(f"got {short(value)}; expected a positive ratio such as 1/3 or 0.5") from None


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"got {short(value)}; expected true or false")
    return value


def phase_name(value: Any) -> str:
    """A phase's name, checked: lowercase letters, digits and '_', starting with a letter."""
    if not isinstance(value, str) or not PHASE_RE.match(value):
        raise ValueError(f"got {short(value)}; expected a phase name of lowercase letters, digits and '_' "
                         f"starting with a letter, e.g. {join_words(PHASES)}")
    return value


def _phases(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"got {short(value)}; expected a non-empty list of phases, e.g. [train, rollout]")
    for i, item in enumerate(value):
        try:
            phase_name(item)
        except ValueError as exc:
            raise _FieldError(str(exc), i) from None
        if item in value[:i]:
            raise _FieldError(f"got {item!r} twice; expected each phase once", i)
    return value


def _modalities(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"got {short(value)}; expected a non-empty list of modalities from {join_words(MODALITIES)}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or item not in MODALITIES:
            raise _FieldError(f"got {short(item)}; expected one of {join_words(MODALITIES, 'or')}", i)
    return value


RuleId = Annotated[str, BeforeValidator(_rule_id), WithJsonSchema({"type": "string", "pattern": _ID_RE.pattern})]
Flops = _count("number of FLOPs")
Date = Annotated[date, BeforeValidator(_date), WithJsonSchema({"type": "string", "format": "date"})]
Bool = Annotated[bool, BeforeValidator(_bool), WithJsonSchema({"type": "boolean"})]
Ratio = Annotated[Fraction, BeforeValidator(_ratio), WithJsonSchema({"type": ["number", "string"], "examples": [0.5]})]
Phases = Annotated[list[str], BeforeValidator(_phases), WithJsonSchema(
    {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string", "pattern": PHASE_RE.pattern},
     "examples": [["train", "rollout", "synthetic_data"]]})]


# ----- sections

# The same section base as run configs: unknown keys, missing ones and nulls handled alike.
_Mapping = _Section


class Citation(_Mapping):
    """Where the rule is written."""
    _what: ClassVar[str] = "a mapping with text and url"
    text: _text("the citation text", 300) = Field(description="the citation, e.g. 'Regulation (EU) 2024/1689, Art. 51'")
    url: Annotated[str, BeforeValidator(_url), WithJsonSchema({"type": "string", "format": "uri"})] = Field(
        description="an http(s) address of the text")


class Deadline(_Mapping):
    """Something to do within a time of an event."""
    _what: ClassVar[str] = "a mapping with what, within_days or within_hours, and from"
    what: _text("what must be done", 300) = Field(description="what must be done, e.g. 'notify the Commission'")
    within_days: _count("number of days", maximum=3660) | None = Field(None, description="days allowed")
    within_hours: _count("number of hours", maximum=87840) | None = Field(None, description="hours allowed")
    from_: _choice(DEADLINE_STARTS, " (the event the time runs from)") = Field(
        alias="from", description=f"the event the time runs from: {join_words(DEADLINE_STARTS, 'or')}")

    @model_validator(mode="after")
    def _one_period(self) -> "Deadline":
        given = [k for k in ("within_days", "within_hours") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of within_days or within_hours (got {join_words(given) or 'none'})")
        return self


class Scope(_Mapping):
    """Which runs a rule covers; a key left out covers every run."""
    _what: ClassVar[str] = "a mapping with modality, developer, modification or base_above_flops"
    modality: Annotated[list[str] | None, BeforeValidator(_modalities), WithJsonSchema(
        {"type": "array", "items": {"enum": list(MODALITIES)}, "minItems": 1})] = Field(
        None, description="the data modalities covered")
    developer: _choice(DEVELOPERS, " (modifications by the base model's own developer, or by another)") | None = Field(
        None, description="only modifications of a base model by this developer: same or other")
    modification: Bool | None = Field(None, description="true: only modifications of a base; false: only original runs")
    base_above_flops: Flops | None = Field(None, description="only modifications of a base trained with more than this")

    @model_validator(mode="after")
    def _consistent(self) -> "Scope":
        for key in ("developer", "base_above_flops"):
            if self.modification is False and getattr(self, key) is not None:
                raise _FieldError(f"got {short(getattr(self, key))}; expected {key} only where modifications are "
                                  f"covered (modification is false)", key)
        return self


class Rule(_Mapping):
    """One compute threshold in one text."""
    _what: ClassVar[str] = ("a rule: a mapping with id, title, jurisdiction, citation, threshold_flops, comparison, "
                            "basis, status and blocking")
    id: RuleId = Field(description="a unique id, e.g. eu-ai-act-systemic-risk")
    title: _text("a title", 300) = Field(description="a title")
    jurisdiction: _text("a jurisdiction, e.g. EU or US-CA", 100) = Field(description="a jurisdiction, e.g. EU, US-CA")
    citation: Citation = Field(description="a mapping with text and url")
    threshold_flops: Flops | None = Field(None, description="the threshold in FLOPs, e.g. 1.0e+25")
    ratio: Ratio | None = Field(None, description="the share of the base model's compute, e.g. 1/3")
    fallback_base_flops: Flops | None = Field(None, description="the base compute taken when it is unknown, e.g. 1e25")
    comparison: _choice(COMPARISONS, " ('>' strict, '>=' inclusive)") = Field(description="'>' strict, '>=' inclusive")
    basis: _choice(BASES) = Field(description="training, cumulative or ratio_to_base: what is compared")
    scope: Scope | None = Field(None, description="which runs the rule covers (default: every run)")
    status: _choice(STATUSES) = Field(description="in_force, proposed, revoked or vetoed")
    effective: Date | None = Field(None, description="the date it takes effect, YYYY-MM-DD")
    adopted: Date | None = Field(None, description="the date it was signed or adopted, YYYY-MM-DD")
    proposed: Date | None = Field(None, description="the date it was proposed, YYYY-MM-DD")
    revoked: Date | None = Field(None, description="the date it was revoked, YYYY-MM-DD (status revoked)")
    rescinded: Date | None = Field(None, description="the date it was rescinded, YYYY-MM-DD (status revoked)")
    vetoed: Date | None = Field(None, description="the date it was vetoed, YYYY-MM-DD (status vetoed)")
    blocking: Bool = Field(description="true or false: whether the gate fails when the rule is crossed or at risk")
    counts_teacher: Bool | None = Field(None, description="basis cumulative, over a registry's lineage: whether a "
                                        "distilled model counts its teacher's training compute (default false)")
    counts_phases: Phases = Field(default_factory=lambda: ["train"], description=(
        "which phases of a tracked run count towards the threshold, summed: train (ordinary training steps), "
        "rollout (reinforcement learning's generation), synthetic_data, eval, reward_model, teacher, or a run's "
        "own phase name (default: [train])"))
    obligations: _texts("obligation") = Field(default_factory=list, description="what follows when it applies")
    deadlines: Annotated[list[Deadline], BeforeValidator(lambda v: _list(v, "list of deadlines (mappings)"))] = Field(
        default_factory=list, description="a list of {what, within_days or within_hours, from}")
    unverified: _texts("condition") = Field(default_factory=list, description="conditions compute alone cannot decide")
    notes: _text("notes", 2000) | None = Field(None, description="free text shown with the rule")
    example: Bool = Field(False, description="true: an example to copy, judged only when named (never by default)")
    _source: Path | None = PrivateAttr(None)
    _rule_set: tuple[str, str] | None = PrivateAttr(None)
    _in_example_set: bool = PrivateAttr(False)

    @property
    def is_example(self) -> bool:
        """An example rule (or one of an example set): judged only when named."""
        return self.example or self._in_example_set

    @model_validator(mode="after")
    def _consistent(self) -> "Rule":
        if self.basis == "ratio_to_base":
            if self.threshold_flops is not None:
                raise _FieldError(f"got {self.threshold_flops}; expected no threshold_flops with basis ratio_to_base "
                                  f"(the threshold is ratio x the base model's compute)", "threshold_flops")
            for key in ("ratio", "fallback_base_flops"):
                if getattr(self, key) is None:
                    raise _FieldError(f"missing; expected {type(self).model_fields[key].description} "
                                      f"(needed with basis ratio_to_base)", key)
        else:
            if self.threshold_flops is None:
                raise _FieldError("missing; expected the threshold in FLOPs, e.g. 1.0e+25", "threshold_flops")
            for key in ("ratio", "fallback_base_flops"):
                if getattr(self, key) is not None:
                    raise _FieldError(f"got {getattr(self, key)}; expected {key} only with basis ratio_to_base "
                                      f"(basis is {self.basis})", key)
        ends = {"revoked": ("revoked", "rescinded"), "vetoed": ("vetoed",)}.get(self.status, ())
        for key in ("revoked", "rescinded", "vetoed"):
            if getattr(self, key) is not None and key not in ends:
                needs = "vetoed" if key == "vetoed" else "revoked"
                raise _FieldError(f"got {getattr(self, key)}; expected {key} only with status {needs} "
                                  f"(status is {self.status})", key)
        if self.status == "revoked" and self.ended is None:
            raise _FieldError("missing; expected the date it was revoked or rescinded, YYYY-MM-DD "
                              "(status revoked needs revoked: or rescinded:)", "revoked")
        if self.status == "vetoed" and self.vetoed is None:
            raise _FieldError("missing; expected the date of the veto, YYYY-MM-DD (status vetoed needs it)", "vetoed")
        if self.ended and self.effective and self.ended[1] <= self.effective:
            raise _FieldError(f"got {self.ended[1]}; expected a date after effective ({self.effective})", self.ended[0])
        return self

    @property
    def ended(self) -> tuple[str, date] | None:
        """('revoked' or 'rescinded', the date) of the earliest end, or None."""
        ends = [(getattr(self, k), k) for k in ("revoked", "rescinded") if getattr(self, k) is not None]
        return (min(ends)[1], min(ends)[0]) if ends else None

    @property
    def source(self) -> Path | None:
        """The file the rule came from (None when built in code)."""
        return self._source

    @property
    def rule_set(self) -> str | None:
        """The id of the rule set it belongs to (None for a one-rule file)."""
        return self._rule_set[0] if self._rule_set else None

    def to_dict(self) -> dict[str, Any]:
        """The rule as its file writes it (dates as YYYY-MM-DD, the ratio as '1/3'), plus its rule set."""
        return {**self.model_dump(mode="json", by_alias=True, exclude_none=True),
                "rule_set": self.rule_set, "source": str(self.source) if self.source else None}


def _list(value: Any, what: str) -> list:
    if not isinstance(value, list) or (what.startswith("non-empty") and not value):
        raise ValueError(f"got {short(value)}; expected a {what}")
    return value


class RuleSet(_Mapping):
    """Rules from one text, in one file."""
    _what: ClassVar[str] = "a rule set: a mapping with id, title, jurisdiction and rules"
    id: RuleId = Field(description="a unique id for the set, e.g. eu-ai-act")
    title: _text("a title", 300) = Field(description="a title")
    jurisdiction: _text("a jurisdiction, e.g. EU or US-CA", 100) = Field(description="a jurisdiction, e.g. EU, US-CA")
    notes: _text("notes", 2000) | None = Field(None, description="free text shown with the set")
    example: Bool = Field(False, description="true: a set of examples, judged only when named (never by default)")
    rules: Annotated[list[Rule], BeforeValidator(lambda v: _list(v, "non-empty list of rules (mappings)"))] = Field(
        description="a non-empty list of rules")

    @model_validator(mode="after")
    def _unique(self) -> "RuleSet":
        seen: dict[str, int] = {self.id: -1}
        for i, rule in enumerate(self.rules):
            if rule.id in seen:
                other = "the rule set's own id" if seen[rule.id] < 0 else f"rules[{seen[rule.id]}] has it too"
                raise _FieldError(f"got {rule.id!r}; expected a unique rule id ({other})", "rules", i, "id")
            seen[rule.id] = i
        return self


# ----- reading files

class _RuleLoader(_UniqueKeyLoader):     # dates stay text, so that a bad one is reported against its field
    yaml_implicit_resolvers = {first: [(tag, regexp) for tag, regexp in resolvers if not tag.endswith(":timestamp")]
                               for first, resolvers in _UniqueKeyLoader.yaml_implicit_resolvers.items()}


def _read_yaml(path: Path, source: str) -> Any:
    return read_yaml_file(path, "a YAML rule file", loader=_RuleLoader, error=RuleError)


def _validated(data: Any, source: str) -> tuple[RuleSet | None, list[Rule]]:
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise RuleError(f"{source}: expected a mapping at the top level (a rule, or a rule set with rules:), got {got}",
                        source=source)
    model = RuleSet if "rules" in data else Rule
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, source, RuleError) from None
    return (parsed, list(parsed.rules)) if isinstance(parsed, RuleSet) else (None, [parsed])


def validate_rule_file(path: str | Path, *, known: Iterable[Rule] = ()) -> list[Rule]:
    """The rules of one file, checked; RuleError names the file and the field on any problem. ``known``: rules
    already loaded from other files, whose ids (and rule-set ids) this file must not reuse."""
    path, source = Path(path), str(path)
    rule_set, rules = _validated(_read_yaml(path, source), source)
    where = path.resolve()
    taken: dict[str, str] = {}
    for other in known:
        if other.source != where:
            taken.setdefault(other.id, f"{other.source or 'another rule'} has a rule with that id")
            if other.rule_set:
                taken.setdefault(other.rule_set, f"{other.source or 'another rule'} has a rule set with that id")
    named = [("id", rule_set.id)] if rule_set else []
    named += [(f"rules[{i}].id" if rule_set else "id", rule.id) for i, rule in enumerate(rules)]
    for field, rule_id in named:
        if rule_id in taken:
            raise RuleError(f"{source}: {field}: got {rule_id!r}; expected an id not used elsewhere ({taken[rule_id]})",
                            source=source, field=field)
    for rule in rules:
        rule._source = where
        rule._rule_set = (rule_set.id, rule_set.title) if rule_set else None
        rule._in_example_set = bool(rule_set and rule_set.example)
    return rules


def rule_file_json_schema() -> dict[str, Any]:
    """The JSON schema of a rule file: a rule set, or one rule (numbers may be strings such as "1e25")."""
    schema = TypeAdapter(Union[RuleSet, Rule]).json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "auditor rule file",
            "description": "One rule as the top-level mapping, or a rule set with id, title, jurisdiction and rules.",
            "oneOf": schema.pop("anyOf"), **schema}


if __name__ == "__main__":
    print(json.dumps(rule_file_json_schema(), indent=2))
