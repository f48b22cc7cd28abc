"""Which backup a drill picks, the verified tag, and the newest verified backup."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_provider_skytap.backups import consistency_tag, time_tag
from airflow_provider_skytap.verification import (
    newest_consistent,
    newest_verified,
    verifications,
    verified_at,
    verified_tag,
)

DAY = [datetime(2026, 11, d, tzinfo=timezone.utc) for d in range(1, 31)]


def backup(
    rid: str, day: int, verdict: str | None, region: str = "EMEA", **kw: Any
) -> dict[str, Any]:
    tags = [time_tag(DAY[day])] + ([consistency_tag(verdict)] if verdict else [])
    return {"id": rid, "region": region, "tags": [{"value": t} for t in tags], **kw}


def test_the_verified_tag_carries_when_and_the_recovery_time() -> None:
    tag = verified_tag(datetime(2026, 11, 30, 12, 0, 5, tzinfo=timezone.utc), 13.04)
    assert tag == "airflow-skytap-verified/20261130t120005z/rto-13.0s"
    resource = {"tags": [{"value": tag.upper()}, {"value": "airflow-skytap-verified/garbage"}]}
    assert verifications(resource) == [
        (datetime(2026, 11, 30, 12, 0, 5, tzinfo=timezone.utc), 13.0)
    ]
    with pytest.raises(ValueError, match="recovery_seconds must be 0 or more, got -1"):
        verified_tag(DAY[0], -1)


def test_the_drill_picks_the_newest_application_consistent_backup_in_its_region() -> None:
    found = [
        backup("1", 1, "application-consistent"),
        backup("2", 3, "application-consistent"),
        backup("3", 5, "inconsistent"),
        backup("4", 6, "crash-consistent"),
        backup("5", 7, None),
        backup("6", 8, "application-consistent", region="US-West"),
        backup("7", 9, "application-consistent", busy=True),
    ]
    assert newest_consistent(found, "EMEA")["id"] == "2"  # type: ignore[index]
    assert newest_consistent(found, "APAC-2") is None


def test_the_newest_verified_backup_is_the_one_prune_must_keep() -> None:
    old = backup("1", 1, "application-consistent")
    old["tags"].append({"value": verified_tag(DAY[2], 10)})
    new = backup("2", 3, "application-consistent")
    new["tags"].append({"value": verified_tag(DAY[4], 12)})
    unverified = backup("3", 5, "application-consistent")
    assert newest_verified([old, unverified, new]) is new
    assert verified_at(new) == DAY[4]
    assert newest_verified([unverified]) is None
