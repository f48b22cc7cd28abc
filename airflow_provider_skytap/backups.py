"""How this provider names and tags the backups it makes: its own convention, not Skytap's.

Every copy an operator of this package makes carries two tags:

- the *source tag* ``airflow-skytap/<dag_id>/<kind>-<id>``: made by this provider, for this
  DAG, from this source. Retention touches nothing without it, and region copies inherit it
  from the template they copy, so the DR copies of one environment's backups are pruned with
  them.
- the *time tag* ``airflow-skytap-at/<YYYYmmddTHHMMSSZ>``: the recovery point, i.e. the run's
  logical date (or, for a manual run without one, when it was triggered). Retention keeps the
  newest recovery points, so a backfill of last month never evicts last night's backup.

A copy made between a freeze and a thaw gets a third tag once the thaw task has run:

- the *consistency tag* ``airflow-skytap-consistency/<verdict>``: what the thaw found, i.e.
  ``application-consistent``, ``crash-consistent`` or ``inconsistent`` (a guardian thawed
  before the copy was complete: the copy may be torn). A copy without one was never vouched
  for: its run failed or was killed before the thaw task could look. Retention can count only
  vouched-for backups towards ``keep``, so a torn copy never pushes a good one out.

The default name is deterministic (DAG, source, logical date or run id), so a retry, a re-run
of the same date and a backfill find what an earlier try made instead of making another.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from airflow_provider_skytap.hooks.api import Kind, tag_values
from airflow_provider_skytap.operators.quiesce import (
    APPLICATION_CONSISTENT,
    CRASH_CONSISTENT,
    INCONSISTENT,
)

TAG_PREFIX = "airflow-skytap/"
TIME_TAG_PREFIX = "airflow-skytap-at/"
CONSISTENCY_TAG_PREFIX = "airflow-skytap-consistency/"
_STAMP = "%Y%m%dT%H%M%SZ"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_NAME = 255


def source_tag(dag_id: str, source_kind: Kind, source_id: str) -> str:
    """The tag that says: made by this provider, for this DAG, from this source."""
    return f"{TAG_PREFIX}{dag_id}/{source_kind}-{source_id}".lower()


def time_tag(when: datetime) -> str:
    """The tag that records a backup's recovery point (UTC, to the second)."""
    return f"{TIME_TAG_PREFIX}{_utc(when).strftime(_STAMP)}".lower()


def consistency_tag(verdict: str) -> str:
    """The tag that records what the thaw found about a copy (``application-consistent``...)."""
    return f"{CONSISTENCY_TAG_PREFIX}{verdict}".lower()


def consistency(resource: Mapping[str, Any]) -> str | None:
    """The verdict of the consistency tag ``resource`` carries, or None when it has none.

    Should a copy carry two (a thaw retried after a different verdict), the worse one counts.
    """
    found = {
        t[len(CONSISTENCY_TAG_PREFIX) :]
        for t in tag_values(resource)
        if t.startswith(CONSISTENCY_TAG_PREFIX)
    }
    for verdict in (INCONSISTENT, CRASH_CONSISTENT, APPLICATION_CONSISTENT):
        if verdict in found:
            return verdict
    return next(iter(sorted(found)), None)


def provider_source_tags(resource: Mapping[str, Any]) -> set[str]:
    """The source tags of this provider that ``resource`` carries (lower-cased)."""
    return {t for t in tag_values(resource) if t.startswith(TAG_PREFIX)}


def recovery_point(resource: Mapping[str, Any]) -> datetime | None:
    """The recovery point from the time tag, or None when the resource has none."""
    for value in sorted(tag_values(resource), reverse=True):
        if value.startswith(TIME_TAG_PREFIX):
            try:
                stamp = value[len(TIME_TAG_PREFIX) :].upper()
                return datetime.strptime(stamp, _STAMP).replace(tzinfo=timezone.utc)
            except ValueError:
                continue
    return None


def time_tags(resource: Mapping[str, Any]) -> set[str]:
    return {t for t in tag_values(resource) if t.startswith(TIME_TAG_PREFIX)}


def run_stamp(context: Mapping[str, Any]) -> tuple[str, datetime]:
    """What identifies this run in a name, and its recovery point.

    The logical date when the run has one (scheduled runs, backfills, most manual runs);
    otherwise the run id, with the time the run was triggered as the recovery point.
    """
    logical = context.get("logical_date")
    if logical is not None:
        return _utc(logical).strftime(_STAMP), _utc(logical)
    dag_run = context.get("dag_run")
    when = getattr(dag_run, "run_after", None) or datetime.now(timezone.utc)
    run_id = str(context.get("run_id") or "run")
    return _UNSAFE.sub("-", run_id).strip("-") or "run", _utc(when)


def backup_name(dag_id: str, source_kind: Kind, source_id: str, stamp: str) -> str:
    """``<dag_id>-<kind>-<id>-<stamp>``, shortened with a hash if it would pass 255 characters."""
    tail = f"-{source_kind}-{source_id}-{stamp}"
    name = f"{dag_id}{tail}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(dag_id.encode()).hexdigest()[:8]
    keep = max(1, MAX_NAME - len(tail) - len(digest) - 1)
    return f"{dag_id[:keep]}-{digest}{tail}"[:MAX_NAME]


def check_tags(tags: Any, field: str = "tags") -> list[str]:
    """User tags: a list of non-empty strings that do not pose as this provider's own."""
    if tags is None:
        return []
    if isinstance(tags, str | bytes) or not isinstance(tags, Iterable):
        raise ValueError(f"{field} must be a list of strings, got {tags!r}")
    checked = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise ValueError(f"{field} items must be non-empty strings, got {tag!r}")
        lowered = tag.lower()
        if lowered.startswith((TAG_PREFIX, TIME_TAG_PREFIX, CONSISTENCY_TAG_PREFIX)):
            raise ValueError(
                f"{field} item {tag!r} uses the prefix this provider keeps for its own tags"
            )
        checked.append(tag)
    return checked


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)
