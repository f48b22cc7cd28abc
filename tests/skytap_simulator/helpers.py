"""Helpers for the simulator's contract tests (plain HTTP with requests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests

from skytap_simulator.seed import default_seed

T = TypeVar("T")


class Api:
    """A requests session bound to a simulator URL and one user's credentials."""

    def __init__(self, url: str, auth: tuple[str, str] | None) -> None:
        self.url = url
        self.session = requests.Session()
        if auth is not None:
            self.session.auth = auth
        self.session.headers["Accept"] = "application/json"

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Send one request; ``path`` starts with ``/``."""
        kw.setdefault("timeout", 10)
        return self.session.request(method, self.url + path, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.request("POST", path, json=body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.request("PUT", path, json=body, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON of a 200 answer (fails the test otherwise)."""
        resp = self.request(method, path, json=body)
        assert resp.status_code == 200, (resp.status_code, resp.text)
        return resp.json()


def wait_until(check: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def env_ready(api: Api, env_id: str) -> dict[str, Any] | None:
    """The environment once it is no longer busy."""
    env: dict[str, Any] = api.ok("GET", f"/v2/configurations/{env_id}")
    return env if env["runstate"] != "busy" else None


def template_ready(api: Api, template_id: str) -> dict[str, Any] | None:
    """The template once it is no longer busy."""
    tpl: dict[str, Any] = api.ok("GET", f"/v2/templates/{template_id}")
    return tpl if tpl["busy"] is False else None


def seed_with(**extra: list[dict[str, Any]]) -> dict[str, Any]:
    """The default seed plus extra environments and/or templates."""
    seed = default_seed()
    for key, items in extra.items():
        seed[key] = seed.get(key, []) + items
    return seed


def state_item(state: dict[str, Any], collection: str, rid: str) -> dict[str, Any]:
    """One resource from ``GET /_sim/state``."""
    item: dict[str, Any] = next(r for r in state[collection] if r["id"] == rid)
    return item
