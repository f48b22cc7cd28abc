"""The backups this provider made, per source environment and region, against an RPO.

For each source (the environment or template a backup was copied from) and each region it
has backups in, every backup with its recovery point, the thaw's verdict, its age, its size,
and whether (and when) a restore drill verified it with the recovery time it measured; and
the newest application-consistent one, checked against the recovery point objective the
user sets, beside the newest verified one. Only resources carrying this provider's source
tag are listed (``backups.provider_source_tags``): nothing anybody else made.

From the command line (exit 0, or 3 when a source misses the RPO in a region)::

    python -m airflow_provider_skytap.inventory --conn-id skytap_default --rpo-hours 24

and in the Airflow UI as the plugin page *Skytap backups* (:mod:`.plugin`).
"""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk.exceptions import AirflowException

from airflow_provider_skytap.backups import (
    APPLICATION_CONSISTENT,
    TAG_PREFIX,
    consistency,
    provider_source_tags,
    recovery_point,
    tag_source,
)
from airflow_provider_skytap.hooks.api import KINDS, Kind, ago
from airflow_provider_skytap.verification import verifications

#: The verdict shown for a backup no thaw vouched for (its run failed or was killed first).
UNVOUCHED = "not vouched for"
#: The exit status of the command line when a source misses the RPO in a region.
EXIT_RPO_MISSED = 3


@dataclass(frozen=True)
class Backup:
    """One backup as the inventory shows it.

    :param kind: ``environment`` or ``template``
    :param id: its Skytap id
    :param name: its name
    :param region: its region
    :param source: what it is a backup of (``environment-1001``), from its source tag
    :param dags: the DAG part of each source tag it carries
    :param recovery_point: the recovery point from its time tag (None when it has none)
    :param verdict: the thaw's verdict, or None when no thaw vouched for it
    :param size_mb: its storage in MB, as Skytap reports it (None when not reported)
    :param busy: Skytap still copies it (a template that is not ready)
    :param verified_at: when a restore drill last verified it (None: never)
    :param recovery_seconds: the recovery time that drill measured, seconds
    """

    kind: Kind
    id: str
    name: str
    region: str
    source: str
    dags: tuple[str, ...]
    recovery_point: datetime | None
    verdict: str | None
    size_mb: int | None
    busy: bool = False
    verified_at: datetime | None = None
    recovery_seconds: float | None = None

    def age(self, now: datetime) -> timedelta | None:
        """How old its recovery point is at ``now`` (None without one)."""
        return None if self.recovery_point is None else now - self.recovery_point


@dataclass
class Group:
    """The backups of one source in one region, newest recovery point first.

    :param source: ``environment-1001``
    :param region: the region
    :param backups: newest first
    """

    source: str
    region: str
    backups: list[Backup] = field(default_factory=list)

    @property
    def newest_consistent(self) -> Backup | None:
        """The newest application-consistent backup that is ready, or None."""
        return next(
            (
                b
                for b in self.backups
                if b.verdict == APPLICATION_CONSISTENT and not b.busy and b.recovery_point
            ),
            None,
        )

    def meets(self, rpo: timedelta | None, now: datetime) -> bool | None:
        """Whether the newest application-consistent backup is within ``rpo`` (None: no RPO)."""
        if rpo is None:
            return None
        best = self.newest_consistent
        age = best.age(now) if best else None
        return age is not None and age <= rpo

    @property
    def newest_verified(self) -> Backup | None:
        """The backup with the newest recovery point a restore drill verified, or None."""
        return next((b for b in self.backups if b.verified_at and b.recovery_point), None)


@dataclass
class Inventory:
    """Every group, sorted by source then region.

    :param now: when it was taken (ages are counted from it)
    :param rpo: the recovery point objective, or None
    :param groups: one per source and region
    """

    now: datetime
    rpo: timedelta | None
    groups: list[Group]

    @property
    def missed(self) -> list[Group]:
        """The groups whose newest application-consistent backup is older than the RPO."""
        return [g for g in self.groups if g.meets(self.rpo, self.now) is False]


def backup_of(kind: Kind, resource: Mapping[str, Any]) -> Backup | None:
    """The inventory's view of one listed resource, or None when this provider did not make
    it (no source tag of ours).

    :param kind: ``environment`` or ``template``
    :param resource: the resource as Skytap lists it (with its tags)
    """
    tags = sorted(provider_source_tags(resource))
    if not tags:
        return None
    sources, dags = [], []
    for tag in tags:
        named = tag_source(tag)
        sources.append(named[1] if named else tag[len(TAG_PREFIX) :])
        dags.append(named[0] if named else "")
    storage = resource.get("storage")
    drills = verifications(resource)
    return Backup(
        kind=kind,
        id=str(resource.get("id", "")),
        name=str(resource.get("name", "")),
        region=str(resource.get("region") or "unknown region"),
        source=sources[0],
        dags=tuple(sorted({d for d in dags if d})),
        recovery_point=recovery_point(resource),
        verdict=consistency(resource),
        size_mb=storage if isinstance(storage, int) and not isinstance(storage, bool) else None,
        busy=kind == "template" and resource.get("busy") is True,
        verified_at=drills[-1][0] if drills else None,
        recovery_seconds=drills[-1][1] if drills else None,
    )


def build(
    listed: Iterable[tuple[Kind, Mapping[str, Any]]],
    *,
    now: datetime | None = None,
    rpo: timedelta | None = None,
) -> Inventory:
    """Group listed resources into an inventory.

    :param listed: ``(kind, resource)`` pairs as Skytap lists them
    :param now: the time to count ages from (now by default)
    :param rpo: the recovery point objective
    """
    if rpo is not None and rpo <= timedelta(0):
        raise ValueError(f"rpo must be positive, got {rpo}")
    groups: dict[tuple[str, str], Group] = {}
    for kind, resource in listed:
        backup = backup_of(kind, resource)
        if backup is None:
            continue
        key = (backup.source, backup.region)
        groups.setdefault(key, Group(*key)).backups.append(backup)
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    for group in groups.values():
        group.backups.sort(
            key=lambda b: (b.recovery_point or oldest, int(b.id) if b.id.isdigit() else 0),
            reverse=True,
        )
    ordered = [groups[k] for k in sorted(groups)]
    return Inventory(now=now or datetime.now(timezone.utc), rpo=rpo, groups=ordered)


def collect(conn_id: str, *, rpo_hours: float | str | None = None) -> Inventory:
    """List every environment and template the connection sees and build the inventory.

    :param conn_id: the Skytap connection
    :param rpo_hours: the recovery point objective in hours
    """
    from airflow_provider_skytap.hooks.skytap import SkytapHook

    rpo = rpo_from_hours(rpo_hours)
    with SkytapHook(skytap_conn_id=conn_id) as hook:
        listed = [(kind, r) for kind in KINDS for r in hook.list_resources(kind)]
    return build(listed, rpo=rpo)


def rpo_from_hours(rpo_hours: Any) -> timedelta | None:
    """The RPO from a number of hours (None or "" for none); a bad value names the field.

    :param rpo_hours: hours, a positive number
    """
    if rpo_hours is None or rpo_hours == "":
        return None
    try:
        hours = float(rpo_hours)
    except (TypeError, ValueError):
        raise ValueError(f"rpo_hours must be a positive number, got {rpo_hours!r}") from None
    if not hours > 0 or hours == float("inf"):
        raise ValueError(f"rpo_hours must be a positive number, got {rpo_hours!r}")
    return timedelta(hours=hours)


def describe_age(age: timedelta | None) -> str:
    """``3 h 05 min``, ``2 d 4 h``, ``in the future`` or ``unknown``."""
    if age is None:
        return "unknown"
    seconds = int(age.total_seconds())
    if seconds < 0:
        return "in the future"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min"


def describe_size(size_mb: int | None) -> str:
    """``20.0 GiB`` or ``512 MB`` (Skytap reports storage in MB)."""
    if size_mb is None:
        return "unknown"
    return f"{size_mb / 1024:.1f} GiB" if size_mb >= 1024 else f"{size_mb} MB"


def describe_verified(backup: Backup) -> str:
    """``verified 2026-11-24 03:10 UTC, recovered in 3 min 32 s`` or ``not verified``."""
    if backup.verified_at is None:
        return "not verified"
    when = backup.verified_at.strftime("%Y-%m-%d %H:%M UTC")
    rto = f", recovered in {ago(backup.recovery_seconds)}" if backup.recovery_seconds else ""
    return f"verified {when}{rto}"


def status(group: Group, inventory: Inventory) -> str:
    """What the group's line says about the RPO and the newest verified backup."""
    return f"{_consistent_status(group, inventory)}; {verified_status(group, inventory)}"


def verified_status(group: Group, inventory: Inventory) -> str:
    """The newest backup a restore drill verified, its age and recovery time, or none."""
    verified = group.newest_verified
    if verified is None:
        return "no backup verified by a restore drill"
    age = describe_age(verified.age(inventory.now))
    return f"newest verified: {verified.name} ({age} old; {describe_verified(verified)})"


def _consistent_status(group: Group, inventory: Inventory) -> str:
    best = group.newest_consistent
    if best is None:
        return "no application-consistent backup"
    age = describe_age(best.age(inventory.now))
    meets = group.meets(inventory.rpo, inventory.now)
    if meets is None:
        return f"newest application-consistent: {best.name} ({age} old)"
    rpo = describe_age(inventory.rpo)
    verdict = "within" if meets else "MISSES"
    return f"newest application-consistent: {best.name} ({age} old) {verdict} the RPO of {rpo}"


def render_text(inventory: Inventory) -> str:
    """The inventory as plain text, one block per source and region."""
    if not inventory.groups:
        return "No backups made by airflow-provider-skytap were found.\n"
    lines = []
    for group in inventory.groups:
        lines.append(f"{group.source} in {group.region}: {status(group, inventory)}")
        best = group.newest_consistent
        for b in group.backups:
            mark = "*" if b is best else " "
            point = b.recovery_point.strftime("%Y-%m-%d %H:%M UTC") if b.recovery_point else "-"
            lines.append(
                f" {mark} {b.kind} {b.id} {b.name}: recovery point {point}, "
                f"{b.verdict or UNVOUCHED}, age {describe_age(b.age(inventory.now))}, "
                f"size {describe_size(b.size_mb)}, {describe_verified(b)}"
                f"{', still copying' if b.busy else ''}"
            )
    if inventory.rpo is not None:
        lines.append(
            f"RPO {describe_age(inventory.rpo)}: {len(inventory.missed)} of "
            f"{len(inventory.groups)} source/region pairs miss it"
        )
    return "\n".join(lines) + "\n"


def render_html(inventory: Inventory, page_url: Any = None) -> str:
    """The inventory as an HTML fragment (the plugin page wraps it).

    :param page_url: ``(kind, id) -> str``: the address of a backup's page, for a link
    """
    esc = html.escape
    if not inventory.groups:
        return "<p id='empty'>No backups made by airflow-provider-skytap were found.</p>"
    parts = []
    for group in inventory.groups:
        meets = group.meets(inventory.rpo, inventory.now)
        cls = {None: "no-rpo", True: "rpo-met", False: "rpo-missed"}[meets]
        if group.newest_consistent is None:
            cls = "rpo-missed" if inventory.rpo is not None else "no-consistent"
        parts.append(
            f"<section class='group {cls}' data-source='{esc(group.source)}' "
            f"data-region='{esc(group.region)}'><h2>{esc(group.source)} in "
            f"{esc(group.region)}</h2><p class='status'>{esc(status(group, inventory))}</p>"
            "<table><tr><th>Backup</th><th>Recovery point</th><th>Verdict</th><th>Age</th>"
            "<th>Size</th><th>Verified by a restore drill</th><th>Recovery time</th></tr>"
        )
        best = group.newest_consistent
        for b in group.backups:
            name = esc(f"{b.kind} {b.id} {b.name}")
            link = page_url(b.kind, b.id) if page_url else ""
            label = f"<a href='{esc(link)}' target='_blank'>{name}</a>" if link else name
            point = b.recovery_point.strftime("%Y-%m-%d %H:%M UTC") if b.recovery_point else "-"
            row = "newest-consistent" if b is best else "backup"
            if b is group.newest_verified:
                row += " newest-verified"
            when = b.verified_at.strftime("%Y-%m-%d %H:%M UTC") if b.verified_at else "no"
            rto = ago(b.recovery_seconds) if b.recovery_seconds is not None else "-"
            parts.append(
                f"<tr class='{row}' data-id='{esc(b.id)}'><td>{label}"
                f"{' (still copying)' if b.busy else ''}</td><td>{esc(point)}</td>"
                f"<td>{esc(b.verdict or UNVOUCHED)}</td>"
                f"<td>{esc(describe_age(b.age(inventory.now)))}</td>"
                f"<td>{esc(describe_size(b.size_mb))}</td>"
                f"<td class='verified'>{esc(when)}</td><td class='rto'>{esc(rto)}</td></tr>"
            )
        parts.append("</table></section>")
    return "".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m airflow_provider_skytap.inventory``: print the inventory.

    :param argv: the arguments (``sys.argv[1:]`` by default)
    """
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_skytap.inventory",
        description="The backups airflow-provider-skytap made, per source and region.",
    )
    parser.add_argument("--conn-id", default="skytap_default", help="the Skytap connection")
    parser.add_argument(
        "--rpo-hours",
        type=float,
        default=None,
        help="recovery point objective: exit 3 if a source's newest application-consistent "
        "backup in a region is older than this",
    )
    args = parser.parse_args(argv)
    try:
        inventory = collect(args.conn_id, rpo_hours=args.rpo_hours)
    except ValueError as err:
        parser.error(str(err))
    except AirflowException as err:  # no such connection, Skytap refused or is unreachable
        sys.stderr.write(f"inventory: {err}\n")
        return 2
    sys.stdout.write(render_text(inventory))
    return EXIT_RPO_MISSED if inventory.missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
