"""The Airflow UI in a real browser: what a user clicks is what these tests click.

Headless Chromium (Debian's chromium and chromium-driver, selenium) on the session's Airflow
(``airflow_stack``: api-server, scheduler, dag-processor, triggerers, Celery workers) with the
simulator behind it. One browser, signed in once (the ``ui`` fixture), serves every test. Each test
keeps a screenshot of what it proves in ``tests/system/browser.ARTEFACTS``; a failed step
leaves a screenshot and the page's HTML there too (the paths are printed).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from tests.conftest import Sim
from tests.system import browser
from tests.system.airflow_stack import AirflowStack
from tests.test_inventory import seed_backups

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LINK_DAG = "skytap_ui_link"  # tests/system/dags/skytap_ui_link.py: one LiveCloneOperator


def sim_conn(sim: Sim) -> dict[str, Any]:
    return {"conn_type": "skytap", "host": sim.url, "login": sim.username, "password": sim.token}


def test_a_skytap_connection_added_in_the_ui_passes_the_test_button(
    ui: browser.Browser, airflow_stack: AirflowStack, sim: Sim
) -> None:
    from selenium.webdriver.common.by import By

    conn_id = "skytap_from_the_form"
    address = urlsplit(sim.url)
    with ui.step("fill the connection form"):
        ui.open("/connections")
        ui.find(By.XPATH, "//button[normalize-space()='Add Connection']").click()
        ui.find(By.NAME, "connection_id").send_keys(conn_id)
        kinds = ui.find(By.CSS_SELECTOR, "[role=dialog] input[role=combobox]")
        kinds.click()
        kinds.send_keys("Skytap")
        ui.find(By.XPATH, "//*[@role='option'][normalize-space()='Skytap']").click()
        # The provider's labels: what get_provider_info's ui-field-behaviour declares.
        form = ui.find(By.CSS_SELECTOR, "[role=dialog]").text
        for label in ("API URL", "Skytap user name", "API security token", "Port"):
            assert label in form
        ui.find(By.NAME, "host").send_keys(f"{address.scheme}://{address.hostname}")
        ui.find(By.NAME, "port").send_keys(str(address.port))
        ui.find(By.NAME, "login").send_keys(sim.username)
        ui.find(By.NAME, "password").send_keys(sim.token)
        ui.shot("connection-form-filled")
        ui.find(By.XPATH, "//div[@role='dialog']//button[normalize-space()='Save']").click()
    try:
        with ui.step("press Test"):
            row = ui.find(By.XPATH, f"//tr[.//*[normalize-space()='{conn_id}']]")
            row.find_element(By.CSS_SELECTOR, "button[aria-label='Test Connection']").click()
            expected = f"Connected to {sim.url} as {sim.username}"
            ui.until(lambda d: expected in ui.text() or "Failed" in ui.text(), "the test result")
            ui.shot("connection-test-passed")
            assert expected in ui.text(), ui.text()[-500:]
            assert sim.token not in ui.driver.page_source
        # The form stored what a task reads: the hook's fields, the token as the password.
        stored = airflow_stack.request("GET", f"/api/v2/connections/{conn_id}")
        assert (stored["conn_type"], stored["login"]) == ("skytap", sim.username)
        assert stored["password"] == "***"  # the REST API masks it; the stored value is real
    finally:
        airflow_stack.request("DELETE", f"/api/v2/connections/{conn_id}")


def test_the_skytap_link_on_the_task_page_opens_the_template_page(
    ui: browser.Browser, airflow_stack: AirflowStack, sim: Sim
) -> None:
    from selenium.webdriver.common.by import By

    airflow_stack.set_connection("skytap_default", sim_conn(sim))
    airflow_stack.wait_for_dag(LINK_DAG)
    run_id = airflow_stack.trigger(LINK_DAG)
    assert airflow_stack.wait_for_run(LINK_DAG, run_id, timeout=120) == "success"
    made = airflow_stack.xcom(LINK_DAG, run_id, "clone")
    page = f"{sim.url}/templates/{made['id']}"
    with ui.step("find the Skytap link"):
        # Airflow 3.3 shows a task's extra links on its Details tab.
        ui.open(f"/dags/{LINK_DAG}/runs/{quote(run_id, safe='')}/tasks/clone/details")
        link = ui.find(By.XPATH, "//a[normalize-space()='Skytap']")
        assert link.get_attribute("href") == page
        assert sim.token not in page and sim.username not in page
        ui.shot("task-details-skytap-link")
    main = ui.driver.current_window_handle
    with ui.step("open the Skytap link"):
        link.click()
        ui.until(lambda d: len(d.window_handles) > 1, "the link's new tab")
        ui.driver.switch_to.window(next(h for h in ui.driver.window_handles if h != main))
        try:
            heading = ui.find(By.TAG_NAME, "h1").text
            assert heading == f"Template {made['id']}: {made['name']}"
            assert ui.driver.current_url == page
            ui.shot("skytap-link-opened-template-page")
        finally:
            ui.driver.close()
            ui.driver.switch_to.window(main)


def test_the_inventory_page_highlights_the_newest_consistent_backup_against_the_rpo(
    ui: browser.Browser, airflow_stack: AirflowStack, sim: Sim
) -> None:
    from selenium.webdriver.common.by import By

    seed_backups(sim)
    airflow_stack.set_connection("skytap_default", sim_conn(sim))
    with ui.step("open Browse > Skytap backups"):
        ui.open("/")
        ui.find(By.XPATH, "//button[normalize-space()='Browse']").click()
        ui.find(By.XPATH, "//*[@role='menuitem'][normalize-space()='Skytap backups']").click()
        ui.until(lambda d: "/plugin/skytap-backups" in d.current_url, "the plugin page")
    with ui.step("show the inventory with an RPO of 24 hours"):
        ui.driver.switch_to.frame(ui.find(By.TAG_NAME, "iframe"))
        try:
            rpo = ui.find(By.NAME, "rpo_hours")
            rpo.clear()
            rpo.send_keys("24")
            ui.find(By.XPATH, "//button[normalize-space()='Show']").click()
            ui.find(By.ID, "summary")
            assert "1 of 2 source/region pairs miss it" in ui.find(By.ID, "summary").text
            west = ui.find(By.CSS_SELECTOR, "section[data-region='US-West']")
            emea = ui.find(By.CSS_SELECTOR, "section[data-region='EMEA']")
            assert "rpo-met" in west.get_attribute("class")
            assert "rpo-missed" in emea.get_attribute("class")
            newest = west.find_element(By.CSS_SELECTOR, "tr.newest-consistent")
            assert newest.get_attribute("data-id") == "7001"
            rows = west.find_elements(By.CSS_SELECTOR, "tr[data-id]")
            assert [r.get_attribute("data-id") for r in rows] == ["7006", "7003", "7001", "7002"]
            assert "MISSES the RPO" in emea.text and "30.0 GiB" in emea.text
            # the recovery time of the restore drill that verified 7002 (issue 17)
            headers = [h.text for h in west.find_elements(By.TAG_NAME, "th")]
            assert headers[-2:] == ["Verified by a restore drill", "Recovery time"]
            verified = west.find_element(By.CSS_SELECTOR, "tr.newest-verified")
            assert verified.get_attribute("data-id") == "7002"
            assert verified.find_element(By.CSS_SELECTOR, "td.rto").text == "3 min 32 s"
            assert "newest verified: nightly-environment-1001-7002" in west.text
            assert "no backup verified by a restore drill" in emea.text
            assert sim.token not in ui.driver.page_source
        finally:
            ui.driver.switch_to.default_content()
        ui.shot("inventory-rpo-24h")
    # The page is Airflow's to guard: without a signed-in session nothing is shown.
    anonymous = httpx.get(f"{airflow_stack.base_url}/skytap/inventory", timeout=30)
    assert anonymous.status_code == 401
    assert "7001" not in anonymous.text


def test_the_inventory_page_names_a_bad_rpo(
    ui: browser.Browser, airflow_stack: AirflowStack, sim: Sim
) -> None:
    from selenium.webdriver.common.by import By

    airflow_stack.set_connection("skytap_default", sim_conn(sim))
    with ui.step("an RPO that is not a number"):
        ui.open("/skytap/inventory?rpo_hours=soon")
        error = ui.find(By.ID, "error").text
        assert error == "rpo_hours must be a positive number, got 'soon'"
    with ui.step("a connection that does not exist"):
        ui.open("/skytap/inventory?conn_id=no_such_skytap")
        assert "no_such_skytap" in ui.find(By.ID, "error").text
