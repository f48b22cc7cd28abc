"""Checks of operator values, templated ones included: each error names the field and value.

Operators call these in ``execute`` (after rendering), never in ``__init__``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_skytap.exceptions import InvalidValueError as InvalidValueError
from airflow_provider_skytap.hooks.api import REGIONS, check_region


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


def dr_regions(
    value: Any, *, source_region: str | None = None, known: Iterable[str] = REGIONS
) -> list[str]:
    """DR regions to copy a backup to, checked before anything is frozen or copied.

    Each must be a region name, one of Skytap's regions (``known``), listed once, and not the
    region the backup is made in (a DR copy needs another region).

    :param value: the list (empty: no DR copy)
    :param source_region: the region of the environment being backed up, when known
    :param known: the regions accepted; default: Skytap's 16 (``hooks.api.REGIONS``); pass
        ``SkytapHook.settings.regions`` to add the connection's ``extra_regions``
    """
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"dr_regions must be a list of Skytap region names, got {value!r}")
    regions = list(value)
    allowed = list(known)
    seen: list[str] = []
    for region in regions:
        check_region(region, allowed, what="dr_regions")
        if region in seen:
            raise ValueError(f"dr_regions: {region!r} is listed twice in {regions!r}")
        if source_region and region == source_region:
            raise ValueError(
                f"dr_regions: {region!r} is the region the backup is made in; a DR copy "
                "needs another region"
            )
        seen.append(region)
    return seen


def conf_keys(conf: Mapping[str, Any] | None, params: Iterable[str]) -> None:
    """Refuse a run's conf key that is no param of the DAG (a typo would silently leave the
    param at its default: another environment, a longer freeze).

    :param conf: the DAG run's conf
    :param params: the DAG's param names
    """
    known = sorted(params)
    for key in conf or {}:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            value = repr(conf[key])  # type: ignore[index]
            raise ValueError(
                f"conf: {key!r} is not a param of this DAG{hint}; its params: {', '.join(known)}"
                f"; the value given, not used: {value[:80]}"
            )


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
