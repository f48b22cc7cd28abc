"""Restore drills vouch for backups: which backup to drill, the verified tag, the RPO alert.

A template the restore drill booted and checked carries the *verified tag*
``airflow-skytap-verified/<YYYYmmddTHHMMSSZ>/rto-<seconds>s``: when every check passed, and the
recovery time (from the restore request to every check passing). Tags are case-insensitive
strings on Skytap, so the time and the figure live in the one tag and cannot be paired wrongly.

Retention must never delete the newest verified backup (:func:`newest_verified`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from airflow_provider_skytap.backups import VERIFIED_TAG_PREFIX, consistency, recovery_point
from airflow_provider_skytap.hooks.api import tag_values
from airflow_provider_skytap.quiesce.report import APPLICATION_CONSISTENT

#: The asset the backup DAG updates once per backup (its extra: ``environment_id``,
#: ``template_id``, ``region``, ``verdict``); the restore drill is scheduled on it.
BACKUP_ASSET_NAME = "skytap_backup"
BACKUP_ASSET_URI = "skytap://backups"
_STAMP = "%Y%m%dT%H%M%SZ"
_VERIFIED = re.compile(r"airflow-skytap-verified/([0-9]{8}t[0-9]{6}z)/rto-([0-9]+(?:\.[0-9]+)?)s")
log = logging.getLogger(__name__)


def backup_asset() -> Any:
    """The Airflow asset of this provider's backups (imported when a DAG file asks)."""
    from airflow.sdk import Asset

    return Asset(name=BACKUP_ASSET_NAME, uri=BACKUP_ASSET_URI)


def verified_tag(when: datetime, recovery_seconds: float) -> str:
    """The tag a drill puts on a template it restored and checked (UTC, to the second)."""
    if recovery_seconds < 0:
        raise ValueError(f"recovery_seconds must be 0 or more, got {recovery_seconds!r}")
    stamp = _utc(when).strftime(_STAMP)
    return f"{VERIFIED_TAG_PREFIX}{stamp}/rto-{recovery_seconds:.1f}s".lower()


def verifications(resource: Mapping[str, Any]) -> list[tuple[datetime, float]]:
    """Every ``(verified at, recovery seconds)`` the resource's tags record, oldest first."""
    found = []
    for value in tag_values(resource):
        match = _VERIFIED.fullmatch(value)
        if match:
            when = datetime.strptime(match.group(1).upper(), _STAMP)
            found.append((when.replace(tzinfo=timezone.utc), float(match.group(2))))
    return sorted(found)


def verified_at(resource: Mapping[str, Any]) -> datetime | None:
    """When a drill last verified the resource, or None."""
    found = verifications(resource)
    return found[-1][0] if found else None


def newest_verified(resources: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The verified backup with the newest recovery point (what prune must keep), or None."""
    verified = [r for r in resources if verified_at(r) is not None and recovery_point(r)]
    if not verified:
        return None
    return max(verified, key=lambda r: (recovery_point(r), str(r.get("id"))))


def newest_consistent(
    resources: Iterable[Mapping[str, Any]], region: str | None = None
) -> Mapping[str, Any] | None:
    """The ``application-consistent`` backup with the newest recovery point (in ``region``),
    or None. A template without a time tag or still busy is not a candidate."""
    candidates = [
        r
        for r in resources
        if consistency(r) == APPLICATION_CONSISTENT
        and recovery_point(r) is not None
        and (region is None or r.get("region") == region)
        and not r.get("busy")
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda r: (recovery_point(r), str(r.get("id"))))


async def rpo_missed(context: Any = None, **kwargs: Any) -> None:
    """The drill's deadline callback (on the triggerer): no drill verified a backup within
    the RPO since it was queued. Logs an error naming the DAG run; pass a notifier's
    ``AsyncCallback`` instead to page someone.

    :param kwargs: ``rpo_hours`` and ``environment_id`` as the DAG set them
    """
    run = context.get("dag_run") if isinstance(context, Mapping) else None
    run_id = run.get("run_id") if isinstance(run, Mapping) else getattr(run, "run_id", None)
    log.error(
        "RPO missed: no backup of environment %s was verified by a restore drill within "
        "%s h of run %s",
        kwargs.get("environment_id"),
        kwargs.get("rpo_hours"),
        run_id,
    )


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)
