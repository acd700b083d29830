"""FLOP counts in a database, exactly: Python ints up to 10^40, never a float on the way.

A 64-bit integer column holds at most 9.2e18, and SQLite turns any larger number (and any NUMERIC
value past that range) into a REAL, which keeps 15-17 digits: 2^80 + 1 would come back as 2^80.
So the column is NUMERIC(40, 0) on PostgreSQL (exact, sortable, summable in SQL) and a decimal
string on SQLite (TEXT affinity keeps every digit); in Python it is always an int.
"""
from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

DIGITS = 40


class ExactInt(TypeDecorator):
    """A non-negative int below 10^40, stored without rounding on every backend."""
    impl = sa.Numeric(DIGITS, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(DIGITS))
        return dialect.type_descriptor(sa.Numeric(DIGITS, 0, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"an exact FLOP count must be an int, not {type(value).__name__}")
        if not 0 <= value < 10 ** DIGITS:
            raise ValueError(f"a FLOP count must be between 0 and 10^{DIGITS}, not {value}")
        return str(value) if dialect.name == "sqlite" else Decimal(value)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            if not value.isdigit():
                raise ValueError(f"not an exact FLOP count in the registry: {value!r}")
            return int(value)
        exact = Decimal(value)
        if exact != exact.to_integral_value():
            raise ValueError(f"not a whole FLOP count in the registry: {value!r}")
        return int(exact)
