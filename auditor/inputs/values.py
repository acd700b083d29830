"""Numbers (and import paths) as people write them in configs, read exactly and checked.

Accepted: ints; floats (read through their shortest repr, so the YAML float 3.8e+25 is exactly
38 * 10**24); strings "1.5e25", "1e25", "2.3E+24", "10^25", "10**25", "1.5 x 10^25", "1.5*10^25",
"1.5 × 10^25", digit groups with underscores "15_600_000_000_000", and fractions "3/2" (how a
Fraction is written to JSON). PyYAML reads 1.5e25 and 15.6e12 (no sign on the exponent) as
strings, so the strings are not a nicety: they are the common case.

Rejected, each with a message of the form "got <repr>; expected <what>": booleans, NaN and
infinities, anything else that is not a number, and values beyond 10**40 (no run, no count of
parameters, tokens or FLOPs comes near that).
"""
from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from auditor.text import printable_text, short

ABSURD = 10 ** 40


MAX_CHARS = 100          # longer strings are not numbers anyone writes by hand


MAX_EXPONENT = 60        # |decimal exponent| beyond this is absurd, and checked before any big arithmetic


_DIGITS = r"\d+(?:_\d+)*"


_DECIMAL = rf"[+-]?(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][+-]?{_DIGITS})?"


_DECIMAL_RE = re.compile(rf"^{_DECIMAL}$")


_POWER_RE = re.compile(rf"^(?:(?P<mantissa>{_DECIMAL})\s*(?:[xX×*·])\s*)?10\s*(?:\^|\*\*)\s*(?P<exp>[+-]?\d+)$")


_IMPORT_PATH_RE = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$", re.ASCII)


_FRACTION_RE = re.compile(r"^[+-]?\d{1,40}\s*/\s*\d{1,40}$")


_NOT_FINITE_RE = re.compile(r"^[+-]?(?:nan|inf|infinity|\.inf|\.nan)$", re.IGNORECASE)


SYNTAX_HINT = "written like 15.6e12, \"1.5e25\", \"10^25\", \"1.5 x 10^25\" or 15_600_000_000_000"


class NumberError(ValueError):
    """A value that is not the number asked for; str() is 'got <repr>; expected <what>'."""


def _fail(value: Any, expected: str) -> NumberError:
    return NumberError(f"got {short(value)}; expected {expected}")


def _range(value: Any, what: str, exponent: int) -> NumberError:
    if exponent > 0:
        return _fail(value, f"a {what} of at most 10^40 (this is absurd)")
    return _fail(value, f"a {what} of at least 10^-{MAX_EXPONENT}")


def _from_decimal(text: str, value: Any, what: str) -> Fraction:
    try:
        number = Decimal(text.replace("_", ""))
    except InvalidOperation:
        raise _fail(value, f"{what}, {SYNTAX_HINT}") from None
    if not number.is_finite():
        raise _fail(value, f"a finite {what}")
    if number and abs(number.adjusted()) > MAX_EXPONENT:
        raise _range(value, what, number.adjusted())
    return Fraction(number)


def parse_number(value: Any, what: str = "number") -> Fraction:
    """The exact value of ``value`` as a Fraction (any sign; the callers check the range)."""
    if isinstance(value, bool):
        raise _fail(value, f"a {what}, not a boolean")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(value, f"a finite {what}")
        return _from_decimal(repr(value), value, what)
    if isinstance(value, (Decimal, Fraction)):
        return _from_decimal(str(value), value, what) if isinstance(value, Decimal) else value
    if not isinstance(value, str):
        raise _fail(value, f"a {what}, {SYNTAX_HINT}")
    text = value.strip()
    if len(text) > MAX_CHARS:
        raise _fail(value, f"a {what} of at most {MAX_CHARS} characters")
    if _NOT_FINITE_RE.match(text):
        raise _fail(value, f"a finite {what}")
    if _DECIMAL_RE.match(text):
        return _from_decimal(text, value, what)
    if _FRACTION_RE.match(text):              # "3/2": how pydantic writes a Fraction to JSON
        numerator, denominator = (int(part) for part in text.split("/"))
        if denominator == 0:
            raise _fail(value, f"a {what} (division by zero)")
        return Fraction(numerator, denominator)
    power = _POWER_RE.match(text)
    if power:
        exponent = int(power["exp"])
        if abs(exponent) > MAX_EXPONENT:
            raise _range(value, what, exponent)
        mantissa = _from_decimal(power["mantissa"], value, what) if power["mantissa"] else Fraction(1)
        return mantissa * Fraction(10) ** exponent
    raise _fail(value, f"a {what}, {SYNTAX_HINT}")


def positive_number(value: Any, what: str, *, maximum: Fraction | int = ABSURD,
                    maximum_text: str | None = None) -> Fraction:
    """A number with 0 < value <= maximum, exact. ``what`` names it: 'number of epochs'."""
    number = parse_number(value, what)
    if number <= 0:
        raise _fail(value, f"a positive {what}")
    if number > maximum:
        raise _fail(value, maximum_text or f"a {what} of at most 10^40 (this is absurd)")
    return number


def positive_count(value: Any, what: str, *, maximum: int = ABSURD, maximum_text: str | None = None) -> int:
    """A whole number with 0 < value <= maximum, as an int. ``what`` names it: 'number of tokens'."""
    number = parse_number(value, f"positive whole {what}")
    if number <= 0:
        raise _fail(value, f"a positive whole {what}")
    if number.denominator != 1:
        raise _fail(value, f"a whole {what} (no fractions)")
    if number > maximum:
        raise _fail(value, maximum_text or f"a {what} of at most 10^40 (this is absurd)")
    return int(number)


def unit_band(value: Any) -> tuple[Fraction, Fraction]:
    """[low, high] with 0 < low <= high <= 1, e.g. a utilization band."""
    expected = f"got {short(value)}; expected [low, high] with 0 < low <= high <= 1"
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise NumberError(expected)
    try:
        low, high = (positive_number(v, "fraction", maximum=1) for v in value)
    except NumberError:
        raise NumberError(expected) from None
    if low > high:
        raise NumberError(expected + " (low comes first)")
    return low, high


def import_path(value: Any) -> str:
    """'package.module:function' (ASCII identifiers, one colon; the attribute may be dotted). Not imported here."""
    text = printable_text(value, "an import path 'package.module:function'", 300)
    if not _IMPORT_PATH_RE.match(text):
        raise ValueError(f"got {short(value)}; expected an import path 'package.module:function' "
                         f"(dotted module, one colon, then the function; no spaces)")
    return text
