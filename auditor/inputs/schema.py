"""What every input section shares: a mapping with known keys (pydantic), field types that give
our messages, and the one-line error naming the file, the field, what was given and expected.
"""
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from auditor.inputs.values import positive_count, positive_number
from auditor.text import join_words, printable_text, short, suggest


class InputError(Exception):
    """Bad input of any kind (a run config, a rule file, a policy): str() is one line naming the
    file, the field, what was given and what was expected; ``source`` and ``field`` say the same
    for code. ConfigError and RuleError are its kinds."""
    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        super().__init__(message)
        self.source, self.field = source, field


class _FieldError(ValueError):
    """Raised inside a section's validator about one of its keys: ``sub`` extends the field path."""
    def __init__(self, message: str, *sub: str | int):
        super().__init__(message)
        self.sub = sub


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


def validation_error(exc: ValidationError, source: str, error: type) -> Exception:
    """One line for a failed validation: the file, then its first three problems (field: what)."""
    problems = _problems(exc)
    shown = [f"{field}: {text}" if field else text for field, text in problems[:3]]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return error(f"{source}: " + "; ".join(shown) + more, source=source, field=problems[0][0] or None)
