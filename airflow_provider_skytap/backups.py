"""How this provider names and tags the backups it makes: its own convention, not Skytap's.

Every copy an operator of this package makes carries two tags:

- the *source tag* ``airflow-skytap/<dag_id>/<kind>-<id>/<hash>``: made by this provider, for
  this DAG, from this source. ``<dag_id>`` is the DAG id as written and ``<hash>`` the first 12
  hex digits of its SHA-256: Skytap compares tags without regard to case, so the hash is what
  tells DAG ``ERP_Backup`` from ``erp_backup``. Retention touches nothing without it, and region
  copies inherit it from the template they copy, so the DR copies of one environment's backups
  are pruned with them. :func:`is_from_source` is the one test of "this DAG made it from this
  source"; it also accepts the lower-cased tag of earlier versions where the backup's name
  proves which DAG made it.
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
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from airflow_provider_skytap.hooks.api import Kind, check_text, tag_values
from airflow_provider_skytap.quiesce.report import (
    APPLICATION_CONSISTENT,
    CRASH_CONSISTENT,
    INCONSISTENT,
)

TAG_PREFIX = "airflow-skytap/"
TIME_TAG_PREFIX = "airflow-skytap-at/"
CONSISTENCY_TAG_PREFIX = "airflow-skytap-consistency/"
# A restore drill's proof that the backup boots and passes its checks (verification.py).
VERIFIED_TAG_PREFIX = "airflow-skytap-verified/"
# The freeze window a copy was requested in (consistency.FreezeWindow).
WINDOW_TAG_PREFIX = "airflow-skytap-window/"
_STAMP = "%Y%m%dT%H%M%SZ"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_NAME = 255
# [ASSUMED] Skytap's longest tag value. No Skytap document or client states one; Skytap's help
# gives 255 characters for label values (help.skytap.com/adding-usage-labels-to-environments),
# the sibling feature, so tags are kept within the same. docs/real-account.md: "What the provider
# relies on".
MAX_TAG = 255
_DIGEST = 12  # hex digits of the DAG id's SHA-256 in a source tag


def _digest(dag_id: str, size: int = _DIGEST) -> str:
    """A case-preserving fingerprint of the DAG id (hex, so Skytap's case folding keeps it)."""
    return hashlib.sha256(dag_id.encode()).hexdigest()[:size]


def source_tag(dag_id: str, source_kind: Kind, source_id: str) -> str:
    """The tag that says: made by this provider, for this DAG, from this source.

    ``airflow-skytap/<dag_id>/<kind>-<id>/<hash of the exact DAG id>``. Skytap treats tag values
    without regard to case [ASSUMED], so the DAG id as written would not tell ``ERP_Backup``
    from ``erp_backup``; the hash does. A DAG id too long for :data:`MAX_TAG` is shortened; the
    hash still identifies it. Compare tags with :func:`is_from_source`, never as strings.

    :param dag_id: the DAG the backup belongs to, exactly as written
    :param source_kind: ``environment`` or ``template``
    :param source_id: the id of the environment or template the backup was made from
    """
    tail = f"/{source_kind}-{source_id}/{_digest(dag_id)}"
    keep = MAX_TAG - len(TAG_PREFIX) - len(tail)
    return f"{TAG_PREFIX}{dag_id[:keep]}{tail}"


def legacy_source_tag(dag_id: str, source_kind: Kind, source_id: str) -> str:
    """The source tag earlier versions wrote: lower-cased, so it cannot tell DAG ids apart
    that differ only in case (``ERP_Backup`` and ``erp_backup`` share one)."""
    return f"{TAG_PREFIX}{dag_id}/{source_kind}-{source_id}".lower()


def is_from_source(
    resource: Mapping[str, Any], dag_id: str, source_kind: Kind, source_id: str
) -> bool:
    """Whether this provider made ``resource`` for this DAG from this source, by its tags.

    A current source tag (with the DAG id's hash) decides alone: when the resource carries one,
    earlier versions' tags are not looked at. An earlier version's tag is lower-cased, so two
    DAG ids that differ only in case share it; it counts only when the resource's name is the
    default name this DAG gives its backups (``<dag_id>-<kind>-<id>-...``, compared with case,
    as Skytap keeps names), which tells those DAGs apart. A legacy backup under a name of the
    user's choosing proves nothing and is nobody's: never counted, never deleted.

    :param resource: an environment or template as Skytap answers it, with its ``tags``
    :param dag_id: the DAG asking, exactly as written
    :param source_kind: ``environment`` or ``template``
    :param source_id: the id of the environment or template the backup was made from
    """
    tags = provider_source_tags(resource)
    current = {t for t in tags if _is_current(t)}
    if current:
        return source_tag(dag_id, source_kind, source_id).lower() in current
    if legacy_source_tag(dag_id, source_kind, source_id) not in tags:
        return False
    return _named_by(str(resource.get("name") or ""), dag_id, source_kind, source_id)


def tag_source(tag: str) -> tuple[str, str] | None:
    """The DAG part and the source (``environment-1001``) a source tag names, either shape.

    The DAG part is as the tag keeps it (lower-cased in an earlier version's tag); None when
    ``tag`` is not a source tag of this provider.

    :param tag: one tag value, as Skytap answers it
    """
    if not tag.lower().startswith(TAG_PREFIX):
        return None
    parts = tag[len(TAG_PREFIX) :].split("/")
    if _is_current(tag):
        parts = parts[:-1]
    match = re.fullmatch(r"(environment|template)-(\d+)", parts[-1]) if len(parts) >= 2 else None
    if match is None:
        return None
    return "/".join(parts[:-1]), parts[-1]


def _is_current(tag: str) -> bool:
    """A source tag of this version: DAG id, source and the DAG id's hash after the prefix."""
    parts = tag[len(TAG_PREFIX) :].split("/")
    return len(parts) == 3 and re.fullmatch(f"[0-9a-f]{{{_DIGEST}}}", parts[2]) is not None


def _named_by(name: str, dag_id: str, source_kind: Kind, source_id: str) -> bool:
    """Whether ``name`` is a default :func:`backup_name` of this DAG and source (any stamp)."""
    tail = f"-{source_kind}-{source_id}-"
    if name.startswith(f"{dag_id}{tail}"):
        return True
    head, found, _ = name.partition(f"-{_digest(dag_id, 8)}{tail}")  # a shortened name
    return bool(found and head) and dag_id.startswith(head)


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
    digest = _digest(dag_id, 8)
    keep = max(1, MAX_NAME - len(tail) - len(digest) - 1)
    return f"{dag_id[:keep]}-{digest}{tail}"[:MAX_NAME]


def check_tags(tags: Any, field: str = "tags") -> list[str]:
    """User tags: a list of strings that round-trip through Skytap and do not pose as this
    provider's own.

    Each item is checked whole first (no surrounding whitespace, no control or invisible
    format characters: Skytap strips or mangles them, so ``" airflow-skytap-consistency/..."``
    would be stored as the verdict tag itself), then against the reserved prefixes, compared
    as Skytap would (case folded, compatibility forms normalised).

    :param tags: the user's tags (None for none)
    :param field: the argument's name, for the error
    """
    if tags is None:
        return []
    if isinstance(tags, str | bytes) or not isinstance(tags, Iterable):
        raise ValueError(f"{field} must be a list of strings, got {tags!r}")
    checked = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise ValueError(f"{field} items must be non-empty strings, got {tag!r}")
        check_text(tag, f"{field} item")
        if any(unicodedata.category(c) == "Cf" for c in tag):
            raise ValueError(
                f"{field} item must not contain invisible format characters, got {tag!r}"
            )
        folded = unicodedata.normalize("NFKC", tag).casefold()
        if folded.startswith(
            (
                TAG_PREFIX,
                TIME_TAG_PREFIX,
                CONSISTENCY_TAG_PREFIX,
                VERIFIED_TAG_PREFIX,
                WINDOW_TAG_PREFIX,
            )
        ):
            raise ValueError(
                f"{field} item {tag!r} uses the prefix this provider keeps for its own tags"
            )
        checked.append(tag)
    return checked


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)
