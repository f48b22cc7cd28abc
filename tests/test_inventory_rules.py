"""The inventory's rules on resources as Skytap lists them: what counts as the newest
application-consistent backup, what an RPO may be, what is never listed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_skytap import inventory
from airflow_provider_skytap.backups import consistency_tag, source_tag, time_tag

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def listed(rid: str, hours_ago: float | None, verdict: str | None, **extra: Any) -> dict:
    tags = [source_tag("nightly", "environment", "1001")]
    if hours_ago is not None:
        tags.append(time_tag(NOW - timedelta(hours=hours_ago)))
    if verdict:
        tags.append(consistency_tag(verdict))
    return {"id": rid, "name": f"b-{rid}", "region": "US-West", "tags": tags, **extra}


def test_a_template_still_copying_is_never_the_one_to_restore() -> None:
    found = inventory.build(
        [
            ("template", listed("2", 1, "application-consistent", busy=True)),
            ("template", listed("1", 5, "application-consistent", busy=False)),
        ],
        now=NOW,
        rpo=timedelta(hours=2),
    )
    (group,) = found.groups
    assert [b.id for b in group.backups] == ["2", "1"]
    assert group.newest_consistent is not None and group.newest_consistent.id == "1"
    assert found.missed == [group]  # the ready one is 5 h old against 2 h
    assert "still copying" in inventory.render_text(found)


def test_a_backup_without_a_recovery_point_is_listed_but_never_highlighted() -> None:
    found = inventory.build([("template", listed("1", None, "application-consistent"))], now=NOW)
    (group,) = found.groups
    assert group.newest_consistent is None
    assert "recovery point -, application-consistent, age unknown" in inventory.render_text(found)
    assert "no application-consistent backup" in inventory.render_text(found)


def test_without_a_consistent_backup_an_rpo_is_missed() -> None:
    found = inventory.build(
        [("template", listed("1", 1, "crash-consistent"))], now=NOW, rpo=timedelta(hours=24)
    )
    assert found.missed == found.groups


def test_what_this_provider_did_not_make_is_not_listed() -> None:
    theirs = {"id": "9", "name": "b-9", "region": "US-West", "tags": [time_tag(NOW)]}
    assert inventory.build([("template", theirs)], now=NOW).groups == []


def test_environments_and_templates_of_one_source_share_its_region() -> None:
    found = inventory.build(
        [("environment", listed("1", 2, None)), ("template", listed("2", 1, None))], now=NOW
    )
    (group,) = found.groups
    assert [(b.kind, b.id) for b in group.backups] == [("template", "2"), ("environment", "1")]


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf", 0, float("nan")])
def test_an_rpo_must_be_a_positive_number_and_the_error_names_it(value: object) -> None:
    with pytest.raises(ValueError, match=r"^rpo_hours must be a positive number, got "):
        inventory.rpo_from_hours(value)


def test_an_rpo_in_hours() -> None:
    assert inventory.rpo_from_hours("1.5") == timedelta(minutes=90)
    assert inventory.rpo_from_hours("") is None
    assert inventory.rpo_from_hours(None) is None


@pytest.mark.parametrize(
    ("age", "text"),
    [
        (timedelta(minutes=5), "5 min"),
        (timedelta(hours=3, minutes=5), "3 h 05 min"),
        (timedelta(days=2, hours=4), "2 d 4 h"),
        (timedelta(minutes=-5), "in the future"),
        (None, "unknown"),
    ],
)
def test_ages_read_as_a_person_says_them(age: timedelta | None, text: str) -> None:
    assert inventory.describe_age(age) == text


def test_names_are_shown_as_text_on_the_page() -> None:
    hostile = listed("1", 1, "application-consistent", name="<img src=x onerror=alert(1)>")
    page = inventory.render_html(inventory.build([("template", hostile)], now=NOW))
    assert "<img" not in page and "&lt;img" in page


def test_each_backup_shows_whether_a_drill_verified_it_and_its_recovery_time() -> None:
    from airflow_provider_skytap.verification import verified_tag

    drilled = listed("1", 30, "application-consistent")
    drilled["tags"] += [
        verified_tag(NOW - timedelta(hours=20), 300.0),
        verified_tag(NOW - timedelta(hours=2), 212.0),  # the latest drill counts
    ]
    found = inventory.build(
        [
            ("template", listed("3", 1, "application-consistent")),  # newer, never drilled
            ("template", drilled),
            ("template", listed("2", 50, "application-consistent")),
        ],
        now=NOW,
    )
    (group,) = found.groups
    newest = group.newest_verified
    assert newest is not None and newest.id == "1" and newest.recovery_seconds == 212.0
    assert newest.verified_at == NOW - timedelta(hours=2)
    assert group.newest_consistent is not None and group.newest_consistent.id == "3"
    text = inventory.render_text(found)
    assert "newest verified: b-1 (1 d 6 h old; verified 2026-11-30 10:00 UTC, " in text
    assert "recovered in 3 min 32 s" in text
    assert "template 3 b-3: recovery point" in text and "not verified" in text
    page = inventory.render_html(found)
    assert "<th>Verified by a restore drill</th><th>Recovery time</th>" in page
    assert (
        "class='backup newest-verified' data-id='1'" in page
        and "<td class='rto'>3 min 32 s</td>" in page
    )


def test_without_a_drill_the_group_says_so() -> None:
    found = inventory.build([("template", listed("1", 1, "application-consistent"))], now=NOW)
    assert "no backup verified by a restore drill" in inventory.render_text(found)
    assert "<td class='verified'>no</td><td class='rto'>-</td>" in inventory.render_html(found)
