"""Keep the newest N backups of one source per region; delete only what this provider made."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_skytap import checks
from airflow_provider_skytap.backups import (
    consistency,
    is_from_source,
    legacy_source_tag,
    recovery_point,
    source_tag,
)
from airflow_provider_skytap.consistency import CONFIRMED, owner_reason
from airflow_provider_skytap.hooks.api import (
    KINDS,
    Kind,
    check_id,
    check_kind,
    check_region,
    describe,
    readiness,
)
from airflow_provider_skytap.hooks.skytap import DEFAULT_CONN_ID, SkytapHook, SkytapNotFoundError
from airflow_provider_skytap.verification import newest_verified

if TYPE_CHECKING:
    from airflow.sdk import Context

_OLDEST = datetime.min.replace(tzinfo=timezone.utc)


class PruneBackupsOperator(BaseOperator):
    """Keep the newest ``keep`` backups of one source in each region and delete the rest.

    Touches only environments and templates that carry this provider's source tag for this
    DAG and source (``airflow-skytap/<dag_id>/environment-<id>``), which the clone and region
    copy operators put on everything they make, *and* that Skytap shows as made by the
    connection's user (tags alone can be forged by anyone who may tag); anything else is
    never counted towards ``keep`` and never deleted.
    "Newest" is by recovery point (the run's logical date, from the time tag), then by id, so
    a backfill of old dates does not evict recent backups. A busy resource (still copying, or
    being read by a copy) is never deleted: it is reported and left for the next run.

    With ``confirmed_only``, only backups the thaw vouched for count towards ``keep``: those
    tagged ``application-consistent`` or ``crash-consistent`` (see
    :class:`~airflow_provider_skytap.frozen_copy.ThawAndVouchOperator`). Any other (tagged
    ``inconsistent``: a guardian thawed before the copy was complete; or not tagged: its run
    failed first) is kept while it is newer than the newest confirmed backup, in case it is
    all there is, and deleted once a confirmed backup with a later recovery point exists. So a
    torn copy never pushes a good one out of the last ``keep``.

    Returns ``{"kept": [...], "deleted": [...], "busy": [...], "dry_run": bool}``, each item
    ``{"id", "kind", "name", "region", "recovery_point", "consistency"}``.

    :param environment_id: the source environment whose backups to prune
    :param template_id: or: the source template (for region copies of a template this
        provider did not make)
    :param keep: how many backups to keep per region and kind (at least 1)
    :param kinds: which kinds of backup to prune: ``template``, ``environment`` or both
    :param regions: only these regions (default: every region)
    :param dry_run: list what would be deleted, delete nothing
    :param confirmed_only: count only backups the thaw tagged consistent towards ``keep``
        (for DAGs made with ``frozen_copy``; a plain :class:`LiveCloneOperator` tags none)
    :param backup_dag_id: the DAG that made the backups (default: this DAG)
    :param wait_for_deletion: wait until Skytap answers 404 for each deleted resource
    :param deletion_timeout: seconds to wait for each deletion
    :param skytap_conn_id: a connection of type ``skytap``
    """

    template_fields: Sequence[str] = (
        "environment_id",
        "template_id",
        "keep",
        "regions",
        "is_dry_run",
        "confirmed_only",
        "backup_dag_id",
    )
    ui_color = "#fdebd0"

    def __init__(
        self,
        *,
        environment_id: str | int | None = None,
        template_id: str | int | None = None,
        keep: int | str = 7,
        kinds: Sequence[str] = KINDS,
        regions: Sequence[str] | None = None,
        dry_run: bool = False,
        confirmed_only: bool = False,
        backup_dag_id: str | None = None,
        wait_for_deletion: bool = True,
        deletion_timeout: float = 1800,
        skytap_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.environment_id = environment_id
        self.template_id = template_id
        self.keep = keep
        self.kinds = kinds
        self.regions = regions
        self.is_dry_run = dry_run  # BaseOperator has a dry_run() method
        self.confirmed_only = confirmed_only
        self.backup_dag_id = backup_dag_id
        self.wait_for_deletion = wait_for_deletion
        self.deletion_timeout = deletion_timeout
        self.skytap_conn_id = skytap_conn_id

    @cached_property
    def hook(self) -> SkytapHook:
        return SkytapHook(self.skytap_conn_id)

    def _source(self) -> tuple[str, Kind, str]:
        """The DAG whose backups these are, and the source they were made from."""
        if (self.environment_id is None) == (self.template_id is None):
            raise ValueError(
                "give exactly one of environment_id and template_id, got "
                f"environment_id={self.environment_id!r}, template_id={self.template_id!r}"
            )
        dag_id = self.backup_dag_id or self.dag_id
        if self.environment_id is not None:
            return dag_id, "environment", check_id(self.environment_id, "environment_id")
        return dag_id, "template", check_id(self.template_id, "template_id")

    def _keep(self) -> int:
        return checks.positive_int("keep", self.keep)

    def _kinds(self) -> list[Kind]:
        if isinstance(self.kinds, str):
            raise ValueError(f"kinds must be a list such as ['template'], got {self.kinds!r}")
        kinds = [check_kind(k) for k in self.kinds]
        if not kinds:
            raise ValueError("kinds must name at least one of 'template', 'environment'")
        return kinds

    def _regions(self) -> set[str] | None:
        if self.regions is None:
            return None
        if isinstance(self.regions, str):
            raise ValueError(f"regions must be a list of region names, got {self.regions!r}")
        return {check_region(r) for r in self.regions}

    def execute(self, context: Context) -> dict[str, Any]:
        source, keep, kinds, regions = self._source(), self._keep(), self._kinds(), self._regions()
        tag = source_tag(*source)
        timeout = checks.positive_seconds("deletion_timeout", self.deletion_timeout)
        dry_run = checks.flag("dry_run", self.is_dry_run)
        confirmed_only = checks.flag("confirmed_only", self.confirmed_only)
        report: dict[str, Any] = {"kept": [], "deleted": [], "busy": [], "dry_run": dry_run}
        for kind in kinds:
            groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for resource in self._listed(kind, source):
                region = str(resource.get("region") or "")
                if regions is not None and region not in regions:
                    continue
                why = (
                    owner_reason(resource, self.hook.connection_user)
                    if is_from_source(resource, *source)
                    else "it carries no source tag of this DAG for this source"
                )
                if why is not None:  # never counted, never deleted
                    self.log.warning(
                        "Leaving %s alone: it cannot be shown to be this DAG's backup (%s)",
                        describe(kind, str(resource.get("id")), resource),
                        why,
                    )
                    continue
                groups[region].append(resource)
            for region, backups in sorted(groups.items()):
                backups.sort(key=_newest_first, reverse=True)
                self.log.info(
                    "%s: %d %s backup(s) tagged %s; keeping the newest %d%s",
                    region,
                    len(backups),
                    kind,
                    tag,
                    keep,
                    " confirmed consistent" if confirmed_only else "",
                )
                kept = _kept(backups, keep) if confirmed_only else backups[:keep]
                verified = newest_verified(backups)
                if verified is not None and verified not in kept:
                    # The last backup a restore drill proved restorable stays, whatever keep
                    # says: without it nothing is known to restore.
                    self.log.info(
                        "Keeping %s beyond keep=%d: it is the newest backup a restore drill "
                        "verified",
                        describe(kind, str(verified.get("id")), verified),
                        keep,
                    )
                    kept.append(dict(verified))
                if confirmed_only:
                    self._say_uncounted(kind, backups, kept)
                report["kept"].extend(_item(kind, b) for b in kept)
                for old in backups:
                    if old not in kept:
                        self._prune(kind, old, report, timeout)
        self.log.info(
            "%s %d, kept %d, left %d busy",
            "Would delete" if dry_run else "Deleted",
            len(report["deleted"]),
            len(report["kept"]),
            len(report["busy"]),
        )
        return report

    def _listed(self, kind: Kind, source: tuple[str, Kind, str]) -> list[dict[str, Any]]:
        """Every resource carrying this DAG's source tag, or the tag earlier versions wrote
        (``backups.is_from_source`` then decides which are this DAG's)."""
        found: dict[str, dict[str, Any]] = {}
        for tag in (source_tag(*source), legacy_source_tag(*source)):
            for resource in self.hook.list_resources(kind, tags=[tag]):
                found.setdefault(str(resource.get("id")), resource)
        return list(found.values())

    def _say_uncounted(
        self, kind: Kind, backups: list[dict[str, Any]], kept: list[dict[str, Any]]
    ) -> None:
        """Log each backup ``confirmed_only`` does not count, and what becomes of it."""
        for b in backups:
            if consistency(b) not in CONFIRMED:
                self.log.info(
                    "%s is %s: not counted; %s",
                    describe(kind, str(b["id"]), b),
                    consistency(b) or "not confirmed consistent (its run failed first)",
                    "kept, as no confirmed backup is newer"
                    if b in kept
                    else "a newer confirmed backup exists",
                )

    def _prune(
        self, kind: Kind, old: dict[str, Any], report: dict[str, Any], timeout: float
    ) -> None:
        rid = str(old["id"])
        # Look again right before deleting: the list may be minutes old, and a copy may have
        # started reading this backup since.
        try:
            current = self.hook.get_resource(kind, rid)
        except SkytapNotFoundError:
            self.log.info("%s is gone already", describe(kind, rid, old))
            return
        label = describe(kind, rid, current)
        if readiness(kind, current).state == "busy":
            self.log.warning("Not deleting %s: it is busy; the next run will look again", label)
            report["busy"].append(_item(kind, current))
            return
        if report["dry_run"]:
            self.log.info("Dry run: would delete %s", label)
        else:
            self.log.info("Deleting %s", label)
            self.hook.delete(kind, rid, wait=self.wait_for_deletion, timeout=timeout)
        report["deleted"].append(_item(kind, current))


def _kept(backups: list[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
    """Of ``backups`` (newest first): the newest ``keep`` confirmed ones, and those not
    confirmed that are newer than every confirmed one (nothing better exists yet)."""
    confirmed = [b for b in backups if consistency(b) in CONFIRMED]
    newest = _newest_first(confirmed[0]) if confirmed else None
    return [
        b
        for b in backups
        if b in confirmed[:keep]
        or (b not in confirmed and (newest is None or _newest_first(b) > newest))
    ]


def _newest_first(resource: Mapping[str, Any]) -> tuple[datetime, int]:
    rid = str(resource.get("id") or "0")
    return recovery_point(resource) or _OLDEST, int(rid) if rid.isdigit() else 0


def _item(kind: Kind, resource: Mapping[str, Any]) -> dict[str, Any]:
    point = recovery_point(resource)
    return {
        "id": str(resource.get("id")),
        "kind": kind,
        "name": resource.get("name"),
        "region": resource.get("region"),
        "recovery_point": point.isoformat() if point else None,
        "consistency": consistency(resource),
    }
