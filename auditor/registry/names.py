"""Names and choices given on the command line: checked before anything is written."""
from __future__ import annotations

from fractions import Fraction

from auditor.registry.engine import RegistryError
from auditor.registry.schema import DEVELOPERS, NAME_LIMIT, STAGES
from auditor.text import join_words, printable_text, short

RELATION_OF_STAGE = {"distillation": "distilled", "merge": "merged"}   # any other stage: fine_tuned


def model_name(value: str, what: str = "--model") -> str:
    """A model's name: printable (no control or bidi character could reorder what a reviewer
    reads), not blank, no surrounding spaces, at most 200 characters."""
    try:
        text = printable_text(value, "a model name", NAME_LIMIT)
    except ValueError as exc:
        raise RegistryError(f"{what}: {exc}") from None
    if text != text.strip():
        raise RegistryError(f"{what}: got {short(value)}; expected a model name without leading or trailing spaces")
    return text


def stage_name(value: str) -> str:
    if value not in STAGES:
        raise RegistryError(f"--stage: got {short(value)}; expected {join_words(STAGES, 'or')}")
    return value


def developer_name(value: str | None) -> str | None:
    if value is not None and value not in DEVELOPERS:
        raise RegistryError(f"--developer: got {short(value)}; expected same or other")
    return value


def weight_text(value: str | None) -> str | None:
    """A merge weight as an exact fraction (0.5 -> '1/2'), 0 < w <= 1."""
    if value is None:
        return None
    try:
        weight = Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        raise RegistryError(f"--weight: got {short(value)}; expected a number such as 0.5 or 1/3") from None
    if not 0 < weight <= 1:
        raise RegistryError(f"--weight: got {short(value)}; expected a share of the merge, 0 < weight <= 1")
    return str(weight)
