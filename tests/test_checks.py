"""The value checks operators and the example DAGs run before anything is frozen or copied."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_skytap import checks


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["Mars-1"], "dr_regions 'Mars-1' is not a Skytap region this provider knows (APAC-2,"),
        (["EMEA", "EMEA"], "dr_regions: 'EMEA' is listed twice in ['EMEA', 'EMEA']"),
        (["US-West"], "dr_regions: 'US-West' is the region the backup is made in"),
        (
            ["EMEA west"],
            "dr_regions must be a Skytap region name such as 'US-West' or 'EMEA', got 'EMEA west'",
        ),
        ("EMEA", "dr_regions must be a list of Skytap region names, got 'EMEA'"),
        ([None], "dr_regions must be a Skytap region name such as 'US-West' or 'EMEA', got None"),
    ],
)
def test_a_bad_dr_region_is_named_with_the_field(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=r"^dr_regions") as caught:
        checks.dr_regions(value, source_region="US-West")
    assert str(caught.value).startswith(message), caught.value


def test_good_dr_regions_come_back_in_order() -> None:
    assert checks.dr_regions(["EMEA", "APAC-2"], source_region="US-West") == ["EMEA", "APAC-2"]
    assert checks.dr_regions([], source_region="US-West") == []
    # A region Skytap added after this list: the caller may allow it.
    assert checks.dr_regions(["US-Texas-M-1"], known=["US-Texas-M-1"]) == ["US-Texas-M-1"]


def test_a_conf_key_that_is_no_param_is_refused_with_the_closest_param() -> None:
    params = ["environment_id", "max_freeze_seconds", "dr_regions"]
    checks.conf_keys({"max_freeze_seconds": 30, "dr_regions": []}, params)
    checks.conf_keys(None, params)
    with pytest.raises(ValueError, match=r"^conf: 'max_freeze_second' is not a param") as caught:
        checks.conf_keys({"max_freeze_second": 30}, params)
    assert "(did you mean 'max_freeze_seconds'?)" in str(caught.value)
