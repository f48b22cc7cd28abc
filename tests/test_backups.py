"""The naming and tagging convention retention and idempotency rest on (no I/O)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from airflow_provider_skytap.backups import (
    backup_name,
    check_tags,
    consistency,
    consistency_tag,
    provider_source_tags,
    recovery_point,
    run_stamp,
    source_tag,
    time_tag,
)

NIGHT = datetime(2026, 11, 24, tzinfo=timezone.utc)


def test_a_scheduled_run_is_named_and_dated_by_its_logical_date() -> None:
    stamp, when = run_stamp({"logical_date": NIGHT, "run_id": "scheduled__x"})
    assert (stamp, when) == ("20261124T000000Z", NIGHT)
    assert (
        backup_name("erp", "environment", "1001", stamp) == "erp-environment-1001-20261124T000000Z"
    )


def test_logical_dates_in_other_zones_name_the_same_instant() -> None:
    cet = NIGHT.astimezone(timezone(timedelta(hours=1)))
    assert run_stamp({"logical_date": cet})[0] == "20261124T000000Z"


def test_a_manual_run_without_logical_date_uses_a_cleaned_run_id_and_its_trigger_time() -> None:
    triggered = datetime(2026, 11, 25, 9, 30, tzinfo=timezone.utc)
    stamp, when = run_stamp(
        {
            "logical_date": None,
            "run_id": "manual__2026-11-25T09:30:00+00:00, *",
            "dag_run": SimpleNamespace(run_after=triggered),
        }
    )
    assert stamp == "manual__2026-11-25T09-30-00+00-00"
    assert "," not in stamp and "*" not in stamp  # safe in Skytap's query syntax
    assert when == triggered


def test_a_very_long_dag_id_still_gives_a_valid_unique_name() -> None:
    a, b = "d" * 250, "d" * 249 + "e"
    name_a = backup_name(a, "environment", "1001", "20261124T000000Z")
    name_b = backup_name(b, "environment", "1001", "20261124T000000Z")
    assert len(name_a) <= 255 and len(name_b) <= 255 and name_a != name_b
    assert name_a.endswith("-environment-1001-20261124T000000Z")


def test_tags_round_trip_through_a_resource() -> None:
    resource = {
        "tags": [
            {"id": "1", "value": source_tag("ERP_backup", "environment", "1001")},
            {"id": "2", "value": time_tag(NIGHT)},
            {"id": "3", "value": "nightly"},
        ]
    }
    assert provider_source_tags(resource) == {"airflow-skytap/erp_backup/environment-1001"}
    assert recovery_point(resource) == NIGHT
    assert recovery_point({"tags": [{"value": "airflow-skytap-at/garbage"}]}) is None
    assert consistency(resource) is None  # not vouched for


def test_the_consistency_tag_is_read_back_and_the_worse_of_two_counts() -> None:
    good = {"tags": [{"value": consistency_tag("application-consistent")}]}
    assert good["tags"][0]["value"] == "airflow-skytap-consistency/application-consistent"
    assert consistency(good) == "application-consistent"
    both = {"tags": [*good["tags"], {"value": "AIRFLOW-SKYTAP-CONSISTENCY/Inconsistent"}]}
    assert consistency(both) == "inconsistent"
    assert provider_source_tags(both) == set()  # it is no source tag


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ("nightly", "tags must be a list of strings, got 'nightly'"),
        (["ok", ""], "tags items must be non-empty strings, got ''"),
        (["AIRFLOW-SKYTAP/x"], "uses the prefix this provider keeps"),
        (["airflow-skytap-consistency/application-consistent"], "uses the prefix"),
    ],
)
def test_user_tags_are_checked(tags: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_tags(tags)


def test_user_tags_pass_through() -> None:
    assert check_tags(None) == [] and check_tags(("a", "b")) == ["a", "b"]
