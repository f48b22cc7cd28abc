"""The naming and tagging convention retention and idempotency rest on (no I/O)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_skytap.backups import (
    backup_name,
    check_tags,
    consistency,
    consistency_tag,
    is_from_source,
    legacy_source_tag,
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
    assert provider_source_tags(resource) == {
        source_tag("ERP_backup", "environment", "1001").lower()
    }
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
        # Skytap strips surrounding whitespace on store: this would be the verdict tag itself.
        (
            [" airflow-skytap-consistency/application-consistent"],
            "tags item must not start or end with whitespace, "
            "got ' airflow-skytap-consistency/application-consistent'",
        ),
        (["airflow-skytap-at/20991231T000000Z\n"], "tags item must not start or end with"),
        (["nightly\tbackup"], "tags item must not contain control characters"),
        (["\u200bairflow-skytap/x"], "tags item must not contain invisible format characters"),
        (["\uff41irflow-skytap/x"], "uses the prefix"),  # a fullwidth 'a'
        # a user tag must not pose as a restore drill's proof either
        (["airflow-skytap-verified/20991231t000000z/rto-1.0s"], "uses the prefix"),
        # nor as the freeze window a copy was requested in
        (["airflow-skytap-window/0123456789ab"], "uses the prefix"),
    ],
)
def test_user_tags_are_checked(tags: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_tags(tags)


def test_user_tags_pass_through() -> None:
    assert check_tags(None) == [] and check_tags(("a", "b")) == ["a", "b"]


def made_by(dag_id: str, tag: str, *, env: str = "1001", name: str | None = None) -> dict[str, Any]:
    """A template as a backup of ``dag_id`` leaves it: its default name and the given tag."""
    name = name or backup_name(dag_id, "environment", env, "20261124T000000Z")
    return {"id": "7", "name": name, "tags": [{"id": "1", "value": tag}]}


def test_the_source_tag_keeps_the_dag_id_as_written() -> None:
    tag = source_tag("ERP_Backup", "environment", "1001")
    assert tag.startswith("airflow-skytap/ERP_Backup/environment-1001/")
    # Skytap compares tags without regard to case: they must differ even lower-cased.
    assert tag.lower() != source_tag("erp_backup", "environment", "1001").lower()


def test_dags_whose_ids_differ_only_in_case_do_not_see_each_others_backups() -> None:
    upper = made_by("ERP_Backup", source_tag("ERP_Backup", "environment", "1001"))
    lower = made_by("erp_backup", source_tag("erp_backup", "environment", "1001"))
    assert is_from_source(upper, "ERP_Backup", "environment", "1001")
    assert is_from_source(lower, "erp_backup", "environment", "1001")
    assert not is_from_source(upper, "erp_backup", "environment", "1001")
    assert not is_from_source(lower, "ERP_Backup", "environment", "1001")
    # Skytap may hand the tag back in another case: still this DAG's, still not the other's.
    folded = made_by("ERP_Backup", source_tag("ERP_Backup", "environment", "1001").upper())
    assert is_from_source(folded, "ERP_Backup", "environment", "1001")
    assert not is_from_source(folded, "erp_backup", "environment", "1001")
    # Another source of the same DAG is another backup series.
    assert not is_from_source(upper, "ERP_Backup", "environment", "1002")
    assert not is_from_source(upper, "ERP_Backup", "template", "1001")


def test_a_backup_made_under_the_old_tag_still_belongs_to_its_dag() -> None:
    old = legacy_source_tag("erp_backup", "environment", "1001")
    assert old == "airflow-skytap/erp_backup/environment-1001"  # what earlier versions wrote
    assert old == legacy_source_tag("ERP_Backup", "environment", "1001")  # the ambiguity
    # The old tag cannot tell the two DAGs apart; the default name, compared with case, can.
    lower = made_by("erp_backup", old)
    upper = made_by("ERP_Backup", old)
    assert is_from_source(lower, "erp_backup", "environment", "1001")
    assert not is_from_source(lower, "ERP_Backup", "environment", "1001")
    assert is_from_source(upper, "ERP_Backup", "environment", "1001")
    assert not is_from_source(upper, "erp_backup", "environment", "1001")
    # A DR copy keeps its source template's name; a long DAG id's name is shortened with a hash.
    long_id = "Nightly_" + "x" * 240
    shortened = made_by(long_id, legacy_source_tag(long_id, "environment", "1001"))
    assert len(shortened["name"]) <= 255
    assert is_from_source(shortened, long_id, "environment", "1001")
    assert not is_from_source(shortened, long_id.lower(), "environment", "1001")


def test_an_old_tag_under_a_name_that_proves_nothing_is_nobodys() -> None:
    renamed = made_by(
        "erp_backup",
        legacy_source_tag("erp_backup", "environment", "1001"),
        name="before the upgrade",
    )
    assert not is_from_source(renamed, "erp_backup", "environment", "1001")
    assert not is_from_source(renamed, "ERP_Backup", "environment", "1001")
    # A name of another source does not prove this one.
    other = made_by(
        "erp_backup", legacy_source_tag("erp_backup", "environment", "1001"), env="1002"
    )
    assert not is_from_source(other, "erp_backup", "environment", "1001")


def test_a_current_tag_decides_and_an_old_one_beside_it_is_not_looked_at() -> None:
    theirs = made_by("erp_backup", source_tag("ERP_Backup", "environment", "1001"))
    theirs["tags"].append(
        {"id": "2", "value": legacy_source_tag("erp_backup", "environment", "1001")}
    )
    assert not is_from_source(theirs, "erp_backup", "environment", "1001")
    assert is_from_source(theirs, "ERP_Backup", "environment", "1001")
    assert not is_from_source({"name": "x", "tags": []}, "erp_backup", "environment", "1001")


def test_a_very_long_dag_id_gives_a_source_tag_within_skytaps_limit_and_still_its_own() -> None:
    a, b = "d" * 250, "d" * 249 + "D"
    tag_a = source_tag(a, "environment", "1001")
    tag_b = source_tag(b, "environment", "1001")
    assert len(tag_a) <= 255 and len(tag_b) <= 255
    assert tag_a.lower() != tag_b.lower()
    assert is_from_source(made_by(a, tag_a), a, "environment", "1001")
    assert not is_from_source(made_by(a, tag_a), b, "environment", "1001")


def test_tag_source_reads_both_shapes_and_nothing_else() -> None:
    from airflow_provider_skytap.backups import legacy_source_tag, source_tag, tag_source

    assert tag_source(source_tag("ERP_Backup", "environment", "1001")) == (
        "ERP_Backup",
        "environment-1001",
    )
    assert tag_source(legacy_source_tag("ERP_Backup", "template", "7")) == (
        "erp_backup",
        "template-7",
    )
    assert tag_source("airflow-skytap/dag/not-a-source") is None
    assert tag_source("someone-else/dag/environment-1") is None
