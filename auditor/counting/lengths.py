"""Calls that differ in one length only, counted from a line: decoding steps with a key-value cache.

Each step of ``generate()`` calls the model on one new token over a cache one position longer,
so every step has a new shape, and counting each at dispatch level costs a step's worth of
Python per token. A transformer's decoding step is affine in the cache length L: the
projections and MLP do not depend on it, attention over the cache is linear in it. So, as the
repeated-block shortcut proves linearity in the number of blocks (counting/repeated.py), a
family of calls is counted at three lengths, and from then on a step at length L is the line
through them, record by record (each operator in each module on its own line, the operators
without a formula constant), exact in integers or not predicted at all:

- a *family* is one module's calls whose keys are equal but for integers that all move together
  (the attention mask's length, each layer's cached positions): their common change is L;
- three lengths must lie on one line for every record, or the family is never predicted (a
  prefill over P prompt tokens is quadratic in P: its points are not on a line);
- a predicted length twice the longest counted is counted instead and checked against the line
  (a sliding window that stops the growth, a kernel that changes with the length): a point off
  the line stops the predictions and says how many were made from it.
"""
from __future__ import annotations

from collections import Counter

_INT = object()  # where an integer stood in a key
_FAMILIES = 8    # families kept for one template (a prefill, each batch size's decoding steps, ...)


def _split(value, ints: list[int]):
    """The key with every integer replaced by a marker (its template), the integers in ``ints``."""
    kind = type(value)
    if kind is int:
        ints.append(value)
        return _INT
    if isinstance(value, tuple):
        return tuple(_split(v, ints) for v in value)
    return value


class _Family:
    __slots__ = ("points", "varying", "proven", "checked", "refuted", "keys")

    def __init__(self):
        self.points: list[tuple[tuple[int, ...], Counter, Counter]] = []  # (ints, records, uncovered)
        self.varying: tuple[int, ...] | None = None   # positions of the integers that move with L
        self.proven = False
        self.checked = 0                              # the longest length counted (and on the line)
        self.refuted = False
        self.keys: list[tuple] = []                   # keys predicted from the line

    def moving(self, ints: tuple[int, ...]) -> tuple[int, ...] | None:
        """With one point so far: the positions that move from it to ``ints``, all by the same amount,
        or None (not one length moving)."""
        base = self.points[0][0]
        if len(ints) != len(base):
            return None
        moved = tuple(i for i, (x, y) in enumerate(zip(base, ints)) if x != y)
        return moved if moved and len({ints[i] - base[i] for i in moved}) == 1 else None

    def length(self, ints: tuple[int, ...]) -> int | None:
        """L of a key of this family (its first moving integer), or None where it does not belong."""
        base = self.points[0][0]
        if len(ints) != len(base) or self.varying is None:
            return None
        moved = {ints[i] - base[i] for i in self.varying}
        if len(moved) != 1 or any(ints[i] != base[i] for i in range(len(ints)) if i not in self.varying):
            return None
        return ints[self.varying[0]]

    def on_line(self, length: int, records: Counter, uncovered: Counter) -> bool:
        (a, ra, ua), (b, rb, _) = ((self.length(p[0]), p[1], p[2]) for p in self.points[:2])
        if uncovered != ua:
            return False
        for key in set(ra) | set(rb) | set(records):
            if (records.get(key, 0) - ra.get(key, 0)) * (b - a) != (rb.get(key, 0) - ra.get(key, 0)) * (length - a):
                return False
        return True

    def at(self, length: int) -> int | None:
        """The line's total at ``length``, or None where a record would not be a whole number."""
        (a, ra, _), (b, rb, _) = ((self.length(p[0]), p[1], p[2]) for p in self.points[:2])
        total = 0
        for key in set(ra) | set(rb):
            rise = (rb.get(key, 0) - ra.get(key, 0)) * (length - a)
            if rise % (b - a):
                return None
            total += ra.get(key, 0) + rise // (b - a)
        return total


class AffineCalls:
    """The families of one tracker's calls without grad (see the module docstring)."""

    def __init__(self):
        self._families: dict[tuple, list[_Family]] = {}
        self.predicted = 0          # calls predicted from a line
        self.proven = 0             # families proven on three lengths

    def _split_key(self, key: tuple) -> tuple[list[_Family], tuple[int, ...]]:
        ints: list[int] = []
        template = (key[0], key[1], _split(key[2], ints))
        return self._families.setdefault(template, []), tuple(ints)

    def predict(self, key: tuple) -> int | None:
        """A call's FLOPs from its family's line, or None: count it (not proven, not of a family,
        a check due, or the line not whole there)."""
        families, ints = self._split_key(key)
        for family in families:
            if not family.proven or family.refuted:
                continue
            length = family.length(ints)
            if length is None:
                continue
            if length > 2 * family.checked:
                return None
            flops = family.at(length)
            if flops is not None:
                self.predicted += 1
                family.keys.append(key)
            return flops
        return None

    def learn(self, key: tuple, records: Counter, uncovered: Counter) -> tuple[str, list[tuple]] | None:
        """A call counted at dispatch level. Returns (why, the keys predicted before) when it is off
        its proven family's line: those predictions cannot be trusted."""
        families, ints = self._split_key(key)
        records, uncovered = Counter({k: v for k, v in records.items() if v}), Counter(uncovered)
        for family in families:
            if family.refuted:
                continue
            if family.varying is None:
                moved = family.moving(ints)
                if moved is None:
                    continue              # not one length away from this family's point
                family.varying = moved
                family.points.append((ints, records, uncovered))
                return None
            length = family.length(ints)
            if length is None:
                continue
            if length in (family.length(p[0]) for p in family.points[:2]):
                return None
            return self._third(family, length, records, uncovered)
        if len(families) < _FAMILIES:
            family = _Family()
            family.points.append((ints, records, uncovered))
            families.append(family)
        return None

    def _third(self, family: _Family, length: int, records: Counter, uncovered: Counter):
        """A further length of a family of two points or more: on its line, or not."""
        if family.on_line(length, records, uncovered):
            if not family.proven:
                family.proven = True
                self.proven += 1
            family.checked = max(family.checked, length, *(family.length(p[0]) for p in family.points[:2]))
            return None
        if not family.proven:
            family.refuted = True     # three lengths off one line: never predicted
            return None
        family.refuted = True
        return (f"a call at length {length} cost other than the line through the lengths counted before "
                f"gives", list(family.keys))

    def assumption(self) -> str:
        return (f"{self.predicted} calls without grad that differ from counted ones in one length only (decoding "
                f"steps over a growing key-value cache) were predicted from the line through three counted lengths, "
                f"record by record, exact in integers; the line was proven on those three and checked again at "
                f"twice the longest length counted")
