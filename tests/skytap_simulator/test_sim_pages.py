"""A browser opening an environment's or a template's address gets its web page, as on
Skytap (the extra link points there); an API client at the same address still gets JSON."""

from __future__ import annotations

import requests

from tests.conftest import Sim

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_a_browser_gets_the_environment_page_without_credentials(sim: Sim) -> None:
    page = requests.get(f"{sim.url}/configurations/1001", headers=BROWSER, timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Environment 1001: erp-prod" in page.text
    assert sim.token not in page.text


def test_a_browser_gets_the_template_page(sim: Sim) -> None:
    page = requests.get(f"{sim.url}/templates/5001", headers=BROWSER, timeout=10)
    assert page.status_code == 200
    assert "Template 5001: base-linux" in page.text


def test_an_unknown_resource_page_is_404(sim: Sim) -> None:
    page = requests.get(f"{sim.url}/templates/999999", headers=BROWSER, timeout=10)
    assert page.status_code == 404
    assert "not found" in page.text


def test_the_api_at_the_same_address_still_needs_credentials_and_answers_json(sim: Sim) -> None:
    api = {"Accept": "application/json"}
    assert (
        requests.get(f"{sim.url}/configurations/1001", headers=api, timeout=10).status_code == 401
    )
    with_auth = requests.get(
        f"{sim.url}/configurations/1001", headers=api, auth=sim.auth, timeout=10
    )
    assert with_auth.json()["name"] == "erp-prod"
    # A client that asks for HTML but sends credentials is an API client: JSON, as before.
    both = requests.get(
        f"{sim.url}/configurations/1001", headers=BROWSER, auth=sim.auth, timeout=10
    )
    assert both.json()["id"] == "1001"
    # .json is the API's suffix, never a page.
    assert (
        requests.get(f"{sim.url}/templates/5001.json", headers=BROWSER, timeout=10).status_code
        == 401
    )


def test_a_name_with_markup_is_shown_as_text(sim: Sim) -> None:
    renamed = requests.put(
        f"{sim.url}/templates/5001",
        json={"name": "<script>alert(1)</script>"},
        auth=sim.auth,
        timeout=10,
    )
    assert renamed.status_code == 200
    page = requests.get(f"{sim.url}/templates/5001", headers=BROWSER, timeout=10)
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;" in page.text
