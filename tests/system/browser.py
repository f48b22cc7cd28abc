"""A headless Chromium signed in to the session's Airflow UI, for the browser tests.

Debian's ``chromium`` and ``chromium-driver`` (scripts/system-deps.sh installs them as root)
driven by selenium. Every test works in named steps; a step that fails leaves a screenshot and
the page's HTML in :data:`ARTEFACTS` (printed), and a test may keep a screenshot as proof of
what it saw (``Browser.shot``). CI keeps that folder as the job's artefacts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: Where screenshots and page sources go: $SKYTAP_UI_ARTEFACTS, else test-artefacts/ui.
ARTEFACTS = Path(os.environ.get("SKYTAP_UI_ARTEFACTS") or ROOT / "test-artefacts" / "ui")
CHROMIUM = ("chromium", "chromium-browser")
DRIVER = "chromedriver"
WAIT = 30.0


def unavailable() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (it is in the test extra: make venv)"
    if not any(shutil.which(c) for c in CHROMIUM):
        return "no chromium on PATH (scripts/system-deps.sh installs it as root)"
    if not shutil.which(DRIVER):
        return "no chromedriver on PATH (Debian's chromium-driver; scripts/system-deps.sh)"
    return None


class Browser:
    """One headless Chromium window on the Airflow UI at ``base_url``.

    :param base_url: the api-server's address
    """

    def __init__(self, base_url: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = next(str(shutil.which(c)) for c in CHROMIUM if shutil.which(c))
        for arg in (
            "--headless=new",
            "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(options=options, service=Service(shutil.which(DRIVER)))
        self.driver.set_page_load_timeout(WAIT)
        self.base_url = base_url.rstrip("/")
        ARTEFACTS.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Quit Chromium and its driver."""
        self.driver.quit()

    # -- navigation ---------------------------------------------------------------------

    def open(self, path: str) -> None:
        """Open a page of the UI (``/connections``) or any absolute address."""
        self.driver.get(path if "://" in path else f"{self.base_url}{path}")

    def sign_in(self, user: str, password: str) -> None:
        """Sign in on the simple auth manager's login page, as a user does."""
        from selenium.webdriver.common.by import By

        self.open("/")
        self.find(By.NAME, "username").send_keys(user)
        self.find(By.NAME, "password").send_keys(password)
        self.find(By.CSS_SELECTOR, "button[type=submit]").click()
        self.until(lambda d: "/auth/login" not in d.current_url, "the sign-in to finish")

    def find(self, by: str, value: str, timeout: float = WAIT) -> Any:
        """The first element matching, once it is visible."""
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout).until(
            ec.visibility_of_element_located((by, value)),
            message=f"no visible element {by}={value!r} at {self.driver.current_url}",
        )

    def until(self, condition: Callable[[Any], Any], what: str, timeout: float = WAIT) -> Any:
        """Wait until ``condition(driver)`` is truthy; its value."""
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.25).until(
            condition, message=f"waited {timeout:.0f}s for {what} at {self.driver.current_url}"
        )

    def text(self) -> str:
        """The visible text of the page (or of the frame switched to)."""
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    # -- artefacts ------------------------------------------------------------------------

    def shot(self, name: str) -> Path:
        """Save a screenshot as ``<ARTEFACTS>/<name>.png`` and print where."""
        path = ARTEFACTS / f"{_safe(name)}.png"
        self.driver.save_screenshot(str(path))
        print(f"browser: screenshot {path}")
        return path

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """A named step: on failure, a screenshot and the page's HTML are kept (printed)."""
        began = time.monotonic()
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self.shot(f"FAILED-{name}")
                html = ARTEFACTS / f"FAILED-{_safe(name)}.html"
                html.write_text(self.driver.page_source, encoding="utf-8")
                print(f"browser: page source {html} (at {self.driver.current_url})")
                logs = self.driver.get_log("browser")
                if logs:
                    print("browser console:", json.dumps(logs[-10:], indent=1))
            raise
        print(f"browser: step {name!r} done in {time.monotonic() - began:.1f}s")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "page"
