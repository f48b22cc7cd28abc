"""The extra link's address: a resource's page in Skytap's UI, never anything else."""

from __future__ import annotations

import pytest

from airflow_provider_skytap.hooks.api import page_url


@pytest.mark.parametrize(
    ("recorded", "page"),
    [
        (
            "https://cloud.skytap.com/configurations/123",
            "https://cloud.skytap.com/configurations/123",
        ),
        ("https://cloud.skytap.com/templates/456", "https://cloud.skytap.com/templates/456"),
        # An API address (v2, .json) becomes the page at the same place.
        (
            "https://cloud.skytap.com/v2/templates/456.json",
            "https://cloud.skytap.com/templates/456",
        ),
        ("http://127.0.0.1:8123/configurations/1001", "http://127.0.0.1:8123/configurations/1001"),
        ("http://[::1]:8123/templates/7", "http://[::1]:8123/templates/7"),
        # A connection that gives port 443 (for Airflow 3.3.2's Test button) links without it.
        ("https://cloud.skytap.com:443/templates/8", "https://cloud.skytap.com/templates/8"),
    ],
)
def test_the_link_opens_the_resource_page(recorded: str, page: str) -> None:
    assert page_url(recorded) == page


def test_a_user_or_token_in_the_address_never_reaches_the_link() -> None:
    link = page_url("https://admin:s3cret-token@cloud.skytap.com/templates/9?token=s3cret#x")
    assert link == "https://cloud.skytap.com/templates/9"
    assert "s3cret" not in link


@pytest.mark.parametrize(
    "recorded",
    [
        None,
        42,
        "",
        "javascript:alert(1)//cloud.skytap.com/templates/1",
        "file:///etc/passwd",
        "https://cloud.skytap.com/templates/1/../../users",
        "https://cloud.skytap.com/users/1",
        "https://cloud.skytap.com/templates/abc",
        "https:///templates/1",
    ],
)
def test_anything_but_a_resource_page_gives_no_link(recorded: object) -> None:
    assert page_url(recorded) == ""
