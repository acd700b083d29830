"""Text shown to people, and text taken from them: escapes for control and bidi characters,
bounded reprs, one-line error messages, names checked for hostile characters.
"""
from __future__ import annotations

import difflib
import reprlib
import unicodedata
from fractions import Fraction
from typing import Any

# control (newlines, ESC, NUL), format (bidi overrides), surrogate, private-use, unassigned, line/paragraph separators
HOSTILE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlevel = 2
_repr.maxdict = _repr.maxlist = _repr.maxtuple = _repr.maxset = 4


def sci(value: int | float | Fraction, digits: int = 4) -> str:
    """The one way a FLOP figure (or any large count) is written for people, in every view, message
    and reason: exact when ``digits`` significant digits hold it ('1.0e25', '3.8e25', '1.14e26'),
    else rounded to them and marked '~' ('~2.659e25'). A float is read as its shortest repr, so
    1e25 is the exact 10^25. Exact ints stay in JSON; this is only for reading."""
    value = Fraction(repr(value)) if isinstance(value, float) else Fraction(value)
    if value < 0:
        return "-" + sci(-value, digits)
    if value == 0:
        return "0"
    exponent = len(str(value.numerator // value.denominator)) - 1 if value >= 1 else \
        -len(str(value.denominator // value.numerator))  # first guess, corrected below
    while value >= Fraction(10) ** (exponent + 1):
        exponent += 1
    while value < Fraction(10) ** exponent:
        exponent -= 1
    scaled = value / Fraction(10) ** (exponent - digits + 1)   # digits significant digits before the point
    if scaled.denominator == 1:
        kept = str(scaled.numerator).rstrip("0")
        return f"{kept[0]}.{kept[1:] or '0'}e{exponent}"
    rounded = int(scaled + Fraction(1, 2))  # half up: how people round a figure they read
    if rounded == 10 ** digits:             # 9.9996e25 at 4 digits: 1.000e26
        rounded, exponent = 10 ** (digits - 1), exponent + 1
    text = str(rounded)
    return f"~{text[0]}.{text[1:]}e{exponent}"


def two_significant(flops: int) -> str:
    """The EU notification form's figure: two significant figures, e.g. '2.3e25' (Guidelines
    2.3.2). The form asks for this rounding, so it carries no '~'."""
    return sci(flops, 2).removeprefix("~")


def short(value: Any, limit: int = 60) -> str:
    """repr of ``value``, bounded in size whatever it is (control characters come out escaped)."""
    text = _repr.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable_text(value: Any, what: str, limit: int) -> str:
    """A non-blank string of at most ``limit`` characters with nothing hostile in it: no control
    characters (newlines, ANSI escapes, NUL), no bidi overrides. Ordinary punctuation (<, >, quotes)
    is fine: escaping is the renderer's job."""
    if not isinstance(value, str):
        raise ValueError(f"got {short(value)}; expected {what} (a string; quote it in YAML)")
    bad = next((ch for ch in value if unicodedata.category(ch) in HOSTILE_CATEGORIES), None)
    if bad is not None:
        raise ValueError(f"got {short(value)}; expected {what} in printable characters "
                         f"(U+{ord(bad):04X} is a control or formatting character: hostile)")
    if not value.strip():
        raise ValueError(f"got {short(value)}; expected {what}, not empty")
    if len(value) > limit:
        raise ValueError(f"got {short(value)} ({len(value)} characters); expected {what} "
                         f"of at most {limit} characters")
    return value


def printable(text: Any) -> str:
    """Any text as a terminal, a log or XML can hold it: control, bidi and other non-printable
    characters shown as their escapes (U+202E as \\u202e), the rest as it is."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def visible(text: Any) -> str:
    """Multi-line text (a config as given) with its line breaks and tabs kept, and every other
    control or bidi character shown as its escape, so no character can reorder what is shown."""
    return "\n".join("\t".join(printable(part) for part in line.split("\t")) for line in str(text).split("\n"))


def error_text(exc: BaseException, *, with_type: bool = True, limit: int = 600) -> str:
    """A library's exception as one line of an error message (some span several lines), printable."""
    text = printable(" ".join((f"{type(exc).__name__}: {exc}" if with_type else str(exc)).split()))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def join_words(words, conjunction: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    words = list(words)
    return ", ".join(words[:-1]) + f" {conjunction} " + words[-1] if len(words) > 1 else "".join(words)


def suggest(word: str, options) -> str:
    """' (did you mean X?)' for a near miss among ``options``, else ''."""
    close = difflib.get_close_matches(word, list(options), n=2)
    return f" (did you mean {' or '.join(close)}?)" if close else ""
