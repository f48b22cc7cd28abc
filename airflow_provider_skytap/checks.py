"""Checks of operator values, templated ones included: each error names the field and value.

Operators call these in ``execute`` (after rendering), never in ``__init__``.
"""

from __future__ import annotations

import math
from typing import Any


def positive_seconds(field: str, value: Any) -> float:
    """A number of seconds above 0 (fractions allowed), also from a rendered template."""
    number = _number(value)
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ValueError(f"{field} must be a positive number of seconds, got {value!r}")
    return number


def whole_seconds(field: str, value: Any) -> int:
    """Whole seconds, at least 1 (what a shell's ``sleep`` takes); a fraction is dropped."""
    number = _number(value)
    if isinstance(value, bool) or not math.isfinite(number) or number < 1:
        raise ValueError(
            f"{field} must be a positive number of seconds (at least 1), got {value!r}"
        )
    return int(number)


def positive_int(field: str, value: Any) -> int:
    """A whole number, at least 1, also from a rendered template ("3")."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise ValueError(f"{field} must be a positive whole number, got {value!r}")
    return number


def flag(field: str, value: Any) -> bool:
    """True or False, also from a rendered template ("True", "false")."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"{field} must be true or false, got {value!r}")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
